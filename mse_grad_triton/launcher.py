"""The launcher: ``aclnnMseLossBackward``'s semantics on top of the Triton kernels.

Data path of a call:

1. look up the call's geometry (every operand's shape, strides, dtype and device, the
   reduction, the policy) in a cache; the first time, run every metadata check (``validation``),
   broadcast, choose the native op or the kernel (tuned crossover), pick a configuration (a
   tuned table's, tuned on first use where opted in, or the default) and plan the launch
   (``planning.plan_launch``: layout, tile, modes, arguments, grid); a refused call raises
   here, before anything runs;
2. per call, check what can change between calls of one geometry: memory overlap of ``out``
   with the inputs (data pointers);
3. allocate the output (the only tensor operation) and launch once (``backends``: after the
   first launch of a plan, the compiled kernel is launched directly).

Inputs are read in place through their strides: no copies, no casts, no host synchronisation.
"""

import math
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from . import autotune, backends, configs, generation, layout, planning, tables, validation
from .layout import Layout
from .planning import LaunchPlan
from .reduction import Reduction, parse_reduction

POLICIES = ("auto", "triton", "native")


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
    tile: Optional[Tuple[int, int]] = None  # (rows, columns) of a tile: (1, BLOCK) when flat
    grid: Optional[Tuple[int]] = None


@dataclass(frozen=True)
class _Call:
    """A validated call geometry: reduction code, result shape, device backend, the decision,
    and the launch plan (kernel path, non-empty result)."""

    reduction: int
    shape: Tuple[int, ...]
    device_backend: backends.DeviceBackend
    native: bool
    reason: str
    plan: Optional[LaunchPlan] = None
    zeros: bool = False        # grad_output is a ZeroTensor: the result is zeros, no launch
    # self is contiguous with the result's shape: empty_like(self) allocates the result
    result_like_self: bool = False

    def new_result(self, self_: torch.Tensor) -> torch.Tensor:
        """A contiguous result of the broadcast shape in ``self_``'s dtype, on its device."""
        if self.result_like_self:  # half the host time of torch.empty(shape, dtype, device)
            return torch.empty_like(self_)
        return torch.empty(self.shape, dtype=self_.dtype, device=self_.device)


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
    return _run(grad_output, self, target, reduction, out, backend, None)


def _run(grad_output, self, target, reduction, out, policy, native_kernel: Optional[Callable]):
    """``mse_loss_backward``; ``native_kernel(grad_output, self, target, reduction, out)``
    (PyTorch's own out= kernel, fetched before an override was installed) replaces
    ``aten::mse_loss_backward`` for the native op."""
    call = _call(grad_output, self, target, reduction, out, policy, False)
    if out is not None:
        validation.check_out_autograd(out, grad_output, self, target)
        validation.check_out_memory(out, grad_output, self, target)
    if call.zeros:  # PyTorch's ZeroTensor semantics: a zero gradient times anything is 0
        if out is None:
            return torch.zeros(call.shape, dtype=self.dtype, device=self.device)
        return out.zero_()
    if call.native:
        if native_kernel is None:
            return _aten(grad_output, self, target, call.reduction, out)
        # PyTorch's own out= kernel, on a fresh result if need be
        out = call.new_result(self) if out is None else out
        return native_kernel(grad_output, self, target, call.reduction, out)
    fresh = out is None
    if fresh:
        out = call.new_result(self)
    if call.plan is not None:
        call.device_backend.launch(call.plan, (grad_output, self, target, out, out))
        if not fresh:  # as ATen's out= ops: a graph that saved out sees it was overwritten
            torch.autograd.graph.increment_version(out)
    return out


def _aten(grad_output, self, target, reduction, out):
    """The native op through the dispatcher (aclnnMseLossBackward on NPU)."""
    if out is None:
        return torch.ops.aten.mse_loss_backward(grad_output, self, target, reduction)
    return torch.ops.aten.mse_loss_backward.grad_input(grad_output, self, target, reduction,
                                                       grad_input=out)


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
    call = _call(grad_output, self, target, reduction, None, backend, True)
    if call.zeros:
        return (torch.zeros(call.shape, dtype=self.dtype, device=self.device),
                torch.zeros(call.shape, dtype=target.dtype, device=self.device))
    if call.native:
        grad_self = torch.ops.aten.mse_loss_backward(grad_output, self, target, call.reduction)
        return grad_self, torch.ops.aten.neg(grad_self).to(target.dtype)
    grad_self = torch.empty(call.shape, dtype=self.dtype, device=self.device)
    grad_target = torch.empty(call.shape, dtype=target.dtype, device=self.device)
    if call.plan is not None:
        call.device_backend.launch(call.plan, (grad_output, self, target, grad_self,
                                               grad_target))
    return grad_self, grad_target


# Validated calls by geometry: a training loop calls with the same shapes, strides and dtypes
# every step, so checks and planning run once per geometry (bounded; dict access is atomic).
_calls: Dict[tuple, _Call] = {}
# Launch plans for explicit configurations (the tuner), by geometry and config.
_plans: Dict[tuple, LaunchPlan] = {}
_MAX_CACHED = 1024
# .provisional: the call being planned deferred its first-use tuning (tracing, capture): its
# plan is not cached, so that a later call outside tunes it.
_planning = threading.local()


def _remember(cache: dict, key, value):
    """Store ``value`` in a bounded cache (emptied when full: geometries rarely churn)."""
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value
    return value


def clear_caches() -> None:
    """Forget validated calls and plans (after changing the built-in defaults)."""
    _calls.clear()
    _plans.clear()
    _native_preferred.clear()


def _call(grad_output, self, target, reduction, out, policy, pair: bool) -> _Call:
    """The validated call for this geometry: from the cache, or checked and planned now."""
    try:
        # What the checks and the plan depend on, in one flat tuple (the key costs more than
        # anything else on the host path: no nesting, each attribute read once).
        key = (type(reduction), reduction, type(policy), policy, pair, generation.value,
               grad_output.shape, grad_output.stride(), grad_output.dtype, grad_output.device,
               self.shape, self.stride(), self.dtype, self.device,
               target.shape, target.stride(), target.dtype, target.device,
               grad_output._is_zerotensor(), self._is_zerotensor(), target._is_zerotensor(),
               grad_output.is_neg() or self.is_neg() or target.is_neg(),
               None if out is None else (out.shape, out.stride(), out.dtype, out.device,
                                         out.is_neg(), out._is_zerotensor()))
        call = _calls.get(key)
    except (AttributeError, TypeError, RuntimeError):  # not tensors: the checks say why
        key = call = None
    if call is None:
        _planning.provisional = False
        call = _validate(grad_output, self, target, reduction, out, policy, pair)
        if key is not None and not _planning.provisional:
            _remember(_calls, key, call)
    return call


def launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
           out: torch.Tensor, reduction_code: int, device_backend: backends.DeviceBackend,
           config: Optional[configs.KernelConfig] = None,
           negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """Launch the kernel on validated, non-empty operands with the plan of this geometry
    (made once; ``config`` as in ``plan_call``: the tuner tries candidates);
    ``negated_out`` (same shape and strides as ``out``) also receives ``-out``. Returns the
    plan."""
    operands = (grad_output, self, target, out, negated_out)
    key = (device_backend, reduction_code, config, generation.value,
           *((t.shape, t.stride(), t.dtype) if t is not None else None for t in operands))
    plan = _plans.get(key)
    if plan is None:
        plan = _remember(_plans, key, plan_call(grad_output, self, target, out, reduction_code,
                                                device_backend, config, negated_out))
    device_backend.launch(plan, (grad_output, self, target, out,
                                 out if negated_out is None else negated_out))
    return plan


def explain(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
            reduction: Union[int, str] = "mean", out: Optional[torch.Tensor] = None,
            backend: str = "auto") -> Explanation:
    """What ``mse_loss_backward`` would do with these arguments, without running anything:
    backend and why, launch path, coalesced layout, configuration and where it came from, grid.
    Raises what the call would raise; tunes nothing (with tuning on first use, the config
    shown for a missing entry is the one used until the first call tunes it)."""
    with autotune.deferred("explain() runs nothing"):
        call = _call(grad_output, self, target, reduction, out, backend, False)
    if out is not None:
        validation.check_out_memory(out, grad_output, self, target)
    summary = dict(backend="native" if call.native else "triton", reason=call.reason,
                   device=call.device_backend.device_name, shape=call.shape)
    plan = call.plan
    if plan is None:
        return Explanation(**summary)
    return Explanation(**summary, path=plan.path, layout=plan.layout, config=plan.config,
                       config_source=plan.config.source, tile=plan.tile,
                       grid=(plan.num_programs,))


def _validate(grad_output, self, target, reduction, out, policy, pair) -> _Call:
    """All metadata checks, then the native/kernel decision and the plan; raises before
    anything runs."""
    if policy not in POLICIES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, POLICIES))}; "
                         f"got {policy!r}")
    code = parse_reduction(reduction)
    inputs = {"grad_output": grad_output, "self": self, "target": target}
    validation.check_inputs(inputs, out)
    shape = layout.broadcast_shapes([t.shape for t in inputs.values()], list(inputs))
    device_backend = backends.backend_for(self.device)
    if policy != "native":
        validation.check_fp64_support(inputs, out, device_backend.kind,
                                      device_backend.supports_fp64)
    if out is not None:
        validation.check_out(out, shape)
    if pair and code == Reduction.MEAN and self.numel() != target.numel():
        raise ValueError(f"self ({self.numel()} elements) and target ({target.numel()}) must "
                         "have as many elements for mean: each one's gradient divides by it")
    if grad_output._is_zerotensor():
        return _Call(code, shape, device_backend, False, "grad_output is a ZeroTensor: the "
                     "result is zeros", zeros=True)
    native, reason = _decide(policy, device_backend, self.dtype, math.prod(shape))
    plan = None
    if not native and 0 not in shape:
        planned_out = out if out is not None else _FreshOutput(shape, self.dtype)
        negated = _FreshOutput(shape, target.dtype) if pair else None
        plan = plan_call(grad_output, self, target, planned_out, code, device_backend,
                         negated_out=negated)
    return _Call(code, shape, device_backend, native, reason, plan,
                 result_like_self=shape == tuple(self.shape) and self.is_contiguous())


@dataclass(frozen=True)
class _FreshOutput:
    """The metadata of the contiguous output ``torch.empty(shape, dtype)`` will allocate, for
    planning without a tensor operation."""

    shape: Tuple[int, ...]
    dtype: torch.dtype

    def stride(self) -> Tuple[int, ...]:
        strides, step = [], 1
        for size in reversed(self.shape):
            strides.append(step)
            step *= max(size, 1)
        return tuple(reversed(strides))

    def element_size(self) -> int:
        return self.dtype.itemsize

    def numel(self) -> int:
        return math.prod(self.shape)


_native_preferred: Dict[tuple, bool] = {}


def native_preferred(self: torch.Tensor, numel: int) -> bool:
    """Would ``backend="auto"`` run the native op for a result of ``numel`` elements with
    ``self``'s device and dtype (below a tuned crossover)? Cached; no checks."""
    key = (self.device, self.dtype, numel, generation.value)
    preferred = _native_preferred.get(key)
    if preferred is None:
        preferred = _remember(_native_preferred, key, numel < native_below(self))
    return preferred


def native_below(self: torch.Tensor) -> int:
    """The tuned crossover for ``self``'s device and dtype: below this many elements
    ``backend="auto"`` runs the native op (0: never, e.g. where no table is in force)."""
    if self.dtype not in validation.DTYPE_NAMES:
        return 0
    try:
        device_backend = backends.backend_for(self.device)
    except ValueError:  # a device the kernel does not run on (meta): no crossover
        return 0
    return _crossover(device_backend, self.dtype)[0]


def _crossover(device_backend, dtype) -> Tuple[int, Optional[tables.TunedTable]]:
    """The tuned crossover for a device and dtype (0: none), and the table it is from."""
    table = tables.table_for(device_backend.device_name)
    return (table.native_below.get(validation.DTYPE_NAMES[dtype], 0) if table else 0), table


def _decide(policy: str, device_backend, dtype, numel: int) -> Tuple[bool, str]:
    """Native op or kernel, and why."""
    if policy != "auto":
        return policy == "native", f"backend={policy!r}"
    threshold, table = _crossover(device_backend, dtype)
    if numel < threshold:
        return True, (f"{numel} elements < {threshold}, below which the native op is faster "
                      f"end to end ({table.file})")
    return False, (f"{numel} elements >= the native op's crossover {threshold} ({table.file})"
                   if threshold else "no tuned crossover for this device and dtype")


def plan_call(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
              out: torch.Tensor, reduction_code: int, device_backend: backends.DeviceBackend,
              config: Optional[configs.KernelConfig] = None,
              negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """The launcher's plan for validated, non-empty operands: ``config`` (the tuner's
    candidate), else the one ``_choose_config`` picks; then ``planning.plan_launch``."""
    if config is None:
        operands = (grad_output, self, target, out, negated_out)
        config = _choose_config(layout.of_tensors(operands[:4]), operands, reduction_code,
                                device_backend)
    return planning.plan_launch(grad_output, self, target, out, reduction_code, device_backend,
                                config, negated_out)


def _choose_config(rows: Layout, operands, reduction_code: int,
                   device_backend) -> configs.KernelConfig:
    """The tuned table's config for this dtype, path and size, else the device kind's default
    (``planning.default_config``); with tuning on first use, a missing entry is tuned first
    (``autotune``)."""
    table = tables.table_for(device_backend.device_name)
    dtype, numel = validation.DTYPE_NAMES[operands[1].dtype], operands[3].numel()
    tuned = table.config_for(dtype, rows.path, numel) if table else None
    if autotune.wanted(table, dtype, rows.path, numel):  # opted in, and no entry yet
        reason = autotune.why_not_now(operands[1].device, operands[:3])
        if reason is None:
            tuned = autotune.tune_call(device_backend, operands[:4], reduction_code, dtype,
                                       rows.path) or tuned
        elif reason != autotune.TUNING:  # the default now; planned again (and tuned) later
            _planning.provisional = True
    return tuned or planning.default_config(rows, operands, reduction_code, device_backend)


