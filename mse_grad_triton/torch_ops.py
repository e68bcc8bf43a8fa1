"""PyTorch integration: custom ops that ``torch.compile`` traces, an autograd-ready
``mse_loss``/``MSELoss``, and a switch that makes stock PyTorch's ``aten::mse_loss_backward``
run this kernel.

Ops (namespace ``mse_grad_triton``), each with a fake (meta) kernel and registered autograd:

- ``mse_loss(Tensor input, Tensor target, int reduction) -> Tensor``: ATen's forward; its
  backward calls the two ops below;
- ``mse_loss_backward(Tensor grad_output, Tensor self, Tensor target, int reduction)``: the
  kernel; differentiable again (it is linear in ``grad_output`` and in ``self - target``);
- ``mse_loss_backward_pair(...) -> (Tensor, Tensor)``: both gradients in one kernel pass.
"""

import contextlib
import threading
import warnings
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import launcher, validation

_SCHEMA_ARGS = "(Tensor grad_output, Tensor self, Tensor target, int reduction)"


# --- the backward ops ----------------------------------------------------------------------

@torch.library.custom_op("mse_grad_triton::mse_loss_backward", mutates_args=(),
                         schema=_SCHEMA_ARGS + " -> Tensor")
def mse_loss_backward_op(grad_output: Tensor, self: Tensor, target: Tensor,
                         reduction: int) -> Tensor:
    """``mse_loss_backward`` as a PyTorch op (native op below a tuned crossover, see
    ``backend="auto"``)."""
    return launcher.mse_loss_backward(grad_output, self, target, reduction)


@torch.library.custom_op("mse_grad_triton::mse_loss_backward_pair", mutates_args=(),
                         schema=_SCHEMA_ARGS + " -> (Tensor, Tensor)")
def mse_loss_backward_pair_op(grad_output: Tensor, self: Tensor, target: Tensor,
                              reduction: int) -> Tuple[Tensor, Tensor]:
    """``mse_loss_backward_pair`` as a PyTorch op: the gradients for self and target."""
    return launcher.mse_loss_backward_pair(grad_output, self, target, reduction)


@mse_loss_backward_op.register_fake
def _(grad_output, self, target, reduction):
    return self.new_empty(torch.broadcast_shapes(grad_output.shape, self.shape, target.shape))


@mse_loss_backward_pair_op.register_fake
def _(grad_output, self, target, reduction):
    shape = torch.broadcast_shapes(grad_output.shape, self.shape, target.shape)
    return self.new_empty(shape), target.new_empty(shape)


def _save_operands(ctx, inputs, output):
    grad_output, self, target, reduction = inputs
    ctx.save_for_backward(grad_output, self, target)
    ctx.reduction = reduction


def _backward_of_backward(ctx, upstream: Optional[Tensor]):
    """Gradients of ``out = grad_output * (self - target) * scale`` given d(loss)/d(out),
    each summed back to its operand's shape (the op broadcasts)."""
    grad_output, self, target = ctx.saved_tensors
    if upstream is None:
        return None, None, None, None
    scale = 2.0 / self.numel() if ctx.reduction == 1 else 2.0
    needs = ctx.needs_input_grad
    d_grad = d_self = d_target = None
    if needs[0]:
        d_grad = (upstream * (self - target) * scale).sum_to_size(grad_output.shape)
        d_grad = d_grad.to(grad_output.dtype)
    if needs[1] or needs[2]:
        through = upstream * grad_output * scale
        if needs[1]:
            d_self = through.sum_to_size(self.shape).to(self.dtype)
        if needs[2]:
            d_target = (-through).sum_to_size(target.shape).to(target.dtype)
    return d_grad, d_self, d_target, None


def _backward_of_pair(ctx, upstream_self, upstream_target):
    # grad_target = -grad_self: both outputs feed one upstream gradient.
    if upstream_target is not None:
        upstream_self = -upstream_target if upstream_self is None \
            else upstream_self - upstream_target
    return _backward_of_backward(ctx, upstream_self)


mse_loss_backward_op.register_autograd(_backward_of_backward, setup_context=_save_operands)
mse_loss_backward_pair_op.register_autograd(_backward_of_pair, setup_context=_save_operands)


# --- the loss -----------------------------------------------------------------------------

@torch.library.custom_op("mse_grad_triton::mse_loss", mutates_args=(),
                         schema="(Tensor input, Tensor target, int reduction) -> Tensor")
def mse_loss_op(input: Tensor, target: Tensor, reduction: int) -> Tensor:
    """ATen's MSE loss forward; the backward is this package's kernel."""
    return torch.ops.aten.mse_loss(input, target, reduction)


@mse_loss_op.register_fake
def _(input, target, reduction):
    return torch.ops.aten.mse_loss(input, target, reduction)


def _save_loss_operands(ctx, inputs, output):
    input, target, reduction = inputs
    ctx.save_for_backward(input, target)
    ctx.reduction = reduction


def _loss_backward(ctx, grad_output):
    input, target = ctx.saved_tensors
    needs_input, needs_target = ctx.needs_input_grad[:2]
    ops = torch.ops.mse_grad_triton
    if needs_input and needs_target:  # one pass writes both
        grad_input, grad_target = ops.mse_loss_backward_pair(grad_output, input, target,
                                                             ctx.reduction)
        return grad_input, grad_target, None
    if needs_input:
        return ops.mse_loss_backward(grad_output, input, target, ctx.reduction), None, None
    if needs_target:  # derivatives.yaml: mse_loss_backward(grad, target, self)
        return None, ops.mse_loss_backward(grad_output, target, input, ctx.reduction), None
    return None, None, None


mse_loss_op.register_autograd(_loss_backward, setup_context=_save_loss_operands)


def mse_loss(input: Tensor, target: Tensor, reduction: Union[int, str] = "mean") -> Tensor:
    """``torch.nn.functional.mse_loss`` whose backward runs this package's kernel.

    The value is PyTorch's. As ``F.mse_loss``, input and target are broadcast (expanded views,
    with PyTorch's warning when their sizes differ) and the gradients are summed back to each
    one's shape; ``mean`` divides by the broadcast size. When both require grad, one kernel
    pass writes both gradients.
    """
    code = validation.reduction_code(reduction)
    if input.shape != target.shape:
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results due "
                      "to broadcasting. Please ensure they have the same size.", stacklevel=2)
    input, target = torch.broadcast_tensors(input, target)
    return torch.ops.mse_grad_triton.mse_loss(input, target, code)


class MSELoss(torch.nn.MSELoss):
    """Drop-in ``torch.nn.MSELoss`` whose backward runs this package's kernel."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, self.reduction)


# --- making stock PyTorch use the kernel --------------------------------------------------

DISPATCH_KEYS = {"npu": "PrivateUse1", "cuda": "CUDA", "cpu": "CPU"}
_override: Optional[torch.library.Library] = None
_override_devices: Tuple[str, ...] = ()
_override_lock = threading.RLock()


def _aten_mse_loss_backward(grad_output, self, target, reduction):
    return launcher.mse_loss_backward(grad_output, self, target, reduction, backend="triton")


def _aten_mse_loss_backward_out(grad_output, self, target, reduction, *, grad_input):
    return launcher.mse_loss_backward(grad_output, self, target, reduction, out=grad_input,
                                      backend="triton")


def enable(devices: Sequence[str] = ("npu", "cuda")) -> None:
    """Run this kernel as ``aten::mse_loss_backward`` (and its ``out`` variant) for tensors
    on ``devices`` (``"npu"``, ``"cuda"``; ``"cpu"`` only on request: there it runs in Triton's
    interpreter), so that unmodified code — ``nn.MSELoss()(x, y).backward()`` — uses it.
    Calling it again replaces the previous set of devices."""
    unknown = [d for d in devices if d not in DISPATCH_KEYS]
    if unknown or isinstance(devices, str):
        raise ValueError(f"devices must be a sequence of {', '.join(DISPATCH_KEYS)}; "
                         f"got {devices!r}")
    global _override, _override_devices
    with _override_lock:
        disable()
        library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():  # "Overriding a previously registered kernel"
            warnings.simplefilter("ignore", UserWarning)
            for device in devices:
                library.impl("mse_loss_backward", _aten_mse_loss_backward,
                             DISPATCH_KEYS[device])
                library.impl("mse_loss_backward.grad_input", _aten_mse_loss_backward_out,
                             DISPATCH_KEYS[device])
        _override, _override_devices = library, tuple(devices)


def disable() -> None:
    """Give ``aten::mse_loss_backward`` back to PyTorch's own kernels."""
    global _override, _override_devices
    with _override_lock:
        if _override is not None:
            _override._destroy()
        _override, _override_devices = None, ()


def enabled_devices() -> Tuple[str, ...]:
    """The devices on which ``aten::mse_loss_backward`` currently runs this kernel."""
    return _override_devices


@contextlib.contextmanager
def enabled(devices: Sequence[str] = ("npu", "cuda")) -> Iterator[None]:
    """``enable(devices)`` for the ``with`` block, then whatever was enabled before."""
    with _override_lock:
        previous = _override_devices
        enable(devices)
    try:
        yield
    finally:
        with _override_lock:
            if previous:
                enable(previous)
            else:
                disable()
