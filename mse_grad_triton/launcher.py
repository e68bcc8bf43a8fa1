"""The launcher: ``aclnnMseLossBackward``'s semantics on top of the one Triton kernel.

Data path of a call: check the arguments -> broadcast shape -> choose the backend (the kernel,
or the native op below a tuned crossover) -> allocate the output (the only tensor operation)
-> describe the four operands as coalesced rows (``layout``) -> pick a configuration (tuned
table or default, ``configs``) -> one kernel launch. Inputs are read in place through their
strides: no copies, no casts, no host synchronisation.
"""

import math
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple, Union

import torch

from . import backends, configs, layout, tables, validation
from .kernels import MAX_OUTER_DIMS
from .layout import Layout

_INT32_LIMIT = 2**31
BACKENDS = ("auto", "triton", "native")
_DTYPE_NAMES = {dtype: str(dtype).replace("torch.", "") for dtype in validation.SUPPORTED_DTYPES}


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors: arguments, constexprs and grid."""

    layout: Layout
    config: configs.KernelConfig
    num_programs: int
    scalar_args: Tuple         # the kernel's arguments after the five pointers, in order
    constexprs: dict

    @property
    def path(self) -> str:
        return self.layout.path


@dataclass(frozen=True)
class Explanation:
    """What ``mse_loss_backward`` would do with these arguments (see ``explain``)."""

    backend: str                            # "triton" or "native"
    reason: str                             # why that backend
    device: str                             # normalised device name (names tuned tables)
    shape: Tuple[int, ...]                  # the result's (broadcast) shape
    path: Optional[str] = None              # flat, flat_scalar_grad or strided
    layout: Optional[Layout] = None         # coalesced rows and per-operand strides
    config: Optional[configs.KernelConfig] = None
    config_source: Optional[str] = None     # "default", or the tuned table file and entry
    grid: Optional[Tuple[int]] = None


@dataclass(frozen=True)
class _Call:
    """A validated call: reduction code, result shape, device backend, and the decision."""

    reduction: int
    shape: Tuple[int, ...]
    device: backends.Backend
    native: bool
    reason: str


def mse_loss_backward(
    grad_output: torch.Tensor,
    self: torch.Tensor,
    target: torch.Tensor,
    reduction: Union[int, str] = "mean",
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
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
        backend: ``"triton"`` always runs this kernel; ``"native"`` runs the native op
            (aclnnMseLossBackward on NPU, ATen elsewhere) after the same checks; ``"auto"``
            runs the native op only below the size a tuned table for this device and dtype
            records as faster end to end, this kernel otherwise.

    Returns:
        ``out``, or a new contiguous tensor of the broadcast shape with ``self``'s dtype.
        Inputs of different float dtypes are each read in their own dtype; arithmetic is
        fp32 (fp64 if a float64 tensor takes part), rounded once to the result's dtype.

    Raises:
        TypeError, ValueError: naming the offending argument, before anything is written.
    """
    call = _validate(grad_output, self, target, reduction, out, backend)
    if call.native:
        if out is None:
            return torch.ops.aten.mse_loss_backward(grad_output, self, target, call.reduction)
        return torch.ops.aten.mse_loss_backward.grad_input(grad_output, self, target,
                                                           call.reduction, grad_input=out)
    if out is None:
        out = torch.empty(call.shape, dtype=self.dtype, device=self.device)
    if out.numel() == 0:
        return out
    launch(grad_output, self, target, out, call.reduction, call.device)
    return out


def mse_loss_backward_pair(
    grad_output: torch.Tensor,
    self: torch.Tensor,
    target: torch.Tensor,
    reduction: Union[int, str] = "mean",
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients with respect to ``self`` and to ``target`` in one kernel pass.

    Returns ``(grad_self, grad_target)`` with ``grad_target == -grad_self``, each of the
    broadcast shape in its tensor's dtype. That is PyTorch's gradient for ``target`` when both
    have as many elements (as after ``F.mse_loss``'s broadcast); for ``mean`` they must.
    Arguments and checks as ``mse_loss_backward``.
    """
    call = _validate(grad_output, self, target, reduction, None, backend)
    if call.reduction == 1 and self.numel() != target.numel():
        raise ValueError(f"self ({self.numel()} elements) and target ({target.numel()}) must "
                         "have as many elements for mean: each one's gradient divides by it")
    if call.native:
        grad_self = torch.ops.aten.mse_loss_backward(grad_output, self, target, call.reduction)
        return grad_self, torch.ops.aten.neg(grad_self).to(target.dtype)
    grad_self = torch.empty(call.shape, dtype=self.dtype, device=self.device)
    grad_target = torch.empty(call.shape, dtype=target.dtype, device=self.device)
    if grad_self.numel():
        launch(grad_output, self, target, grad_self, call.reduction, call.device,
               negated_out=grad_target)
    return grad_self, grad_target


# Launch plans by operand geometry: a training loop calls with the same shapes, strides and
# dtypes every step, so planning runs once per geometry (bounded; dict access is atomic).
_plans: Dict[tuple, LaunchPlan] = {}
_MAX_PLANS = 1024


def launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
           out: torch.Tensor, reduction_code: int, backend: backends.Backend,
           config: Optional[configs.KernelConfig] = None,
           negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """Plan (or reuse the plan of an identical geometry) and launch the kernel on validated,
    non-empty operands (``config`` as in ``plan_launch``); ``negated_out`` (same shape and
    strides as ``out``) also receives ``-out``. Returns the plan."""
    operands = (grad_output, self, target, out, negated_out)
    key = (backend.device_name, backend.name, reduction_code, config, tables.generation,
           *((t.shape, t.stride(), t.dtype) if t is not None else None for t in operands))
    plan = _plans.get(key)
    if plan is None:
        plan = plan_launch(grad_output, self, target, out, reduction_code, backend, config,
                           negated_out)
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = plan
    with backend.device_guard():
        backend.kernel[(plan.num_programs,)](
            grad_output, self, target, out, out if negated_out is None else negated_out,
            *plan.scalar_args, **plan.constexprs, **backend.launch_options(plan.config),
        )
    return plan


def explain(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
            reduction: Union[int, str] = "mean", out: Optional[torch.Tensor] = None,
            backend: str = "auto") -> Explanation:
    """What ``mse_loss_backward`` would do with these arguments, without running anything:
    backend and why, launch path, coalesced layout, configuration and where it came from, grid.
    Raises what the call would raise."""
    call = _validate(grad_output, self, target, reduction, out, backend)
    summary = dict(backend="native" if call.native else "triton", reason=call.reason,
                   device=call.device.device_name, shape=call.shape)
    if call.native or 0 in call.shape:
        return Explanation(**summary)
    if out is None:  # plan on a stand-in: same shape, dtype and (contiguous) strides
        out = torch.empty(call.shape, dtype=self.dtype, device="meta")
    plan = plan_launch(grad_output, self, target, out, call.reduction, call.device)
    return Explanation(**summary, path=plan.path, layout=plan.layout, config=plan.config,
                       config_source=plan.config.source, grid=(plan.num_programs,))


def _validate(grad_output, self, target, reduction, out, backend) -> _Call:
    """All argument checks, then the backend decision; raises before anything runs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; "
                         f"got {backend!r}")
    code = validation.reduction_code(reduction)
    inputs = {"grad_output": grad_output, "self": self, "target": target}
    validation.check_inputs(inputs, out)
    shape = layout.broadcast_shapes([t.shape for t in inputs.values()], list(inputs))
    device = backends.backend_for(self.device)
    if backend != "native":
        validation.check_fp64_support(inputs, out, device.name, device.supports_fp64)
    if out is not None:
        validation.check_out(out, shape, inputs)
    if backend != "auto":
        return _Call(code, shape, device, backend == "native", f"backend={backend!r}")
    table = tables.table_for(device.device_name)
    threshold = table.native_below.get(_DTYPE_NAMES[self.dtype], 0) if table else 0
    numel = math.prod(shape)
    if numel < threshold:
        return _Call(code, shape, device, True, f"{numel} elements < {threshold}, below which "
                     f"the native op is faster end to end ({table.file})")
    reason = (f"{numel} elements >= the native op's crossover {threshold} ({table.file})"
              if threshold else "no tuned crossover for this device and dtype")
    return _Call(code, shape, device, False, reason)


def plan_launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
                out: torch.Tensor, reduction_code: int, backend: backends.Backend,
                config: Optional[configs.KernelConfig] = None,
                negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """Layout, configuration, grid and kernel arguments for validated, non-empty operands.

    ``config`` overrides the tuned table and the defaults (the tuner and the Ascend check try
    candidates); a ``negated_out`` also receives ``-out``. Only metadata is read, so meta
    tensors describe a launch as well as real ones.
    """
    operands = (grad_output, self, target, out)
    shape = tuple(out.shape)
    rows = layout.coalesce(shape, [layout.broadcast_strides(tuple(t.shape), t.stride(), shape)
                                   for t in operands])
    if config is None:
        table = tables.table_for(backend.device_name)
        tuned = table.config_for(_DTYPE_NAMES[self.dtype], rows.path,
                                 out.numel()) if table else None
        loaded = operands[1:3] if rows.scalar_grad else operands[:3]
        stored = (out,) if negated_out is None else (out, negated_out)
        config = configs.select_config(backend.name, [t.element_size() for t in loaded],
                                       [t.element_size() for t in stored], rows.row_length,
                                       rows.num_rows, backend.num_units, tuned)
    # A tile never spans more than one row: short rows get a smaller (power-of-two) tile.
    if rows.row_length < config.block_size:
        config = replace(config, block_size=1 << (rows.row_length - 1).bit_length())
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
        WRITE_NEGATED=negated_out is not None,
        WIDE_LANES=max(abs(s) for s in rows.inner_strides) * (block - 1) >= _INT32_LIMIT,
        SKIP_PADDING=backends.TRITON_HAS_CARE_PADDING,
        COMPUTE_FP64=any(t.dtype == torch.float64 for t in operands),
        BLOCK_SIZE=block,
    )
    return LaunchPlan(rows, config, num_programs, scalar_args, constexprs)
