"""Ascend lowering check: every kernel specialisation the launcher can pick, compiled for Atlas
A2/A3 as far as a machine without an NPU can (TTIR, then triton-adapter-opt's Linalg/HIVM), and
inspected.

    python -m mse_grad_triton.tools.ascend_check [--full] [--targets ...] [--jobs N] [--quiet]

A specialisation is built exactly as triton-ascend's JIT would build it for a real call: the
launcher plans the call (on meta tensors, so even > 2**31-element cases cost no memory) and
Triton's own binder derives the signature and specialisation attributes. For each one the check
reports and enforces:

- it lowers (else the compiler's message);
- how each global operand is accessed: ``B`` block transfer (``memref.reinterpret_cast`` +
  ``memref.copy`` in, ``bufferization.materialize_in_destination`` out: DMA), ``S`` one scalar
  load (a one-element grad_output), ``U`` unstructured (per-lane ``memref.load``/``store`` in a
  constant-bound ``scf.for``: element-by-element scalar code);
- the tile buffers it allocates (``memref.alloc``), checked against the UB formula's share for
  the loaded inputs, and the formula's whole footprint (x2 with multibuffer) against the UB;
- bytes moved per output element (block transfers per tile / tile elements) against the
  minimum: each loaded input once, the output once.

Exit status 1 if any specialisation fails to lower, is unstructured where it must be
structured, overflows the UB, or moves more than the minimum.
"""

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from .. import backends, cli, configs, kernels, launcher, layout, tables, triton_compat
from ..kernels import MAX_OUTER_DIMS
from ..reduction import Reduction

# One A2 (910B) and one A3 (910_93) target by default; --targets all adds every 910B variant.
DEFAULT_TARGETS = ("Ascend910B3", "Ascend910_93")
ALL_TARGETS = ("Ascend910B1", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend910_93")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
OPERANDS = ("grad_output", "self", "target", "out", "negated_out")
VECTOR_CORES = 48  # grid size only; it does not change the compiled code
# A layout of at least LARGE_LAYOUT elements must move at least MIN_TRANSFER_BYTES per operand
# per block transfer: below that a DMA's setup, not the copy bandwidth, sets the pace.
LARGE_LAYOUT = 1 << 16
MIN_TRANSFER_BYTES = 1024

Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _meta(shape, dtype, stride=None) -> torch.Tensor:
    if stride is None:
        return torch.empty(shape, dtype=dtype, device="meta")
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")


def _alternating_broadcast(outer_dims: int) -> Callable[..., Tensors]:
    """target broadcast in every other dimension: exactly ``outer_dims`` outer dims remain."""
    shape = [3] * outer_dims + [64]
    target_shape = [1 if (outer_dims - 1 - i) % 2 == 0 else 3 for i in range(outer_dims)] + [64]
    return lambda g, x, y, o: (_meta([], g), _meta(shape, x), _meta(target_shape, y),
                               _meta(shape, o))


# name -> (operands builder from the four dtypes, must every access be a block transfer
# with unit stride innermost?)
LAYOUTS: Dict[str, Tuple[Callable[..., Tensors], bool]] = {
    "flat": (lambda g, x, y, o: (_meta([1000, 4096], g), _meta([1000, 4096], x),
                                 _meta([1000, 4096], y), _meta([1000, 4096], o)), True),
    "flat_scalar_grad": (lambda g, x, y, o: (_meta([], g), _meta([1000, 4096], x),
                                             _meta([1000, 4096], y), _meta([1000, 4096], o)),
                         True),
    "flat_2^31+": (lambda g, x, y, o: (_meta([], g), _meta([2**31 + 64], x),
                                       _meta([2**31 + 64], y), _meta([2**31 + 64], o)), True),
    "broadcast_target": (lambda g, x, y, o: (_meta([1000, 4096], g), _meta([1000, 4096], x),
                                             _meta([1000, 1], y), _meta([1000, 4096], o)), True),
    "broadcast_self": (lambda g, x, y, o: (_meta([], g), _meta([1, 4096], x),
                                           _meta([1000, 4096], y), _meta([1000, 4096], o)),
                       True),
    "short_rows": (lambda g, x, y, o: (_meta([], g), _meta([1000, 30], x),
                                       _meta([1000, 1], y), _meta([1000, 30], o)), True),
    "expanded_grad": (lambda g, x, y, o: (_meta([4096], g, [1]).expand(1000, 4096),
                                          _meta([1000, 4096], x), _meta([1000, 4096], y),
                                          _meta([1000, 4096], o)), True),
    "row_stride_2^31+": (lambda g, x, y, o: (_meta([], g), _meta([3, 4096], x, [2**31 + 64, 1]),
                                             _meta([3, 4096], y), _meta([3, 4096], o)), True),
    # 2-D tiles: short rows, slices, a row broadcast (issue 11's layouts)
    "rows_of_4": (lambda g, x, y, o: (_meta([], g), _meta([1 << 16, 4], x),
                                      _meta([1 << 16, 1], y), _meta([1 << 16, 4], o)), True),
    "sliced_rows_of_4": (lambda g, x, y, o: (_meta([], g), _meta([1 << 16, 64], x)[:, :4],
                                             _meta([1 << 16, 4], y), _meta([1 << 16, 4], o)),
                         True),
    "rows_of_3": (lambda g, x, y, o: (_meta([32, 100, 3], g), _meta([32, 100, 3], x),
                                      _meta([32, 1, 3], y), _meta([32, 100, 3], o)), True),
    # Permuted operands: moved along their own unit-stride dimension, turned on chip.
    "transposed_self": (lambda g, x, y, o: (_meta([1000, 4096], g),
                                            _meta([4096, 1000], x).t(),
                                            _meta([1000, 4096], y), _meta([1000, 4096], o)),
                        True),
    "transposed_out": (lambda g, x, y, o: (_meta([], g), _meta([1000, 4096], x),
                                           _meta([1000, 4096], y), _meta([4096, 1000], o).t()),
                       True),
    "channels_last_self": (lambda g, x, y, o: (
        _meta([], g), _meta([8, 64, 32, 32], x).to(memory_format=torch.channels_last),
        _meta([8, 64, 32, 32], y), _meta([8, 64, 32, 32], o)), True),
    "channels_last_target": (lambda g, x, y, o: (
        _meta([], g), _meta([8, 64, 32, 32], x),
        _meta([8, 64, 32, 32], y).to(memory_format=torch.channels_last),
        _meta([8, 64, 32, 32], o)), True),
    "wide_lanes": (lambda g, x, y, o: (_meta([], g), _meta([4096, 3 << 20], x).t(),
                                       _meta([3 << 20, 4096], y), _meta([3 << 20, 4096], o)),
                   True),
    # A stepped slice has no unit-stride dimension to walk: reported, allowed to be strided.
    "stepped_self": (lambda g, x, y, o: (_meta([], g), _meta([1000, 8192], x)[:, ::2],
                                         _meta([1000, 4096], y), _meta([1000, 4096], o)),
                     False),
    **{f"outer_dims_{k}": (_alternating_broadcast(k), True)
       for k in range(2, MAX_OUTER_DIMS + 1)},
}


@dataclasses.dataclass(frozen=True)
class LayoutCase:
    """What both gates compile: a layout of ``LAYOUTS``, the four operands' dtypes, a tile
    size (0: the launcher's choice); each gate adds its compiler's knobs."""

    layout: str
    dtypes: Tuple[str, str, str, str]  # grad_output, self, target, out (keys of DTYPES)
    block_size: int


@dataclasses.dataclass(frozen=True)
class Case(LayoutCase):
    """One Ascend specialisation."""

    multibuffer: bool = True
    negated: bool = False              # also write the target's gradient (-out)
    transpose: bool = True             # KernelConfig.transpose (False: the strided form)


@dataclasses.dataclass
class Result:
    case: Case
    path: str = ""
    block_size: int = 0       # compiled tile size: the case's, or less for short rows
    lowered: bool = False
    error: str = ""
    access: Dict[str, str] = dataclasses.field(default_factory=dict)  # operand -> B/S/U/-
    tile_bytes: int = 0       # memref.alloc bytes in the lowered kernel
    formula_bytes: int = 0    # configs.ub_footprint_bytes, multibuffer included
    moved_per_element: float = 0.0
    minimum_per_element: int = 0
    tile: Tuple[int, int] = (0, 0)  # (rows, columns) of the compiled tile
    # operand -> bytes of its smallest block transfer, and whether its transfers walk unit
    # stride innermost
    transfer_bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    unit_innermost: Dict[str, bool] = dataclasses.field(default_factory=dict)
    problems: List[str] = dataclasses.field(default_factory=list)


def enumerate_cases(full: bool) -> List[Case]:
    """The specialisations to check.

    Default: every layout x the uniform dtypes x every candidate and shipped tile size (with
    and without multibuffer where it fits), plus every dtype combination the API accepts on NPU
    (3**4) for the flat, scalar-grad and broadcast layouts at the default tile size.
    ``full``: every dtype combination for every layout and tile size.
    """
    names = list(DTYPES)
    combos = [(g, x, y, o) for g in names for x in names for y in names for o in names]
    uniform = [(d, d, d, d) for d in names]
    cases = set()
    for layout_name in LAYOUTS:
        for dtypes in (combos if full else uniform):
            for config in _configs_for(layout_name, dtypes):
                cases.add(Case(layout_name, dtypes, config.block_size, config.multibuffer,
                               transpose=config.transpose))
    for layout_name in LAYOUTS:  # both gradients in one pass (autograd, input and target)
        for dtypes in uniform:
            cases.add(Case(layout_name, dtypes, _default_block(layout_name, dtypes, True),
                           True, negated=True))
    if not full:
        for layout_name in ("flat", "flat_scalar_grad", "broadcast_target"):
            for dtypes in combos:
                block = _default_block(layout_name, dtypes)
                cases.add(Case(layout_name, dtypes, block, True))
    return sorted(cases, key=lambda c: (list(LAYOUTS).index(c.layout), c.negated, c.dtypes,
                                        c.block_size, c.multibuffer, not c.transpose))


def _itemsizes(layout_name: str, dtypes,
               negated: bool = False) -> Tuple[List[int], List[int], int]:
    """``launcher.tile_itemsizes`` of a layout with these dtypes."""
    tensors = LAYOUTS[layout_name][0](*(DTYPES[d] for d in dtypes))
    negated_out = tensors[3].new_empty(tensors[3].shape, dtype=tensors[2].dtype)
    return launcher.tile_itemsizes(layout.of_tensors(tensors),
                                   (*tensors, negated_out if negated else None))


def _configs_for(layout_name: str, dtypes) -> List[configs.KernelConfig]:
    """The tuner's candidates for these item sizes, and every config of a shipped table."""
    inputs, out, transposed = _itemsizes(layout_name, dtypes)
    unique = {(c.block_size, c.multibuffer, c.transpose): c
              for c in configs.candidate_configs("npu", inputs, out, transposed)
              + shipped_configs()}
    return list(unique.values())


def shipped_configs() -> List[configs.KernelConfig]:
    """The configs of every table shipped in ``tune_configs/`` (a table the launcher would not
    load is skipped with its warning)."""
    found = []
    for path in sorted(tables.shipped_dir().glob("*.json")):
        try:
            table = tables.parse_table(path, path.stem)
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(f"ascend_check: skipping shipped table {path}: {error}", stacklevel=2)
            continue
        found += [c for _, entries in table.buckets.values() for c in entries]
    return found


def _default_block(layout_name: str, dtypes, negated: bool = False) -> int:
    inputs, outputs, transposed = _itemsizes(layout_name, dtypes, negated)
    return configs.largest_fitting_block(inputs, outputs, True, transposed)


# --- building and lowering ---------------------------------------------------------------

def plan_case(case: Case):
    """The case's five operands (meta tensors; the target's gradient last) and the launcher's
    plan for them on an Atlas A2 with 48 vector cores."""
    tensors = LAYOUTS[case.layout][0](*(DTYPES[d] for d in case.dtypes))
    backend = backends.DeviceBackend("npu", "Ascend910B3", VECTOR_CORES, False)
    config = configs.KernelConfig(block_size=case.block_size, multibuffer=case.multibuffer,
                                  transpose=case.transpose)
    # The target's gradient has the output's shape and strides, in the target's dtype.
    negated = tensors[3].new_empty(tensors[3].shape, dtype=tensors[2].dtype)
    plan = launcher.plan_launch(*tensors, Reduction.MEAN, backend, config,
                                negated if case.negated else None)
    return (*tensors, negated), plan


def specialise(kernel, args: Sequence, constexprs: dict, target: str):
    """What triton-ascend's JIT would compile for ``kernel[grid](*args, **constexprs)``."""
    return triton_compat.specialise(kernel, args, constexprs, triton_compat.target("npu", target))


def to_ttir(spec) -> Tuple[object, dict]:
    """Triton IR after triton-ascend's TTIR passes, with the metadata used."""
    return triton_compat.ascend_ttir(spec)


def to_linalg(spec, ttir, metadata) -> str:
    """triton-adapter-opt's lowering to Linalg/HIVM, as triton-ascend runs it."""
    return triton_compat.ascend_linalg(ttir, spec, metadata)


# --- reading the lowered kernel ----------------------------------------------------------

_ARG = re.compile(r"(%arg\d+): memref<\?x(\w+)>")
_DEF = re.compile(r"^\s*(%[\w.]+)(?::\d+)? = ")
_VALUE = re.compile(r"%[\w.]+")
_CAST = re.compile(r"memref\.reinterpret_cast (%arg\d+) to .*sizes: \[([\d, ]+)\], "
                   r"strides: \[([^\]]+)\]")
_ALLOC = re.compile(r"memref\.alloc\(\) : memref<((?:\d+x)+)([a-z]\w*)>")
_LANE_LOOP = re.compile(r"scf\.for %\w+ = %c0\w* to %c\d+\w* step %c1\w* ")
_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i8": 1, "i16": 2, "i32": 4, "i64": 8}


@dataclasses.dataclass
class Accesses:
    """What a lowered kernel does with each of its global pointer arguments."""

    kinds: Dict[int, str]          # pointer index -> "B", "S", "U" or "-" (never touched)
    block_bytes: Dict[int, int]    # pointer index -> bytes moved by block transfers per tile
    tile_bytes: int                # bytes of the memref.alloc'd tile buffers
    # pointer index -> bytes of its smallest block transfer (one DMA: a 1-D or 2-D tile), and
    # whether every one of its transfers walks unit stride innermost
    transfer_bytes: Dict[int, int] = dataclasses.field(default_factory=dict)
    unit_innermost: Dict[int, bool] = dataclasses.field(default_factory=dict)


def classify(linalg: str, num_pointers: int) -> Accesses:
    """Classify how each of the last ``num_pointers`` pointer arguments is accessed.

    The lowered function takes runtime arguments (``memref<?xi8>``) before the kernel's own
    pointers, which follow in order. An element access (``memref.load``/``store``) inside a
    constant-bound unit-step ``scf.for`` is a per-lane loop: unstructured; elsewhere it is a
    scalar access. Transfers and buffers are counted per tile body: each region directly in
    the function (the flat kernel has two, its loop over full tiles and its masked last tile),
    and within one each branch of an ``scf.if`` on its own (the strided kernel moves a tile
    either unmasked or masked), with what its enclosing body moves outside the branches. The
    body that moves the most is reported, plus what the function does outside them.
    """
    lines = linalg.splitlines()
    signature = next(line for line in lines if "func.func" in line)
    pointers = _ARG.findall(signature)[-num_pointers:]
    index_of = {name: i for i, (name, _) in enumerate(pointers)}
    itemsize = [_BYTES[ty] for _, ty in pointers]

    # memref value -> (pointer index, cast elements, innermost stride is 1)
    root: Dict[str, Tuple[int, int, bool]] = {}
    transfer_bytes: Dict[int, int] = {}
    unit_innermost: Dict[int, bool] = {}
    kinds: Dict[int, set] = {i: set() for i in range(num_pointers)}
    # tile body (0: outside any) -> pointer index -> bytes moved; body -> buffer bytes
    moved: Dict[int, Dict[int, int]] = {0: {i: 0 for i in range(num_pointers)}}
    buffers: Dict[int, int] = {0: 0}
    parent: Dict[int, int] = {0: 0}
    # enclosing regions: (is it a per-lane loop, the tile body outside it)
    regions: List[Tuple[bool, int]] = []
    body = 0
    for line in lines:
        defined = _DEF.match(line)
        uses = [v for v in _VALUE.findall(line[defined.end():] if defined else line)]
        transfer = None
        if (cast := _CAST.search(line)) and cast.group(1) in index_of:
            sizes = [int(size) for size in cast.group(2).split(",")]
            root[defined.group(1)] = (index_of[cast.group(1)], math.prod(sizes),
                                      cast.group(3).split(",")[-1].strip() == "1")
        elif defined and "memref.subview" in line and uses and uses[0] in root:
            root[defined.group(1)] = root[uses[0]]
        elif alloc := _ALLOC.search(line):
            elements = math.prod(int(size) for size in alloc.group(1).rstrip("x").split("x"))
            buffers[body] += elements * _BYTES[alloc.group(2)]
        elif "memref.copy" in line and uses and uses[0] in root:
            transfer = root[uses[0]]
        elif "materialize_in_destination" in line and len(uses) > 1 and uses[1] in root:
            transfer = root[uses[1]]
        elif "memref.load" in line or "memref.store" in line:
            for value in uses:
                if value in root:
                    kinds[root[value][0]].add("U" if any(r[0] for r in regions) else "S")
        if transfer is not None:
            index, elements, unit = transfer
            kinds[index].add("B")
            moved[body][index] += elements * itemsize[index]
            transfer_bytes[index] = min(transfer_bytes.get(index, elements * itemsize[index]),
                                        elements * itemsize[index])
            unit_innermost[index] = unit_innermost.get(index, True) and unit
        closes = line.lstrip().startswith("}")
        if closes and regions:  # also "} else {": the then-branch ends
            body = regions.pop()[1]
        if line.rstrip().endswith("{"):
            regions.append((bool(_LANE_LOOP.search(line)), body))
            # module { func { region {: a new tile body; deeper, each scf.if branch
            if len(regions) == 3 or (len(regions) > 3 and ("scf.if" in line or closes)):
                new_body = len(moved)
                moved[new_body], buffers[new_body] = {i: 0 for i in range(num_pointers)}, 0
                parent[new_body], body = (body if len(regions) > 3 else 0), new_body

    def enclosing(b: int) -> List[int]:
        """Body ``b`` and the tile bodies enclosing it (0, outside them all, included)."""
        return [b] + (enclosing(parent[b]) if b else [])

    def weight(b: int) -> Tuple[int, int]:
        chain = enclosing(b)
        return sum(sum(moved[c].values()) for c in chain), sum(buffers[c] for c in chain)

    heaviest = max((b for b in moved if b), key=weight, default=0)
    chain = enclosing(heaviest)
    block_bytes = {i: sum(moved[c][i] for c in chain) for i in range(num_pointers)}
    tile_bytes = sum(buffers[c] for c in chain)
    return Accesses({i: _kind(k) for i, k in kinds.items()}, block_bytes, tile_bytes,
                    transfer_bytes, unit_innermost)


def _kind(kinds: set) -> str:
    for kind in ("U", "S", "B"):  # the worst access wins
        if kind in kinds:
            return kind
    return "-"


# --- checking one specialisation ---------------------------------------------------------

_LOWERED: Dict[str, Tuple[str, str]] = {}  # TTIR digest -> (linalg, error); per process


def _cache_dir() -> Optional[Path]:
    root = os.environ.get("MSE_GRAD_TRITON_CACHE", str(Path.home() / ".cache"))
    return Path(root) / "mse-grad-triton" / "ascend-lowering" if root else None


def _lower_cached(ttir_text: str, spec, ttir, metadata) -> Tuple[str, str]:
    """Linalg text (or the compiler's error) for a TTIR module, cached by the TTIR's digest:
    in memory (the A2 and A3 targets give the same TTIR) and on disk across runs."""
    import triton

    digest = hashlib.sha256((triton.__version__ + ttir_text).encode()).hexdigest()
    if digest in _LOWERED:
        return _LOWERED[digest]
    cache = _cache_dir()
    path = cache / f"{digest}.json" if cache else None
    try:
        _LOWERED[digest] = tuple(json.loads(path.read_text()))
        return _LOWERED[digest]
    except (AttributeError, OSError, ValueError):  # no cache, not cached, or unreadable
        pass
    try:
        result = (to_linalg(spec, ttir, metadata), "")
    except subprocess.CalledProcessError as error:
        message = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        result = ("", message[0] if message else str(error))
    _LOWERED[digest] = result
    if path is not None:
        # Atomically: parallel workers may lower the same kernel and read each other's files.
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(result))
        os.replace(partial, path)
    return result


def check_case(case: Case, targets: Sequence[str]) -> Result:
    """Build, lower (for every target) and inspect one specialisation."""
    result = Result(case)
    tensors, plan = plan_case(case)
    result.path = plan.path
    linalg = _lower_for(plan, tensors, targets, result)
    if linalg is None:
        return result
    result.lowered = True
    block = result.block_size = plan.config.block_size
    accesses = classify(linalg, num_pointers=len(OPERANDS))
    result.access = {name: accesses.kinds[i] for i, name in enumerate(OPERANDS)}
    result.tile_bytes = accesses.tile_bytes
    loaded, stored, transposed = launcher.tile_itemsizes(
        plan.layout, (*tensors[:4], tensors[4] if case.negated else None))
    transposed *= plan.config.transpose  # the strided form turns nothing
    result.formula_bytes = configs.ub_footprint_bytes(block, loaded, stored, case.multibuffer,
                                                      transposed)
    result.moved_per_element = sum(accesses.block_bytes.values()) / block
    result.tile = plan.tile
    result.transfer_bytes = {OPERANDS[i]: b for i, b in accesses.transfer_bytes.items()}
    result.unit_innermost = {OPERANDS[i]: u for i, u in accesses.unit_innermost.items()}
    result.minimum_per_element = sum(loaded) + sum(stored)
    _judge(result, plan, [t.element_size() for t in tensors], block * sum(loaded))
    return result


def _lower_for(plan, tensors, targets: Sequence[str], result: Result) -> Optional[str]:
    """The Linalg of the plan's specialisation for every target (the last one's), or None
    with the failure recorded in ``result``."""
    linalg = None
    for target in targets:
        try:
            spec = specialise(plan.kernel, (*tensors, *plan.scalar_args), plan.constexprs,
                              target)
            ttir, metadata = to_ttir(spec)
        except Exception as error:  # a front-end failure is a result, not a crash
            result.error = f"{target}: {type(error).__name__}: {str(error).splitlines()[0]}"
            result.problems.append("does not build Triton IR")
            return None
        linalg, error = _lower_cached(str(ttir), spec, ttir, metadata)
        if error:
            result.error = f"{target}: {error}"
            result.problems.append("does not lower to Linalg")
            return None
    return linalg


def _judge(result: Result, plan, itemsizes: Sequence[int], input_share: int) -> None:
    """Record every rule the inspected specialisation breaks in ``result.problems``."""
    case = result.case
    # The strided form of a transposed layout walks an operand at its column stride: by design.
    must_be_block = LAYOUTS[case.layout][1] and case.transpose
    for i, name in enumerate(OPERANDS):
        expected = ("S" if i == 0 and plan.layout.scalar_grad else
                    "-" if i == 4 and not case.negated else "B")
        kind = result.access[name]
        if kind == "U" and (must_be_block or expected == "S"):
            result.problems.append(f"unstructured access to {name}")
        elif kind not in ("U", expected):
            result.problems.append(f"{name} accessed as {kind}, expected {expected}")
    for name, bytes_ in result.transfer_bytes.items():
        if not result.unit_innermost[name] and must_be_block:
            result.problems.append(f"{name} moved with a non-unit innermost stride")
        if bytes_ < _required_transfer_bytes(plan, OPERANDS.index(name), itemsizes):
            result.problems.append(f"{name} moves {bytes_} B per transfer < "
                                   f"{MIN_TRANSFER_BYTES} B")
    if result.formula_bytes > configs.UB_BYTES:
        result.problems.append(f"UB formula {result.formula_bytes} B > {configs.UB_BYTES} B")
    if result.access["self"] == "B" and result.tile_bytes > input_share:
        result.problems.append(f"tile buffers {result.tile_bytes} B exceed the UB formula's "
                               f"input share {input_share} B")
    if result.moved_per_element > result.minimum_per_element:
        result.problems.append(f"moves {result.moved_per_element:g} B/element > minimum "
                               f"{result.minimum_per_element}")


def _required_transfer_bytes(plan, operand: int, itemsizes: Sequence[int]) -> int:
    """The least an operand's block transfer must move: ``MIN_TRANSFER_BYTES`` in a layout of
    ``LARGE_LAYOUT`` elements or more, or all of the operand's elements over the tile's two
    dimensions where they hold less (a tile cannot span more). An operand broadcast along a
    tile dimension moves one vector per tile, as long as the tile's other side: not judged."""
    mode = plan.constexprs.get(MODE_OF[operand], kernels.TILE.value)  # flat: all walked
    if plan.layout.num_rows * plan.layout.row_length < LARGE_LAYOUT or mode not in _WALKED:
        return 0
    extent = plan.layout.row_length * plan.layout.tile_rows * itemsizes[operand]
    return min(MIN_TRANSFER_BYTES, extent)


_WALKED = (kernels.TILE.value, kernels.TRANSPOSED.value)
# The strided kernel's mode constexpr of each of OPERANDS.
MODE_OF = ("GRAD_MODE", "SELF_MODE", "TARGET_MODE", "OUT_MODE", "OUT_MODE")


def run(cases: Sequence[Case], targets: Sequence[str], jobs: int,
        progress: Callable[[int, int], None] = lambda done, total: None) -> List[Result]:
    """Check ``cases`` on ``jobs`` worker processes (forked: the kernel needs no pickling)."""
    if jobs <= 1:
        results = []
        for i, case in enumerate(cases):
            results.append(check_case(case, targets))
            progress(i + 1, len(cases))
        return results
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(check_case, case, targets) for case in cases]
        for i, _ in enumerate(concurrent.futures.as_completed(futures)):
            progress(i + 1, len(cases))
        return [f.result() for f in futures]


def _transfer_label(result: Result) -> str:
    """Bytes of each operand's smallest block transfer (``-``: none), ``~`` where its
    innermost stride is not 1."""
    labels = []
    for name in OPERANDS:
        size = result.transfer_bytes.get(name)
        if size is None:
            labels.append("-")
            continue
        label = f"{size // 1024}K" if size >= 1024 else str(size)
        labels.append(label + ("" if result.unit_innermost[name] else "~"))
    return "/".join(labels)


def verdict(problems: Sequence[str], error: str) -> str:
    """A result's last column in both gates' tables."""
    text = "ok" if not problems else "FAIL: " + "; ".join(problems)
    return text + (f" ({error[:160]})" if error else "")


def format_table(results: Sequence[Result]) -> str:
    header = (f"{'layout':<20} {'dtypes g/x/y/out':<17} {'tile':>9} {'mb':>3} {'path':<16} "
              f"{'access':<7} {'bytes per transfer':<22} {'tiles KB':>8} {'UB KB':>6} "
              f"{'B/elem':>6} {'min':>4}  verdict")
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.case
        access = "".join(r.access.get(name, "?") for name in OPERANDS) if r.lowered else "-"
        status = verdict(r.problems, r.error)
        if not c.transpose:
            status += " (strided form: no on-chip turn)"
        tile = f"{r.tile[0]}x{r.tile[1]}" if r.lowered else str(c.block_size)
        lines.append(
            f"{c.layout:<20} {'/'.join(c.dtypes):<17} {tile:>9} "
            f"{'y' if c.multibuffer else 'n':>3} {r.path:<16} {access:<7} "
            f"{_transfer_label(r):<22} {r.tile_bytes / 1024:>8.1f} {r.formula_bytes / 1024:>6.1f} "
            f"{r.moved_per_element:>6.3g} {r.minimum_per_element:>4}  {status}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="every dtype combination for every layout and tile size")
    parser.add_argument("--targets", type=cli.choice_list(("all", *ALL_TARGETS)),
                        default=list(DEFAULT_TARGETS),
                        help=f"comma-separated, or 'all' ({', '.join(ALL_TARGETS)})")
    parser.add_argument("--jobs", type=cli.positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary")
    args = parser.parse_args(argv)
    targets = ALL_TARGETS if "all" in args.targets else tuple(args.targets)

    cases = enumerate_cases(args.full)
    started = time.time()

    with tqdm(total=len(cases), disable=not sys.stderr.isatty(), unit="spec") as bar:
        results = run(cases, targets, args.jobs, lambda done, total: bar.update())
    shown = [r for r in results if r.problems] if args.quiet else results
    print(f"Ascend lowering check: {len(cases)} specialisations x targets {', '.join(targets)} "
          "(TTIR -> Linalg/HIVM with triton-adapter-opt; bishengir-compile, which needs CANN, "
          "is not run)")
    print("access per operand grad_output/self/target/out/negated_out: B block transfer (DMA), "
          "S scalar load, U unstructured (per-lane scalar code), - unused; bytes per transfer: "
          "each operand's smallest block transfer, ~ where its innermost stride is not 1 "
          f"(layouts of >= {LARGE_LAYOUT} elements must move >= {MIN_TRANSFER_BYTES} B)")
    if shown:
        print(format_table(shown))
    failed = sum(bool(r.problems) for r in results)
    unstructured = sorted({r.case.layout for r in results if "U" in r.access.values()})
    print(f"unstructured (allowed) in: {', '.join(unstructured) or 'none'}")
    print(f"{len(results) - failed} passed, {failed} failed ({time.time() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
