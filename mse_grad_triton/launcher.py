"""The launcher: ``aclnnMseLossBackward``'s semantics on top of the one Triton kernel.

Data path of a call: check the arguments -> broadcast shape -> allocate the output (the only
tensor operation) -> describe the four operands as coalesced rows (``layout``) -> pick a
configuration (``configs``) -> one kernel launch. Inputs are read in place through their
strides: no copies, no casts, no host synchronisation.
"""

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from . import backends, configs, layout, validation
from .kernels import MAX_OUTER_DIMS

_INT32_LIMIT = 2**31


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors: arguments, constexprs and grid."""

    layout: layout.Layout
    config: configs.KernelConfig
    num_programs: int
    scalar_args: Tuple         # the kernel's arguments after the four pointers, in order
    constexprs: dict

    @property
    def path(self) -> str:
        return self.layout.path


def mse_loss_backward(
    grad_output: torch.Tensor,
    self: torch.Tensor,
    target: torch.Tensor,
    reduction: Union[int, str] = "mean",
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Gradient of ``mse_loss(self, target, reduction)`` with respect to ``self``.

    ``grad_output * (self - target) * 2 / self.numel()`` for ``mean`` (the element count of
    ``self``, not of the broadcast result), ``grad_output * (self - target) * 2`` for ``none``
    and ``sum``. Argument order as ``aclnnMseLossBackward`` and ``aten::mse_loss_backward``.

    Args:
        grad_output: gradient of the loss; broadcasts with ``self`` and ``target`` (0-d for
            ``mean``/``sum`` in autograd).
        self: the loss's input. float16, bfloat16, float32 (float64 on CPU and CUDA).
        target: the loss's target.
        reduction: ``0``/``"none"``, ``1``/``"mean"`` or ``2``/``"sum"``.
        out: optional result tensor of the broadcast shape, any supported float dtype, any
            strides; may be ``self`` itself. Written in place and returned.

    Returns:
        ``out``, or a new contiguous tensor of the broadcast shape with ``self``'s dtype.
        Inputs of different float dtypes are each read in their own dtype; arithmetic is
        fp32 (fp64 if a float64 tensor takes part), rounded once to the result's dtype.

    Raises:
        TypeError, ValueError: naming the offending argument, before anything is written.
    """
    code = validation.reduction_code(reduction)
    inputs = {"grad_output": grad_output, "self": self, "target": target}
    validation.check_inputs(inputs, out)
    shape = layout.broadcast_shapes([t.shape for t in inputs.values()], list(inputs))
    backend = backends.backend_for(self.device)
    validation.check_fp64_support(inputs, out, backend.name, backend.supports_fp64)
    if out is None:
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
    else:
        validation.check_out(out, shape, inputs)
    if out.numel() == 0:
        return out

    plan = plan_launch(grad_output, self, target, out, code, backend)
    with backend.device_guard():
        backend.kernel[(plan.num_programs,)](
            grad_output, self, target, out, *plan.scalar_args,
            **plan.constexprs, **backend.launch_options(plan.config),
        )
    return out


def plan_launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
                out: torch.Tensor, reduction_code: int, backend: backends.Backend,
                config: Optional[configs.KernelConfig] = None) -> LaunchPlan:
    """Layout, configuration, grid and kernel arguments for validated, non-empty operands.

    ``config`` overrides ``select_config`` (the tuner and the Ascend check try candidates).
    Only metadata is read, so meta tensors describe a launch as well as real ones.
    """
    operands = (grad_output, self, target, out)
    shape = tuple(out.shape)
    rows = layout.coalesce(shape, [layout.broadcast_strides(tuple(t.shape), t.stride(), shape)
                                   for t in operands])
    if config is None:
        loaded = operands[1:3] if rows.scalar_grad else operands[:3]
        config = configs.select_config(backend.name, [t.element_size() for t in loaded],
                                       out.element_size(), rows.row_length, rows.num_rows,
                                       backend.num_units)
    block = config.block_size
    tiles_per_row = -(-rows.row_length // block)
    num_tiles = rows.num_rows * tiles_per_row
    num_programs = max(1, min(num_tiles, backend.num_units * config.programs_per_unit))

    numel_self = self.numel()
    scale = 2.0 / numel_self if reduction_code == 1 else 2.0
    outer = []
    for d in range(1, MAX_OUTER_DIMS + 1):  # unused dimensions: size 1, stride 0
        if d <= rows.num_outer_dims:
            outer += [rows.sizes[d], *(s[d] for s in rows.strides)]
        else:
            outer += [1, 0, 0, 0, 0]
    scalar_args = (scale, numel_self if reduction_code == 1 else 1, rows.row_length,
                   tiles_per_row, num_tiles, *rows.inner_strides, *outer)
    constexprs = dict(
        NUM_OUTER_DIMS=rows.num_outer_dims,
        SCALAR_GRAD=rows.scalar_grad,
        WIDE_LANES=max(abs(s) for s in rows.inner_strides) * (block - 1) >= _INT32_LIMIT,
        SKIP_PADDING=backends.TRITON_HAS_CARE_PADDING,
        COMPUTE_FP64=any(t.dtype == torch.float64 for t in operands),
        BLOCK_SIZE=block,
    )
    return LaunchPlan(rows, config, num_programs, scalar_args, constexprs)
