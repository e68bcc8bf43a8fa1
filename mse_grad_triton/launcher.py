"""The launcher: ``aclnnMseLossBackward``'s semantics on top of the Triton kernels.

Data path of a call:

1. look up the call's geometry (every operand's shape, strides, dtype and device, the
   reduction, the policy) in a cache; the first time, run every metadata check (``validation``),
   broadcast, choose the native op or the kernel (tuned crossover), describe the operands as
   coalesced rows (``layout``), pick a configuration (``configs``/``tables``) and plan the
   launch; a refused call raises here, before anything runs;
2. per call, check what can change between calls of one geometry: memory overlap of ``out``
   with the inputs (data pointers);
3. allocate the output (the only tensor operation) and launch once (``backends``: after the
   first launch of a plan, the compiled kernel is launched directly).

Inputs are read in place through their strides: no copies, no casts, no host synchronisation.
"""

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import (
    autotune,
    backends,
    chips,
    configs,
    generation,
    kernels,
    layout,
    tables,
    triton_compat,
    validation,
)
from .kernels import MAX_OUTER_DIMS, mse_loss_backward_flat_kernel, mse_loss_backward_strided_kernel
from .layout import Layout
from .reduction import Reduction, gradient_scale, parse_reduction, scale_divisor

_INT32_LIMIT = 2**31
POLICIES = ("auto", "triton", "native")


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors: kernel, arguments, constexprs, grid."""

    layout: Layout
    config: configs.KernelConfig
    num_programs: int
    kernel: object             # the @triton.jit entry: flat or strided
    scalar_args: Tuple         # the kernel's arguments after the five pointers, in order
    constexprs: dict
    launch_tail: Tuple         # scalar_args as a compiled kernel's launcher takes them
    tile: Tuple[int, int] = (1, 1)  # (rows, columns) of a tile: (1, BLOCK_SIZE) when flat
    num_tiles: int = 1
    # Compiled kernels by pointer alignment (filled by CompiledBackend.launch).
    compiled: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def path(self) -> str:
        return self.layout.path

    @property
    def moved_flat(self) -> bool:
        """Launched by the flat kernel: a flat layout, or short rows moved flat."""
        return self.kernel is mse_loss_backward_flat_kernel


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
    (made once; ``config`` as in ``plan_launch``: the tuner tries candidates);
    ``negated_out`` (same shape and strides as ``out``) also receives ``-out``. Returns the
    plan."""
    operands = (grad_output, self, target, out, negated_out)
    key = (device_backend, reduction_code, config, generation.value,
           *((t.shape, t.stride(), t.dtype) if t is not None else None for t in operands))
    plan = _plans.get(key)
    if plan is None:
        plan = _remember(_plans, key, plan_launch(grad_output, self, target, out, reduction_code,
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
        plan = plan_launch(grad_output, self, target, planned_out, code, device_backend,
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


def plan_launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
                out: torch.Tensor, reduction_code: int, device_backend: backends.DeviceBackend,
                config: Optional[configs.KernelConfig] = None,
                negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """Layout, configuration, grid and kernel arguments for validated, non-empty operands.

    ``config`` overrides the tuned table and the defaults (the tuner and the Ascend check try
    candidates); a ``negated_out`` also receives ``-out``. Only metadata is read, so meta
    tensors describe a launch as well as real ones.
    """
    operands = (grad_output, self, target, out)
    rows = layout.of_tensors(operands)
    if config is None:
        config = _choose_config(rows, (*operands, negated_out), reduction_code, device_backend)
    scale = (gradient_scale(reduction_code, self.numel()),
             scale_divisor(reduction_code, self.numel()))
    constexprs = dict(
        SCALAR_GRAD=rows.scalar_grad,
        WRITE_NEGATED=negated_out is not None,
        SKIP_PADDING=backends.TRITON_HAS_CARE_PADDING,
        COMPUTE_FP64=any(t.dtype == torch.float64 for t in operands),
        ORDER=evaluation_order(rows.scalar_grad, [t.dtype for t in operands[:3]], scale[0]),
    )
    per_row = per_row_inputs(rows, operands)
    if rows.flat or per_row:  # 1-D tiles of config.block_size; the kernel masks only its last
        kernel = mse_loss_backward_flat_kernel
        tile = (1, config.block_size)
        numel = rows.row_length * rows.num_rows
        num_tiles = -(-numel // config.block_size)
        scalar_args = (*scale, numel)
        flags = per_row or (False, False, False)
        constexprs.update(BLOCK_SIZE=config.block_size,
                          ROW_LENGTH=rows.row_length if per_row else 1,
                          GRAD_PER_ROW=flags[0], SELF_PER_ROW=flags[1], TARGET_PER_ROW=flags[2])
    else:
        kernel = mse_loss_backward_strided_kernel
        modes = rows.tile_modes(config.transpose)
        transposed = transposed_operands(modes, negated_out is not None)
        if rows.path == "strided":  # nothing to turn: one canonical config, whatever the knob
            config = replace(config, transpose=True)
        config = configs.fit_for_transposes(device_backend.kind, config, transposed)
        tile = tile_shape(rows, config.block_size, transposed > 0)
        scalar_args, strided_constexprs, num_tiles = strided_arguments(
            rows, tile_modes_for(rows, modes, tile, device_backend.kind == "npu"), tile)
        scalar_args = (*scale, *scalar_args)
        constexprs.update(strided_constexprs)
    config = replace(config, block_size=tile[0] * tile[1])
    num_programs = max(1, min(num_tiles, device_backend.num_units * config.programs_per_unit))
    launch_tail = triton_compat.launch_values(kernel, (None,) * 5 + scalar_args, constexprs)[5:]
    return LaunchPlan(rows, config, num_programs, kernel, scalar_args, constexprs, launch_tail,
                      tile, num_tiles)


# A tile row narrower than this is padded to it in an Ascend A2/A3 UB (one 32-byte block,
# REFERENCE.md section 8), and each row then moves as a DMA packet of its own.
NARROW_ROW_BYTES = 32


def per_row_inputs(rows: Layout, operands) -> Optional[Tuple[bool, bool, bool]]:
    """Which inputs hold one value per row, where the output's rows are narrower than
    ``NARROW_ROW_BYTES`` and the flat kernel moves them flat, repeating those inputs on chip
    (``Layout.per_row_inputs``); else None (the strided kernel's 2-D tile)."""
    per_row = rows.per_row_inputs()
    narrowest = min(t.element_size() for t in operands if t is not None)
    if per_row is None or rows.row_length * narrowest >= NARROW_ROW_BYTES:
        return None
    return per_row


def evaluation_order(scalar_grad: bool, input_dtypes, scale: float) -> int:
    """How the kernel evaluates ``grad * (self - target) * scale`` (``kernels._gradient``),
    keeping every intermediate in range: with a one-value grad_output, two scalar factors each
    program chooses (``SCALAR_FACTORS``); with a scale >= 1 (none, sum) or fp16 inputs only,
    the product first (``PRODUCT_FIRST``); else per element (``GUARDED``: a full grad_output
    with mean in fp32 or bf16)."""
    if scalar_grad:
        return kernels.SCALAR_FACTORS.value
    if scale >= 1.0 or all(dtype == torch.float16 for dtype in input_dtypes):
        return kernels.PRODUCT_FIRST.value
    return kernels.GUARDED.value


def _choose_config(rows: Layout, operands, reduction_code: int,
                   device_backend) -> configs.KernelConfig:
    """The tuned table's config for this dtype, path and size, else the device kind's default
    (``default_config``); with tuning on first use, a missing entry is tuned first
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
    return tuned or default_config(rows, operands, reduction_code, device_backend)


def default_config(rows: Layout, operands, reduction_code: int,
                   device_backend) -> configs.KernelConfig:
    """The device kind's default config for a call without a tuned entry
    (``configs.select_config``): on NPU for what its tile is (``tile_kind``) and the shortest
    run a strided tile of each size would move (``shortest_run_bytes``)."""
    kind, shortest_run = None, None
    if device_backend.kind == "npu":
        kind = tile_kind(rows, operands, reduction_code, chip=device_backend.chip)
        if not rows.flat and not per_row_inputs(rows, operands):
            def shortest_run(block_size: int) -> int:
                return shortest_run_bytes(rows, operands, block_size)
    return configs.select_config(device_backend.kind, rows.row_length, rows.num_rows,
                                 device_backend.num_units, tile_kind=kind,
                                 shortest_run=shortest_run)


def tile_kind(rows: Layout, operands, reduction_code: int, transpose: bool = True, *,
              chip: chips.Chip) -> configs.TileKind:
    """What kind of tile a launch compiles to for an Ascend ``chip`` (``configs.TileKind``:
    what the UB plan depends on besides the tile size), for ``operands`` (grad_output, self,
    target, out, negated_out or None) laid out as ``rows``."""
    loaded, stored = tile_itemsizes(rows, operands)
    per_row = per_row_inputs(rows, operands)
    modes = () if rows.flat else rows.tile_modes(transpose)
    along_columns = (kernels.TILE.value, kernels.COL_VECTOR.value)
    step = col_step(rows, modes)
    element_strided = any(mode in along_columns and abs(rows.inner_strides[k]) not in (1, step)
                          for k, mode in enumerate(modes))
    scale = gradient_scale(reduction_code, operands[1].numel())
    order = evaluation_order(rows.scalar_grad, [t.dtype for t in operands[:3]], scale)
    path = ("flat" if rows.flat else f"rows of {rows.row_length}" if per_row else "strided")
    return configs.TileKind(chip.toolchain.name, path, modes, tuple(loaded), tuple(stored),
                            configs.row_padding(rows.row_length, loaded + stored,
                                                rows.flat or bool(per_row), chip.ub_align_bytes),
                            element_strided, order)


def tile_itemsizes(rows: Layout, operands) -> Tuple[List[int], List[int]]:
    """What a tile moves, for its kind (``tile_kind``): the item sizes of the tensors it loads
    (all three inputs, but a one-element grad_output is loaded once per program) and of those
    it stores (``out``, and the target's gradient unless ``operands[4]`` is None)."""
    loaded, stored = tile_operands(rows, operands[4] is not None)
    return ([operands[i].element_size() for i in loaded],
            [operands[i].element_size() for i in stored])


def tile_operands(rows: Layout, negated: bool) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Indices (grad_output, self, target, out, negated_out: 0..4) of the operands every tile
    loads — a one-element grad_output is loaded once per program instead — and stores."""
    loaded = (1, 2) if rows.scalar_grad else (0, 1, 2)
    return loaded, ((3, 4) if negated else (3,))


def transposed_operands(modes: Tuple[int, ...], negated: bool) -> int:
    """How many tensors a strided tile moves along its rows (``modes``: ``Layout.tile_modes``;
    the target's gradient, when written, is moved as ``out``)."""
    transposed = sum(mode == kernels.TRANSPOSED.value for mode in modes)
    return transposed + (negated and bool(modes) and modes[3] == kernels.TRANSPOSED.value)


def tile_shape(rows: Layout, block_size: int, square: bool) -> Tuple[int, int]:
    """``(BLOCK_ROWS, BLOCK_COLS)`` of a strided tile of about ``block_size`` elements: as
    wide as the row (short rows pack many rows per tile), or ``square`` (an operand is moved
    along the rows: both of its transfer dimensions long) as near square as it fits."""
    def ceil_pow2(n: int) -> int:
        return 1 << (n - 1).bit_length()

    cols_wanted = ceil_pow2(rows.row_length)
    block_cols = min(cols_wanted, 1 << (block_size.bit_length() - 1) // 2 if square
                     else block_size)
    block_rows = min(ceil_pow2(rows.tile_rows), block_size // block_cols)
    return block_rows, min(cols_wanted, block_size // block_rows)


# Column strides a stepped input may have to be moved as unit-stride runs (``STEPPED``): at
# most this many times the bytes it needs.
STEPPED_COL_STRIDES = (2, 4, 8)


def col_step(rows: Layout, modes: Sequence[int]) -> int:
    """The column stride of the inputs moved ``STEPPED`` on Ascend: the one stride other than 1
    every input walked along the columns at such a stride shares, if it is one of
    ``STEPPED_COL_STRIDES`` (a slice such as ``x[:, ::2]``); else 1 (none)."""
    strides = {stride for stride, mode in zip(rows.inner_strides[:3], modes[:3])
               if mode == kernels.TILE.value and stride != 1}
    step = strides.pop() if len(strides) == 1 else 1
    return step if step in STEPPED_COL_STRIDES else 1


def tile_modes_for(rows: Layout, modes: Sequence[int], tile: Tuple[int, int],
                   npu: bool = False) -> Tuple[int, ...]:
    """``modes`` (``Layout.tile_modes``) refined for a ``(BLOCK_ROWS, BLOCK_COLS)`` tile: an
    input broadcast across the rows and every outer dimension whose row is one column tile
    is the same for every tile (``HELD_ROW``: loaded once per program); an operand turned on
    chip whose lines lie back to back over one row tile (``DENSE_TRANSPOSED``: its tile is
    one contiguous run, as a channels-last tensor's with all its channels in the tile). On
    Ascend (``npu``) inputs at a column stride of ``col_step`` are moved ``STEPPED`` (the UB
    would give each element a 32-byte slot of its own)."""
    block_rows, block_cols = tile
    refined = list(modes)
    step = col_step(rows, modes) if npu else 1
    for k, mode in enumerate(modes):
        if k < 3 and mode == kernels.TILE.value and step > 1 and rows.inner_strides[k] == step:
            refined[k] = kernels.STEPPED.value
        elif (mode == kernels.COL_VECTOR.value and rows.row_length <= block_cols
                and not any(rows.strides[k][2:])):
            refined[k] = kernels.HELD_ROW.value
        elif (mode == kernels.TRANSPOSED.value and rows.tile_rows == block_rows
                and rows.inner_strides[k] == block_rows):
            refined[k] = kernels.DENSE_TRANSPOSED.value
    return tuple(refined)


def shortest_run_bytes(rows: Layout, operands, block_size: int) -> int:
    """The shortest unit-stride run, in bytes, any operand a strided tile of ``block_size``
    elements moves per tile (``operands``: grad_output, self, target, out, negated_out or
    None; the last moved as ``out``) in its mode (``tile_modes_for``); a held row or a scalar
    is not moved per tile."""
    modes = rows.tile_modes()
    block_rows, block_cols = tile = tile_shape(
        rows, block_size, transposed_operands(modes, operands[4] is not None) > 0)
    modes = tile_modes_for(rows, modes, tile, npu=True)
    runs = []
    for k, operand in enumerate(operands):
        mode, strides = modes[min(k, 3)], rows.strides[min(k, 3)]
        if operand is None or mode in (kernels.SCALAR.value, kernels.HELD_ROW.value):
            continue
        if mode == kernels.DENSE_TRANSPOSED.value:
            elements = block_rows * block_cols
        elif mode == kernels.STEPPED.value:
            elements = (block_cols - 1) * strides[0] + 1
        elif mode in (kernels.ROW_VECTOR.value, kernels.TRANSPOSED.value):
            elements = block_rows if abs(strides[1]) == 1 else 1
        else:
            elements = block_cols if abs(strides[0]) == 1 else 1
        runs.append(elements * operand.element_size())
    return min(runs)


def strided_arguments(rows: Layout, modes, tile: Tuple[int, int]) -> Tuple[tuple, dict, int]:
    """The strided kernel's integer arguments (after the scale), its layout constexprs and
    the number of tiles, for operands moved in ``modes`` (``tile_modes_for``)."""
    block_rows, block_cols = tile
    col_tiles = -(-rows.row_length // block_cols)
    row_tiles = -(-rows.tile_rows // block_rows)
    num_tiles = col_tiles * row_tiles * rows.num_rows // rows.tile_rows
    col_strides, row_strides = list(rows.inner_strides), list(rows.row_strides())
    # The stride between the lines of each operand's 2-D transfers (its rows' in TILE mode, its
    # columns' in TRANSPOSED mode) is passed divided by the largest power of two (up to 16
    # elements: a 16-byte vector of 1-byte items) dividing all of them, and multiplied back
    # by a constexpr: the compiler then knows every line starts aligned (vector accesses).
    lines = [(k, row_strides if mode == kernels.TILE.value else col_strides)
             for k, mode in enumerate(modes)
             if mode in (kernels.TILE.value, kernels.TRANSPOSED.value)]
    lines = [(k, strides) for k, strides in lines if strides[k]]
    align = min([16] + [abs(strides[k]) & -abs(strides[k]) for k, strides in lines])
    for k, strides in lines:
        strides[k] //= align
    outer = []
    for d in range(2, MAX_OUTER_DIMS + 1):  # unused dimensions: size 1, stride 0
        if d < len(rows.sizes):
            outer += [rows.sizes[d], *(s[d] for s in rows.strides)]
        else:
            outer += [1, 0, 0, 0, 0]
    span = max(abs(c) * (block_cols - 1) + abs(r) * (block_rows - 1)
               for c, r in zip(rows.inner_strides, rows.row_strides()))
    args = (rows.row_length, rows.tile_rows, col_tiles, row_tiles, num_tiles,
            *col_strides, *row_strides, *outer)
    constexprs = dict(
        NUM_OUTER_DIMS=max(0, rows.num_outer_dims - 1),
        GRAD_MODE=modes[0], SELF_MODE=modes[1], TARGET_MODE=modes[2], OUT_MODE=modes[3],
        MASK_ROWS=rows.tile_rows % block_rows != 0, MASK_COLS=rows.row_length % block_cols != 0,
        STRIDE_ALIGN=align, WIDE_LANES=span >= _INT32_LIMIT,
        BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
        COL_STEP=max((rows.inner_strides[k] for k, mode in enumerate(modes)
                      if mode == kernels.STEPPED.value), default=1))
    return args, constexprs, num_tiles
