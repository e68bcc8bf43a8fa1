"""PyTorch integration: an autograd-ready ``mse_loss``/``MSELoss``, custom ops that
``torch.compile`` and ``torch.export`` trace, and a switch that makes stock PyTorch's
``aten::mse_loss_backward`` run this kernel.

``mse_loss`` has two paths with the same results (tested against each other):
- eager: a ``torch.autograd.Function`` whose forward is ATen's and whose backward runs the
  kernel; under ``torch.func`` transforms (grad, vmap, jacrev, hessian, jvp) and forward-mode
  AD a ``setup_context`` twin with a vmap rule and a jvp, whose backward uses ATen's
  composable op instead, so every transform works;
- traced (``torch.compile``, export): the custom ops below.

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
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import backends, cpp_override, launcher, validation
from .reduction import gradient_scale, parse_reduction

_SCHEMA_ARGS = "(Tensor grad_output, Tensor self, Tensor target, int reduction)"


# --- the backward ops ----------------------------------------------------------------------

@torch.library.custom_op("mse_grad_triton::mse_loss_backward", mutates_args=(),
                         schema=_SCHEMA_ARGS + " -> Tensor")
def mse_loss_backward_op(grad_output: Tensor, self: Tensor, target: Tensor,
                         reduction: int) -> Tensor:
    """``mse_loss_backward`` as a PyTorch op (native op below a tuned crossover, see
    ``backend="auto"``; ATen's op for operands the kernel does not read, such as an integer
    target, which ``F.mse_loss`` promotes)."""
    if not _kernel_reads(grad_output, self, target):
        return torch.ops.aten.mse_loss_backward(grad_output, self, target, reduction)
    return launcher.mse_loss_backward(grad_output, self, target, reduction)


_KERNEL_DTYPES = frozenset(validation.SUPPORTED_DTYPES)


def _kernel_reads(*tensors: Tensor) -> bool:
    """Can the kernel read these tensors' dtypes (floats)? Else ATen's op promotes."""
    return all(t.dtype in _KERNEL_DTYPES for t in tensors)


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
    scale = gradient_scale(ctx.reduction, self.numel())
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


def _loss_gradients(ctx, grad_output, single, pair):
    """The loss's gradients for what needs one: ``pair`` when both input and target do (one
    pass), else ``single(grad_output, a, b, reduction)`` = d loss / d a."""
    input, target = ctx.saved_tensors
    needs_input, needs_target = ctx.needs_input_grad[:2]
    if needs_input and needs_target:
        return (*pair(grad_output, input, target, ctx.reduction), None)
    if needs_input:
        return single(grad_output, input, target, ctx.reduction), None, None
    if needs_target:  # derivatives.yaml: mse_loss_backward(grad, target, self)
        return None, single(grad_output, target, input, ctx.reduction), None
    return None, None, None


def _loss_backward(ctx, grad_output):
    ops = torch.ops.mse_grad_triton
    return _loss_gradients(ctx, grad_output, ops.mse_loss_backward, ops.mse_loss_backward_pair)


mse_loss_op.register_autograd(_loss_backward, setup_context=_save_loss_operands)


# --- the eager path ------------------------------------------------------------------------

def _transformed() -> bool:
    """Is a torch.func transform active, or a forward-mode AD level? Then tensors may be
    wrapped or carry tangents, and only composable PyTorch ops may touch them."""
    return (torch._C._functorch.peek_interpreter_stack() is not None
            or torch.autograd.forward_ad._current_level >= 0)


def _route(grad_output: Tensor, a: Tensor, b: Tensor) -> str:
    """Who computes a gradient: ``"aten"`` under transforms or for dtypes the kernel does not
    read (composable, promotes), ``"op"`` when the gradient itself needs a graph (double
    backward: the differentiable custom op), else ``"kernel"`` (the launcher directly)."""
    if _transformed() or not _kernel_reads(grad_output, a, b):
        return "aten"
    if torch.is_grad_enabled() and (grad_output.requires_grad or a.requires_grad
                                    or b.requires_grad):
        return "op"
    return "kernel"


def _gradient(grad_output: Tensor, a: Tensor, b: Tensor, reduction: int) -> Tensor:
    """d mse_loss(a, b) / d a (see ``_route``)."""
    route = _route(grad_output, a, b)
    if route == "aten":
        return torch.ops.aten.mse_loss_backward(grad_output, a, b, reduction)
    if route == "op":
        return torch.ops.mse_grad_triton.mse_loss_backward(grad_output, a, b, reduction)
    return launcher.mse_loss_backward(grad_output, a, b, reduction)


def _gradient_pair(grad_output: Tensor, input: Tensor, target: Tensor,
                   reduction: int) -> Tuple[Tensor, Tensor]:
    """Both gradients, from one kernel pass where the kernel may run (see ``_route``)."""
    route = _route(grad_output, input, target)
    if route == "aten":
        grad_input = torch.ops.aten.mse_loss_backward(grad_output, input, target, reduction)
        return grad_input, -grad_input
    if route == "op":
        return torch.ops.mse_grad_triton.mse_loss_backward_pair(grad_output, input, target,
                                                                reduction)
    return launcher.mse_loss_backward_pair(grad_output, input, target, reduction)


class _MSELossFunction(torch.autograd.Function):
    """ATen's MSE loss forward; the backward runs this package's kernel (eager path, plain
    tensors). Old-style (``forward`` saves its own context): half the call overhead of a
    ``setup_context`` Function, which only transforms need."""

    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, reduction: int) -> Tensor:
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction
        return torch._C._nn.mse_loss(input, target, reduction)  # ATen's, no Python layers

    @staticmethod
    def backward(ctx, grad_output):
        return _loss_gradients(ctx, grad_output, _gradient, _gradient_pair)


class _TransformableMSELossFunction(torch.autograd.Function):
    """The same under torch.func transforms and forward-mode AD, which need ``setup_context``,
    a vmap rule and a ``jvp``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: int) -> Tensor:
        return torch._C._nn.mse_loss(input, target, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction = inputs
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)
        ctx.reduction = reduction

    backward = _MSELossFunction.backward

    @staticmethod
    def jvp(ctx, input_tangent, target_tangent, _):
        """Forward mode: d loss = reduce(2 (input - target) (d input - d target))."""
        input, target = ctx.saved_tensors
        difference = input_tangent if input_tangent is not None else torch.zeros_like(input)
        if target_tangent is not None:
            difference = difference - target_tangent
        tangent = 2 * (input - target) * difference
        if ctx.reduction == 1:
            return tangent.mean()
        return tangent.sum() if ctx.reduction == 2 else tangent


def mse_loss(input: Tensor, target: Tensor, reduction: Union[int, str] = "mean") -> Tensor:
    """``torch.nn.functional.mse_loss`` whose backward runs this package's kernel.

    The value is PyTorch's. As ``F.mse_loss``, input and target are broadcast (expanded views,
    with PyTorch's warning when their sizes differ) and the gradients are summed back to each
    one's shape; ``mean`` divides by the broadcast size. When both require grad, one kernel
    pass writes both gradients. Eager calls go through an ``autograd.Function`` (``torch.func``
    transforms work) — or, below a tuned crossover where the backward would be the native op
    anyway, straight to ATen's loss; traced ones (``torch.compile``, export) through the
    custom ops.
    """
    code = parse_reduction(reduction)
    compiling = torch.compiler.is_compiling()
    if input.shape != target.shape:
        if not compiling:  # under tracing a direct warnings.warn breaks the graph
            warnings.warn(f"Using a target size ({target.shape}) that is different to the "
                          f"input size ({input.shape}). This will likely lead to incorrect "
                          "results due to broadcasting. Please ensure they have the same "
                          "size.", stacklevel=2)
        input, target = torch.broadcast_tensors(input, target)
    if compiling:
        return torch.ops.mse_grad_triton.mse_loss(input, target, code)
    if launcher.native_preferred(input, input.numel()):
        # Below the tuned crossover the backward would be the native op: then the whole loss
        # is ATen's, with no Python autograd node (its cost is what the crossover avoids).
        return torch._C._nn.mse_loss(input, target, code)
    if _transformed():
        return _TransformableMSELossFunction.apply(input, target, code)
    return _MSELossFunction.apply(input, target, code)


class MSELoss(torch.nn.MSELoss):
    """Drop-in ``torch.nn.MSELoss`` whose backward runs this package's kernel."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, self.reduction)


# --- making stock PyTorch use the kernel --------------------------------------------------
#
# enable() overrides aten::mse_loss_backward and its out variant per dispatch key. In front of
# the functional one goes the C++ override (cpp_override) where it builds: it runs PyTorch's
# kernel below the crossover itself and hands every other call to the Python override below,
# registered as mse_grad_triton::enabled_mse_loss_backward. Without it the Python override is
# aten::mse_loss_backward itself.

DISPATCH_KEYS = {"npu": "PrivateUse1", "cuda": "CUDA", "cpu": "CPU"}
_DEVICES_BY_KEY = {key: device for device, key in DISPATCH_KEYS.items()}

torch.library.define("mse_grad_triton::enabled_mse_loss_backward", _SCHEMA_ARGS + " -> Tensor")
torch.library.define("mse_grad_triton::native_below", "(Tensor self) -> int")
torch.library.impl("mse_grad_triton::native_below", "CompositeExplicitAutograd",
                   launcher.native_below)


@dataclass
class _Override:
    """What ``enable()`` installed: for ``devices``, Python kernels in ``libraries`` and the
    C++ override for ``cpp_keys``."""

    devices: Tuple[str, ...] = ()
    libraries: Tuple[torch.library.Library, ...] = ()
    cpp_keys: Tuple[str, ...] = ()

    def remove(self) -> None:
        for key in self.cpp_keys:
            cpp_override.remove(key)
        for library in self.libraries:
            library._destroy()


_override = _Override()
_enabled_devices: Tuple[str, ...] = ()       # set by enable() / disable()
_active_blocks: Counter = Counter()          # device -> enabled() blocks active on it
_override_lock = threading.RLock()


def _overrides(dispatch_key: str):
    """``aten::mse_loss_backward`` and its out variant for one dispatch key: this kernel, or
    PyTorch's own kernel for that key (fetched now, before the override is installed, so that
    it is never the override itself) below the tuned crossover and for dtypes the kernel does
    not read there (an integer or bool target, float64 on an NPU: PyTorch promotes them).
    A reduction code other than 0, 1, 2 raises before either runs."""
    keyset = torch._C.DispatchKeySet(dispatch_key)
    # The out= kernel: PyTorch's functional one re-dispatches to it, which would reach the
    # override of the out variant again.
    stock = _stock_kernel("aten::mse_loss_backward.grad_input", dispatch_key)
    stock_functional = _stock_kernel("aten::mse_loss_backward", dispatch_key)
    policy = "auto" if stock is not None else "triton"
    kernel_dtypes = _KERNEL_DTYPES if backends.SUPPORTS_FP64[_DEVICES_BY_KEY[dispatch_key]] \
        else _KERNEL_DTYPES - {torch.float64}

    def native(grad_output, self, target, reduction, out):
        return stock.call_boxed(keyset, grad_output, self, target, reduction, grad_input=out)

    def mse_loss_backward(grad_output, self, target, reduction):
        parse_reduction(reduction)
        if stock is not None:
            if stock_functional is not None and not (
                    grad_output.dtype in kernel_dtypes and self.dtype in kernel_dtypes
                    and target.dtype in kernel_dtypes):
                # Stock's own functional kernel; it calls the out variant, which hands such
                # dtypes on too.
                return stock_functional.call_boxed(keyset, grad_output, self, target, reduction)
            # Below the crossover, as the training step calls it (gradient of self's shape):
            # the stock kernel at once, which checks its own arguments (a cheaper key than
            # _run's).
            if (self.shape == target.shape
                    and (grad_output.dim() == 0 or grad_output.shape == self.shape)
                    and launcher.native_preferred(self, self.numel())):
                return native(grad_output, self, target, reduction,
                              torch.empty_like(self, memory_format=torch.contiguous_format))
        return launcher._run(grad_output, self, target, reduction, None, policy, native)

    def mse_loss_backward_out(grad_output, self, target, reduction, *, grad_input):
        parse_reduction(reduction)
        if stock is not None and not all(t.dtype in kernel_dtypes for t in (
                grad_output, self, target, grad_input)):
            return native(grad_output, self, target, reduction, grad_input)
        _resize_output(grad_input, torch.broadcast_shapes(grad_output.shape, self.shape,
                                                          target.shape))
        return launcher._run(grad_output, self, target, reduction, grad_input, policy, native)

    return mse_loss_backward, mse_loss_backward_out


def _stock_kernel(op: str, dispatch_key: str):
    """PyTorch's kernel of ``op`` for ``dispatch_key``, or None where it has none (e.g. CUDA
    in a CPU-only build)."""
    try:
        return torch.library.get_kernel(op, dispatch_key)
    except RuntimeError:
        return None


def _resize_output(out: Tensor, shape: torch.Size) -> None:
    """ATen's out= convention: an ``out`` of another shape is resized, with its warning
    unless it was empty."""
    if out.shape == shape:
        return
    if out.numel():
        warnings.warn(f"An output with one or more elements was resized since it had shape "
                      f"{list(out.shape)}, which does not match the required output shape "
                      f"{list(shape)}. This behavior is deprecated, and in a future PyTorch "
                      "release outputs will not be resized unless they have zero elements. "
                      "You can explicitly reuse an out tensor t by resizing it, inplace, to "
                      "zero elements with t.resize_(0).", stacklevel=3)
    out.resize_(shape)


def _check_devices(devices: Sequence[str]) -> Tuple[str, ...]:
    unknown = [d for d in devices if d not in DISPATCH_KEYS]
    if unknown or isinstance(devices, str):
        raise ValueError(f"devices must be a sequence of {', '.join(DISPATCH_KEYS)}; "
                         f"got {devices!r}")
    return tuple(devices)


def _apply() -> None:
    """Install the override for the devices enabled now (by ``enable`` or by any active
    ``enabled`` block), if that set changed. Called with the lock held."""
    global _override
    wanted = tuple(d for d in DISPATCH_KEYS
                   if d in _enabled_devices or _active_blocks[d] > 0)
    if wanted == _override.devices:
        return
    _override.remove()
    _override = _Override()  # consistent even if installing fails
    if wanted:
        _override = _install(wanted)


def _apply_or_undo(undo: Callable[[], None]) -> None:
    """``_apply()``; where that fails, ``undo()`` the request and put back what was in force."""
    try:
        _apply()
    except BaseException:
        undo()
        _apply()
        raise


def _install(devices: Tuple[str, ...]) -> _Override:
    """Register the override for ``devices`` (each device's dispatch key); on failure, none."""
    installed = _Override(devices, (torch.library.Library("aten", "IMPL"),
                                    torch.library.Library("mse_grad_triton", "IMPL")))
    aten, ours = installed.libraries
    use_cpp = cpp_override.available()
    try:
        with warnings.catch_warnings():  # "Overriding a previously registered kernel"
            warnings.simplefilter("ignore", UserWarning)
            for device in devices:
                key = DISPATCH_KEYS[device]
                kernel, kernel_out = _overrides(key)
                # In this order: the C++ override reads PyTorch's out= kernel before the
                # Python one replaces it, and finds the Python kernel it hands calls to there.
                ours.impl("enabled_mse_loss_backward", kernel, key)
                if use_cpp and cpp_override.install(key):
                    installed.cpp_keys += (key,)
                else:
                    aten.impl("mse_loss_backward", kernel, key)
                aten.impl("mse_loss_backward.grad_input", kernel_out, key)
    except BaseException:
        installed.remove()
        raise
    return installed


def enable(devices: Sequence[str] = ("npu", "cuda")) -> None:
    """Run this kernel as ``aten::mse_loss_backward`` (and its ``out`` variant) for tensors
    on ``devices`` (``"npu"``, ``"cuda"``; ``"cpu"`` only on request: there it runs in Triton's
    interpreter), so that unmodified code — ``nn.MSELoss()(x, y).backward()`` — uses it.
    Below a device's tuned crossover (``backend="auto"``) PyTorch's own kernel runs.
    Calling it again replaces the previous set of devices (``enabled`` blocks keep theirs)."""
    global _enabled_devices
    devices = _check_devices(devices)
    cpp_override.available()  # a first build, outside the lock that enabled_override() takes
    with _override_lock:
        previous, _enabled_devices = _enabled_devices, devices

        def undo():
            global _enabled_devices
            _enabled_devices = previous

        _apply_or_undo(undo)


def disable() -> None:
    """Give ``aten::mse_loss_backward`` back to PyTorch's own kernels (except on the devices
    of ``enabled`` blocks still active, until they end)."""
    global _enabled_devices
    with _override_lock:
        _enabled_devices = ()
        _apply()


def enabled_devices() -> Tuple[str, ...]:
    """The devices on which ``aten::mse_loss_backward`` currently runs this kernel."""
    return _override.devices


def enabled_override(device: str) -> Optional[str]:
    """Which override runs ``aten::mse_loss_backward`` on ``device``: ``"c++"`` (the C++
    override, handing calls above the crossover to the Python one), ``"python"``, or None
    where it is not enabled."""
    with _override_lock:
        if device not in _override.devices:
            return None
        return "c++" if DISPATCH_KEYS[device] in _override.cpp_keys else "python"


@contextlib.contextmanager
def enabled(devices: Sequence[str] = ("npu", "cuda")) -> Iterator[None]:
    """The kernel on ``devices`` for the ``with`` block. Blocks compose, also across threads:
    inside any active block its devices are on; when every block has ended, what ``enable``
    and ``disable`` set is in force again."""
    devices = _check_devices(devices)
    cpp_override.available()  # a first build, outside the lock that enabled_override() takes
    with _override_lock:
        _active_blocks.update(devices)
        _apply_or_undo(lambda: _active_blocks.subtract(devices))
    try:
        yield
    finally:
        with _override_lock:
            _active_blocks.subtract(devices)
            _apply()
