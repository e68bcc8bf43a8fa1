"""Ascend gate: every kernel specialisation the launcher, a shipped table or the tuner can
pick, compiled for Atlas A2/A3 and the Ascend 950 series by Huawei's own compilers as far as a
machine without an NPU can go, and inspected.

    python -m mse_grad_triton.tools.ascend_check [--full] [--targets ...] [--jobs N] [--quiet]
                                                 [--update-ub-plan]

A specialisation is built exactly as triton-ascend's JIT would build it for a real call: the
launcher plans the call (on meta tensors, so even > 2**31-element cases cost no memory) and
Triton's own binder derives the signature and specialisation attributes. Then two stages:

1. triton-adapter-opt's Linalg/HIVM (shipped in triton-ascend). Checked: it lowers; each global
   operand is moved by block transfers (``B``: ``memref.reinterpret_cast`` + ``memref.copy``
   in, ``bufferization.materialize_in_destination`` out), a scalar load (``S``: a one-element
   grad_output) or unstructured per-lane code (``U``); the bytes a tile body moves per output
   element against the minimum; each walked operand's smallest transfer and its innermost
   stride.
2. ``bishengir-compile`` (``bishengir.py``: CANN's on $PATH, else the ``ascendnpu-ir`` wheel),
   with triton-ascend 3.2.0's own A2/A3 options, for every target, to the boundary of hivmc
   (the closed codegen); for the 950 series (``Ascend910_95xx``) triton-adapter-opt's 910_95
   lowering and ``bishengir-compile-a5`` with triton-ascend's 910_95 options. Each target's
   spec (vector cores, UB size and alignment) must match ``chips.json``. From its final HIVM
   (``hivm.py``): whether it planned the UB at once,
   after a code-motion retry, only by dropping multibuffer, or not at all; the planned UB;
   per tile the vector instructions (and those in per-row loops), DMAs, scalar accesses,
   barriers and flags; and the pipe model of that tile (``pipe_model.py``: modelled, not
   measured), beside aclnn's V2 kernel on the same model (A2 only: Huawei published cost
   figures for the 910B, none for the 950, whose tiles are listed as unmodelled).

It fails on any compile error, and on an overflow, a retry or a dropped multibuffer of a config
the launcher or a shipped table uses; a tuner candidate that does not plan cleanly is marked
not runnable (the tuner never tries it). Candidates are compiled from the smallest tile up, and
the tiles above the first that does not plan cleanly are not compiled (a larger tile of the
same kind needs at least as much UB). Where no bishengir-compile exists, the second stage is
skipped, and every line of the output says so.

The largest clean tile of each kind (``configs.TileKind``, per toolchain) is the launcher's
default: kept as data in ``mse_grad_triton/ub_plan.json`` with the compiler version;
``--update-ub-plan`` measures and writes it, and every run checks it against a fresh plan.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import functools
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

from .. import backends, chips, cli, configs, kernels, layout, planning, tables, triton_compat
from ..kernels import MAX_OUTER_DIMS
from ..reduction import Reduction, gradient_scale
from . import bishengir, goals, hivm, pipe_model

# One A2 of each core count, one A3 and two 950s of different core counts by default;
# --targets all: every chip of chips.json (REFERENCE.md section 8; "Ascend910_93" is not one).
DEFAULT_TARGETS = ("Ascend910B3", "Ascend910B1", "Ascend910_9382", "Ascend910_9599",
                   "Ascend910_9579")
ALL_TARGETS = tuple(chips.known())
# The modelled figures: an A2 of 40 and one of 48 vector cores (the cost figures are 910B's).
MODEL_TARGETS = ("Ascend910B3", "Ascend910B1")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
OPERANDS = ("grad_output", "self", "target", "out", "negated_out")
VECTOR_CORES = 48  # grid size only; it does not change the compiled code
# What the compiler's target spec says, against chips.json: (spec entry, Chip field, to bytes).
SPEC_FACTS = (("VECTOR_CORE_COUNT", "vector_cores", 1), ("AI_CORE_COUNT", "ai_cores", 1),
              ("UB_SIZE", "ub_bytes", 8), ("UB_ALIGN_SIZE", "ub_align_bytes", 8))
# A layout of at least LARGE_LAYOUT elements must move at least MIN_TRANSFER_BYTES per operand
# per block transfer: below that a DMA's setup, not the copy bandwidth, sets the pace.
LARGE_LAYOUT = 1 << 16
MIN_TRANSFER_BYTES = 1024
# Tiles tried below the candidates where none of them plans cleanly.
PROBE_BLOCKS = (512, 256, 128, 64, 32)
ROLES = ("launcher", "table", "candidate")   # who would use a config: fails on which

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
    # Rows of 2 and of 8 against one value per row: moved flat where narrower than 32 B.
    "rows_of_2": (lambda g, x, y, o: (_meta([1 << 17, 1], g), _meta([1 << 17, 2], x),
                                      _meta([1 << 17, 1], y), _meta([1 << 17, 2], o)), True),
    "rows_of_8": (lambda g, x, y, o: (_meta([], g), _meta([1 << 15, 8], x),
                                      _meta([1 << 15, 1], y), _meta([1 << 15, 8], o)), True),
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
    # The reduction: mean, or none where a full grad_output makes the kernel evaluate the
    # product in another order (planning.evaluation_order): another specialisation.
    reduction: int = Reduction.MEAN
    toolchain: str = "a2_a3"           # chips.Toolchain.name: how it lowers and compiles
    # The row count is not a multiple of the tile's rows (MASK_ROWS): the masked edge tile is
    # compiled beside the whole ones, and needs its own UB. The gate's shapes divide evenly,
    # so each strided case of several tile rows is also compiled in this form.
    partial_rows: bool = False

    @property
    def whole(self) -> "Case":
        """The case with whole tiles only (the one whose role and model count)."""
        return dataclasses.replace(self, partial_rows=False)

    @property
    def group(self) -> tuple:
        """The cases that differ only in tile size (compiled smallest first)."""
        return (self.layout, self.dtypes, self.multibuffer, self.negated, self.transpose,
                self.reduction, self.toolchain)

    @property
    def chip(self) -> chips.Chip:
        """The chip the launcher plans for (``planning_chip``)."""
        return planning_chip(self.toolchain)


@dataclasses.dataclass
class Result:
    case: Case
    role: str = "candidate"   # ROLES: the launcher's choice, a shipped table's, or a candidate
    path: str = ""
    block_size: int = 0       # compiled tile size: the case's, or less for short rows
    lowered: bool = False
    error: str = ""
    access: Dict[str, str] = dataclasses.field(default_factory=dict)  # operand -> B/S/U/-
    moved_per_element: float = 0.0
    minimum_per_element: int = 0
    tile: Tuple[int, int] = (0, 0)  # (rows, columns) of the compiled tile
    # operand -> bytes of its smallest block transfer, and whether its transfers walk unit
    # stride innermost
    transfer_bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    unit_innermost: Dict[str, bool] = dataclasses.field(default_factory=dict)
    tile_kind: str = ""       # configs.TileKind.key
    # bishengir-compile: target -> status (bishengir.STATUSES, "skipped", or "" without it)
    compiled: Dict[str, str] = dataclasses.field(default_factory=dict)
    planned_ub_bytes: int = 0
    required_ub_bytes: int = 0
    ub_capacity_bytes: int = 0
    body: Optional[hivm.TileBody] = None   # a full tile of the final HIVM (hivm.Hivm.tile)
    vector_cores: Dict[str, int] = dataclasses.field(default_factory=dict)  # target -> cores
    spec: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)  # target -> dlti
    modelled: Dict[str, pipe_model.Modelled] = dataclasses.field(default_factory=dict)
    aclnn: Dict[str, pipe_model.Modelled] = dataclasses.field(default_factory=dict)
    # target -> what issue 21's goals are judged on (goals.TileFacts), and what it misses
    goal_facts: Dict[str, goals.TileFacts] = dataclasses.field(default_factory=dict)
    goal_misses: Dict[str, List[goals.Miss]] = dataclasses.field(default_factory=dict)
    problems: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> str:
        """The worst bishengir-compile status over the targets."""
        order = ("error", "overflow", "multibuffer dropped", "code-motion retry", "skipped",
                 "clean", "")
        return min(self.compiled.values(), key=order.index, default="")

    @property
    def runnable(self) -> bool:
        """Does every target plan it cleanly (may the launcher, a table or the tuner use it)?"""
        return self.status in bishengir.RUNNABLE


def planning_chip(toolchain: str) -> chips.Chip:
    """The chip a toolchain's cases are planned for: its first (every chip of a toolchain
    plans and compiles the same; only the grid, and the targets' specs, differ)."""
    return next(iter(chips.targets(toolchain).values()))


def enumerate_cases(full: bool, toolchains: Sequence[str] = ("a2_a3",),
                    launcher_only: Sequence[str] = ()) -> List[Case]:
    """The specialisations to check, for each of ``toolchains``.

    Default: every layout x the uniform dtypes x every candidate tile size (with and without
    multibuffer; on transposed layouts also the strided form) and every config of a shipped
    table; the launcher's own choices for each, with one output and with two (its default
    tile, and the smaller ones it shrinks to for small tensors); and every dtype combination
    the API accepts on NPU (3**4) for the flat, scalar-grad and broadcast layouts at the
    launcher's choices. ``full``: every dtype combination for every layout and tile size.
    For the toolchains in ``launcher_only``: the launcher's choices for the uniform dtypes.
    """
    names = list(DTYPES)
    combos = [(g, x, y, o) for g in names for x in names for y in names for o in names]
    uniform = [(d, d, d, d) for d in names]
    cases = set()
    for toolchain in toolchains:
        brief = toolchain in launcher_only
        for layout_name in LAYOUTS:
            for dtypes in (combos if full and not brief else uniform):
                for reduction in reductions(layout_name, dtypes):
                    for config in ([] if brief else _configs_for(layout_name, dtypes)):
                        cases.add(Case(layout_name, dtypes, config.block_size,
                                       config.multibuffer, transpose=config.transpose,
                                       reduction=reduction, toolchain=toolchain))
                    for negated in (False, True):  # both gradients in one pass: the pair
                        cases.update(launcher_cases(layout_name, dtypes, negated, reduction,
                                                    toolchain))
        if not full and not brief:
            for layout_name in ("flat", "flat_scalar_grad", "broadcast_target"):
                for dtypes in combos:
                    for reduction in reductions(layout_name, dtypes):
                        cases.update(launcher_cases(layout_name, dtypes, False, reduction,
                                                    toolchain))
    cases.update(dataclasses.replace(c, partial_rows=True) for c in list(cases)
                 if has_partial_form(plan_case(c)[1]))
    return sorted(cases, key=lambda c: (c.toolchain, list(LAYOUTS).index(c.layout), c.negated,
                                        c.dtypes, c.block_size, c.multibuffer,
                                        not c.transpose, c.partial_rows))


def reductions(layout_name: str, dtypes) -> Tuple[int, ...]:
    """The reductions whose specialisations differ for the layout: mean, and none where the
    launcher evaluates its product in another order then (a full grad_output)."""
    tensors = LAYOUTS[layout_name][0](*(DTYPES[d] for d in dtypes))
    rows = layout.of_tensors(tensors)
    mean, none = (planning.evaluation_order(rows.scalar_grad, [t.dtype for t in tensors[:3]],
                                            gradient_scale(code, tensors[1].numel()))
                  for code in (Reduction.MEAN, Reduction.NONE))
    return (Reduction.MEAN,) if mean == none else (Reduction.MEAN, Reduction.NONE)


@functools.cache  # follows ub_plan.json: write_ub_plan clears it
def launcher_cases(layout_name: str, dtypes, negated: bool, reduction: int = Reduction.MEAN,
                   toolchain: str = "a2_a3") -> Tuple[Case, ...]:
    """The launcher's choices without a tuned table: its default tile (and multibuffer) for
    the layout and the smaller ones it shrinks to for small tensors of the same kind."""
    config = launcher_config(layout_name, dtypes, negated, reduction, toolchain)
    blocks = [config.block_size]
    while blocks[-1] > configs.DEFAULTS["npu"]["min_block_size"]:
        blocks.append(max(configs.DEFAULTS["npu"]["min_block_size"], blocks[-1] // 4))
    return tuple(Case(layout_name, dtypes, b, config.multibuffer, negated,
                      reduction=reduction, toolchain=toolchain) for b in blocks)


def launcher_config(layout_name: str, dtypes, negated: bool = False,
                    reduction: int = Reduction.MEAN,
                    toolchain: str = "a2_a3") -> configs.KernelConfig:
    """The config the launcher picks for the layout without a tuned table (before shrinking
    its tile for a small tensor): ``planning.default_config``."""
    tensors = LAYOUTS[layout_name][0](*(DTYPES[d] for d in dtypes))
    negated_out = tensors[3].new_empty(tensors[3].shape, dtype=tensors[2].dtype)
    backend = backends.DeviceBackend("npu", planning_chip(toolchain).name, 1, False)
    return planning.default_config(layout.of_tensors(tensors),
                                   (*tensors, negated_out if negated else None), reduction,
                                   backend)


def launcher_block(layout_name: str, dtypes, negated: bool = False,
                   reduction: int = Reduction.MEAN, toolchain: str = "a2_a3") -> int:
    """The tile of ``launcher_config``."""
    return launcher_config(layout_name, dtypes, negated, reduction, toolchain).block_size


def role_of(case: Case) -> str:
    """Who uses the config: ``launcher``, a shipped ``table``, or only the tuner (a case's
    partial-row form: its whole form's role)."""
    case = case.whole
    if case.transpose and case in launcher_cases(case.layout, case.dtypes, case.negated,
                                                 case.reduction, case.toolchain):
        return "launcher"
    if any((c.block_size, c.multibuffer, c.transpose) ==
           (case.block_size, case.multibuffer, case.transpose) for c in shipped_configs()):
        return "table"
    return "candidate"


def _configs_for(layout_name: str, dtypes, negated: bool = False) -> List[configs.KernelConfig]:
    """Every candidate (runnable or not: finding out is the gate's job) and every config of a
    shipped table."""
    tensors, plan = plan_case(Case(layout_name, dtypes, 1024, True, negated))
    transposed = planning.transposed_operands(plan.layout.tile_modes(), negated) \
        if not plan.layout.flat else 0
    unique = {(c.block_size, c.multibuffer, c.transpose): c
              for c in configs.candidate_configs("npu", transposed=transposed,
                                                 runnable_only=False) + shipped_configs()}
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


# --- building and lowering ---------------------------------------------------------------

def plan_case(case: Case, num_units: int = VECTOR_CORES):
    """The case's five operands (meta tensors; the target's gradient last) and the launcher's
    plan for them on a chip of the case's toolchain with ``num_units`` vector cores."""
    tensors = LAYOUTS[case.layout][0](*(DTYPES[d] for d in case.dtypes))
    backend = backends.DeviceBackend("npu", case.chip.name, num_units, False)
    config = configs.KernelConfig(block_size=case.block_size, multibuffer=case.multibuffer,
                                  transpose=case.transpose)
    # The target's gradient has the output's shape and strides, in the target's dtype.
    negated = tensors[3].new_empty(tensors[3].shape, dtype=tensors[2].dtype)
    plan = planning.plan_launch(*tensors, case.reduction, backend, config,
                                negated if case.negated else None)
    if case.partial_rows:
        if not has_partial_form(plan):
            raise ValueError(f"{case}: no partial-row form (flat, or one row per tile)")
        plan = _partial_rows_turned(plan)
        plan = dataclasses.replace(plan, constexprs={**plan.constexprs, "MASK_ROWS": True})
    return (*tensors, negated), plan


def _partial_rows_turned(plan):
    """A partial-row form's operands moved ``DENSE_TRANSPOSED`` as ``TRANSPOSED``: a tile of
    partial rows never holds lines back to back (``planning.tile_modes_for``), so the row count
    the form stands for moves them line by line."""
    names = MODE_OF[:4]
    modes = [plan.constexprs[name] for name in names]
    dense = kernels.DENSE_TRANSPOSED.value
    if dense not in modes:
        return plan
    modes = [kernels.TRANSPOSED.value if mode == dense else mode for mode in modes]
    args, constexprs, _ = planning.strided_arguments(plan.layout, modes, plan.tile)
    return dataclasses.replace(plan, scalar_args=(*plan.scalar_args[:2], *args),
                               constexprs={**plan.constexprs, **constexprs})


def has_partial_form(plan) -> bool:
    """Would a row count the tile does not divide compile another specialisation (the
    strided kernel with several rows per tile, its shapes dividing evenly)?"""
    return plan.constexprs.get("BLOCK_ROWS", 1) > 1 and not plan.constexprs.get("MASK_ROWS")


def specialise(kernel, args: Sequence, constexprs: dict, target: str):
    """What triton-ascend's JIT would compile for ``kernel[grid](*args, **constexprs)`` on
    ``target``: on the 950 series with triton-ascend's 910_95 options."""
    return triton_compat.specialise(kernel, args, constexprs, triton_compat.target("npu", target),
                                    lowering_options(chips.chip(target).toolchain))


def lowering_options(toolchain: chips.Toolchain) -> dict:
    """The ``NPUOptions`` triton-ascend 3.2.0 derives from ``compile_on_910_95`` (its defaults
    for A2/A3: none given)."""
    if not toolchain.compile_on_910_95:
        return {}
    return {"compile_on_910_95": True, "multibuffer": toolchain.multibuffer_default,
            "enable_auto_bind_sub_block": False, "enable_select_analysis": True}


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

def cache_root() -> Optional[Path]:
    """Where both stages' outputs are cached (by content digests and compiler versions:
    an entry cannot go stale): ``$MSE_GRAD_TRITON_CACHE/mse-grad-triton``."""
    root = os.environ.get("MSE_GRAD_TRITON_CACHE", str(Path.home() / ".cache"))
    return Path(root) / "mse-grad-triton" if root else None


def _cache_dir() -> Optional[Path]:
    root = cache_root()
    return root / "ascend-lowering" if root else None


_LOWERED: Dict[str, Tuple[str, str]] = {}  # TTIR digest -> (linalg, error); per process


def _cache_dir() -> Optional[Path]:
    root = os.environ.get("MSE_GRAD_TRITON_CACHE", str(Path.home() / ".cache"))
    return Path(root) / "mse-grad-triton" / "ascend-lowering" if root else None


def _lower_cached(ttir_text: str, spec, ttir, metadata) -> Tuple[str, str]:
    """Linalg text (or the compiler's error) for a TTIR module, cached by the TTIR's digest:
    in memory (the A2 and A3 targets give the same TTIR) and on disk across runs."""
    import triton

    # The 910_95 lowering gives other Linalg for the same TTIR.
    lowering = (" 910_95 select-analysis" if metadata.get("compile_on_910_95") else "")
    digest = hashlib.sha256((triton.__version__ + lowering + ttir_text).encode()).hexdigest()
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


def check_case(case: Case, targets: Sequence[str],
               compiler: Optional[bishengir.Compiler] = None, role: Optional[str] = None,
               model: bool = False) -> Result:
    """Build, lower, compile (for every target of the case's toolchain, where a compiler is
    given: ``compiler`` is A2/A3's, and the 950's is found beside it) and inspect one
    specialisation; ``model``: also model it on ``MODEL_TARGETS`` beside aclnn."""
    result = Result(case, role or role_of(case))
    targets = [t for t in targets if chips.chip(t).toolchain.name == case.toolchain]
    compiler = _compiler_for(compiler, case.toolchain, result)
    tensors, plan = plan_case(case)
    result.path = plan.path
    operands = (*tensors[:4], tensors[4] if case.negated else None)
    result.tile_kind = planning.tile_kind(plan.layout, operands, case.reduction,
                                          case.transpose, chip=case.chip).key
    linalg = _lower_for(plan, tensors, targets, result)
    if linalg is None:
        return result
    result.lowered = True
    block = result.block_size = plan.config.block_size
    accesses = classify(linalg, num_pointers=len(OPERANDS))
    result.access = {name: accesses.kinds[i] for i, name in enumerate(OPERANDS)}
    loaded, stored = planning.tile_itemsizes(plan.layout, operands)
    result.moved_per_element = sum(accesses.block_bytes.values()) / block
    result.tile = plan.tile
    result.transfer_bytes = {OPERANDS[i]: b for i, b in accesses.transfer_bytes.items()}
    result.unit_innermost = {OPERANDS[i]: u for i, u in accesses.unit_innermost.items()}
    result.minimum_per_element = sum(loaded) + sum(stored)
    # A stepped input moves the unit-stride run from its first element to its last: its step
    # times its own bytes (kernels.STEPPED), and no more.
    step = plan.constexprs.get("COL_STEP", 1)
    for k in range(3):
        if plan.constexprs.get(MODE_OF[k]) == kernels.STEPPED.value:
            result.minimum_per_element += (step - 1) * operands[k].element_size()
            result.notes.append(f"{OPERANDS[k]} stepped by {step}: moved as unit-stride runs, "
                                f"every {step}th element kept on chip")
    if compiler is not None:
        _compile_for(linalg, targets, compiler, result)
        if model and result.body is not None:
            _model(result, case, operands)
    _judge(result, plan, [t.element_size() for t in tensors], compiler)
    return result


def _compiler_for(compiler, toolchain: str, result: Result) -> Optional[bishengir.Compiler]:
    """The compiler of ``toolchain`` where the gate runs one (``compiler``: None for none,
    the compilers by toolchain, or A2/A3's alone with the others found beside it), noting in
    ``result`` where it is missing."""
    if compiler is None:
        return None
    if isinstance(compiler, dict):
        found = compiler.get(toolchain)
    elif toolchain == "a2_a3":
        return compiler
    else:
        found = bishengir.find_compiler(toolchain)
    if found is None:
        result.notes.append(f"{chips.TOOLCHAINS[toolchain].compiler} NOT FOUND: Linalg stage "
                            "only")
    return found


def _compile_for(linalg: str, targets: Sequence[str], compiler: bishengir.Compiler,
                 result: Result) -> None:
    """bishengir-compile for every target: the statuses, and the first target's final HIVM
    read (they differ only in the target spec)."""
    cache = cache_root() / "bishengir" if cache_root() else None
    for target in targets:
        compiled = bishengir.compile_linalg(linalg, target, result.case.multibuffer, compiler,
                                            cache)
        result.compiled[target] = compiled.status
        if compiled.status == "error":
            result.error = result.error or f"{target}: {compiled.error}"
        result.required_ub_bytes = max(result.required_ub_bytes, compiled.required_ub_bytes)
        if compiled.hivm:
            read = hivm.read(compiled.hivm)
            result.vector_cores[target] = read.spec.get("VECTOR_CORE_COUNT", 0)
            result.spec[target] = read.spec
            if result.body is None:
                result.body = read.tile
                result.planned_ub_bytes = compiled.planned_ub_bytes
                result.ub_capacity_bytes = read.spec.get("UB_SIZE", 0) // 8


def _model(result: Result, case: Case, operands) -> None:
    """The pipe model of the compiled tile on each of ``MODEL_TARGETS`` for the layout's own
    size, and aclnn's V2 kernel on the same model (modelled, not measured)."""
    for target in MODEL_TARGETS if case.toolchain == "a2_a3" else ():
        cores = result.vector_cores.get(target)
        if not cores:
            continue
        _, plan = plan_case(case, num_units=cores)
        result.modelled[target] = pipe_model.model_tile_call(
            result.body, plan.num_tiles, plan.num_programs, cores, case.multibuffer,
            *minimal_bytes(operands), plan.last_tile_fraction)
        result.aclnn[target] = model_aclnn(operands, cores)
        facts = goal_facts(result, case, operands, plan, cores)
        result.goal_facts[target] = facts
        result.goal_misses[target] = goals.misses(facts)


def goal_facts(result: Result, case: Case, operands, plan, cores: int) -> goals.TileFacts:
    """What issue 21's goals judge the case's compiled tile on (``goals.TileFacts``): the
    tile, and it and aclnn modelled at ``goals.LARGE_ELEMENTS`` or more, the output's
    outermost dimension of more than one element scaled up (``scaled_up``)."""
    scale = scaled_up(operands[3].numel())
    tiles, programs, fraction = launched_tiles(plan, operands[3].numel() * scale, cores)
    large = pipe_model.model_tile_call(result.body, tiles, programs, cores, case.multibuffer,
                                       *minimal_bytes(operands, scale), fraction)
    aclnn = model_aclnn(operands, cores, scale)
    return goals.TileFacts(
        operands[3].numel(), len(plan.layout.sizes), operands[1].element_size(),
        plan.constexprs["ORDER"] == kernels.GUARDED.value, result.body,
        result.planned_ub_bytes / (result.ub_capacity_bytes or 1), large, aclnn,
        aclnn.label.startswith("aclnn V2,"))


def scaled_up(elements: int) -> int:
    """How many times over a layout of ``elements`` is modelled to reach
    ``goals.LARGE_ELEMENTS``: its outermost dimension of more than one element times this
    (the same compiled tile; ``minimal_bytes``)."""
    return max(1, -(-goals.LARGE_ELEMENTS // elements))


def npu_backend(target: str = MODEL_TARGETS[0]) -> backends.DeviceBackend:
    """An Ascend device as the launcher plans for it (no device needed)."""
    return backends.DeviceBackend("npu", target, chips.chip(target).vector_cores, False)


def model_launch(operands, plan, target: str = MODEL_TARGETS[0],
                 compiler: Optional[bishengir.Compiler] = None
                 ) -> Tuple[Optional[pipe_model.Modelled], str]:
    """The modelled device time of ``plan`` on ``operands`` (grad_output, self, target, out,
    negated_out or None; real or meta tensors) for an Ascend ``target``: lowered, compiled
    by bishengir-compile (cached) and its tile modelled with the target's own vector cores.
    None, with the reason, where it does not compile cleanly or there is no compiler."""
    toolchain = chips.chip(target).toolchain.name
    compiler = compiler or bishengir.find_compiler(toolchain)
    if compiler is None:
        return None, f"no {chips.TOOLCHAINS[toolchain].compiler}"
    if target not in pipe_model.MODELLED_CHIPS:
        return None, f"unmodelled: no published cost figures for {target}"
    meta = tuple(None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                            device="meta") for t in operands)
    pointers = (*meta[:4], meta[4] if meta[4] is not None else meta[3])
    result = Result(Case("", ("f32",) * 4, plan.config.block_size, plan.config.multibuffer))
    linalg = _lower_for(plan, pointers, [target], result)
    if linalg is None:
        return None, result.error
    _compile_for(linalg, [target], compiler, result)
    if not result.runnable or result.body is None:
        return None, f"bishengir-compile: {result.status} {result.error}".strip()
    cores = result.vector_cores[target]
    tiles, programs, fraction = launched_tiles(plan, meta[3].numel(), cores)
    return pipe_model.model_tile_call(
        result.body, tiles, programs, cores, plan.config.multibuffer, *minimal_bytes(meta),
        fraction), ""


def launched_tiles(plan, elements: int, cores: int) -> Tuple[int, int, float]:
    """``(num_tiles, num_programs, last_tile_fraction)`` for ``pipe_model``: ``plan``'s
    tile launched on ``cores`` vector cores over ``elements`` output elements (its own, or
    its outermost dimension scaled up: the same tiles, more of them; a flat call shared anew,
    ``planning.equal_share``)."""
    max_programs = cores * plan.config.programs_per_unit
    if plan.moved_flat:
        shares = planning.equal_share(elements, max_programs, plan.config.block_size, True)
        return shares.num_tiles, shares.programs, shares.last_tile_fraction
    tiles = plan.num_tiles * elements // math.prod(plan.layout.sizes)
    return tiles, min(tiles, max_programs), 1.0


def minimal_bytes(operands, scale: int = 1) -> Tuple[int, int]:
    """The least a call must move: each input's own elements once (a broadcast one's too), and
    each output's; ``scale``: with the output's outermost dimension of more than one element
    ``scale`` times as long (what an operand that spans it holds grows with it)."""
    out = operands[3]
    outermost = next((d for d, size in enumerate(out.shape) if size > 1), 0)

    def own(tensor) -> int:
        dim = outermost - (out.dim() - tensor.dim())
        spans = dim >= 0 and tensor.shape[dim] > 1 and tensor.stride(dim) != 0
        return math.prod(size for size, stride in zip(tensor.shape, tensor.stride())
                         if stride != 0) * tensor.element_size() * (scale if spans else 1)
    inputs = sum(own(t) for t in operands[:3])
    return inputs, sum(own(t) for t in operands[3:] if t is not None)


def model_aclnn(operands, cores: int, scale: int = 1) -> pipe_model.Modelled:
    """aclnnMseLossBackward on these operands, modelled as its V2 kernel (REFERENCE.md
    section 1). V2 runs only where the three inputs have one shape; otherwise aclnn runs V1,
    whose source is not public: modelled as V2 after expanding the smaller inputs, and any
    non-contiguous input is first copied to contiguous (``l0op::Contiguous``). ``scale``: on
    ``scale`` times as many elements, laid out alike (``minimal_bytes``)."""
    grad, self, target, out = operands[:4]
    numel, itemsize = out.numel() * scale, self.element_size()
    copies, notes = [], []
    for tensor in (grad, self, target):
        if tuple(tensor.shape) != tuple(out.shape):
            copies.append((0, numel * itemsize))
            notes.append("expand")
        elif not tensor.is_contiguous():
            copies.append((numel * itemsize, numel * itemsize))
            notes.append("contiguous copy")
    label = "aclnn V2" if not copies else "aclnn V1 as V2 + " + ", ".join(sorted(set(notes)))
    return pipe_model.model_aclnn(numel, itemsize, cores, copies,
                                  label=f"{label}, {pipe_model.LABEL}")


def _judge(result: Result, plan, itemsizes: Sequence[int],
           compiler: Optional[bishengir.Compiler]) -> None:
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
    if result.moved_per_element > result.minimum_per_element:
        result.problems.append(f"moves {result.moved_per_element:g} B/element > minimum "
                               f"{result.minimum_per_element}")
    if compiler is None:
        return
    for target, spec in result.spec.items():
        result.problems += spec_mismatches(target, spec)
    for target, status in result.compiled.items():
        if status == "error":
            result.problems.append(f"bishengir-compile error for {target}")
        elif status != "clean" and result.role != "candidate":
            result.problems.append(f"{status} for {target}, a config the {result.role} uses")
    if result.compiled and not result.runnable and result.role == "candidate":
        result.notes.append(f"not runnable ({result.status})")


def spec_mismatches(target: str, spec: Dict[str, int]) -> List[str]:
    """Where the compiler's target spec for ``target`` and ``chips.json`` disagree."""
    chip = chips.chip(target)
    return [f"{target}: the compiler's spec has {entry} {spec.get(entry)}, chips.json "
            f"{field} {getattr(chip, field)}"
            for entry, field, per in SPEC_FACTS if spec.get(entry, 0) != getattr(chip, field) * per]


def check_group(cases: Sequence[Case], targets: Sequence[str],
                compiler: Optional[bishengir.Compiler], model: Sequence[Case] = (),
                candidate_targets: Optional[Sequence[str]] = None) -> List[Result]:
    """Cases that differ only in tile size, smallest first: once one does not plan cleanly,
    the larger candidates are not compiled (they need at least as much UB) but marked. Where
    none plans cleanly, smaller tiles are probed (``PROBE_BLOCKS``) until one does. Tuner
    candidates are compiled for ``candidate_targets`` (default: every target), the configs
    the launcher or a table uses for every target."""
    results, blocked_at = [], None
    for case in sorted(cases, key=lambda c: c.block_size):
        role = role_of(case)
        if blocked_at is not None and role == "candidate":
            result = Result(case, role, notes=[f"not compiled: the {blocked_at} tile of this "
                                               "kind did not plan cleanly"])
            result.compiled = {target: "skipped" for target in targets}
            results.append(result)
            continue
        these = targets if role != "candidate" else (candidate_targets or targets)
        result = check_case(case, these, compiler, role, model=case in model)
        results.append(result)
        if compiler is not None and result.lowered and not result.runnable \
                and blocked_at is None:
            blocked_at = case.block_size
    if compiler is not None and results and blocked_at == min(c.block_size for c in cases):
        first = min(cases, key=lambda c: c.block_size).whole
        for block in (b for b in PROBE_BLOCKS if b < first.block_size):
            probe = check_case(dataclasses.replace(first, block_size=block),
                               candidate_targets or targets, compiler, "candidate")
            probe.notes.append("probe: no candidate tile of this kind plans cleanly")
            results.append(probe)
            if probe.runnable:
                break
    return results


def run(cases: Sequence[Case], targets: Sequence[str], jobs: int,
        compiler: Optional[bishengir.Compiler] = None, model: Sequence[Case] = (),
        progress: Callable[[int], None] = lambda done: None,
        candidate_targets: Optional[Sequence[str]] = None) -> List[Result]:
    """Check ``cases`` in their groups (``Case.group``) on ``jobs`` worker processes (forked:
    the kernel needs no pickling); ``model`` the cases to model too."""
    groups = collections.defaultdict(list)
    for case in cases:
        groups[case.group].append(case)
    model = set(model)
    if jobs <= 1:
        results = []
        for group in groups.values():
            results += check_group(group, targets, compiler, [c for c in group if c in model],
                                   candidate_targets)
            progress(len(group))
        return results
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(check_group, group, targets, compiler,
                               [c for c in group if c in model], candidate_targets): len(group)
                   for group in groups.values()}
        for future in concurrent.futures.as_completed(futures):
            progress(futures[future])
        return [r for future in futures for r in future.result()]


# --- the UB plan: the largest clean tile per kind --------------------------------------

def measured_ub_plan(results: Sequence[Result], toolchain: str = "a2_a3"
                     ) -> Dict[str, Dict[str, int]]:
    """Per ``TileKind`` key of ``toolchain``, the largest tile that planned cleanly on every
    target, with and without multibuffer: the smallest over the layouts of that kind (their
    tiles can differ). Only groups that tried every candidate tile count (a group of one tile
    says nothing about the next)."""
    by_group = collections.defaultdict(list)
    for r in results:
        if r.case.toolchain == toolchain:
            by_group[r.case.group].append(r)
    plan: Dict[str, Dict[str, int]] = {}
    for group in by_group.values():
        if len({r.case.block_size for r in group}) < len(configs.CANDIDATES["npu"]["block_size"]):
            continue
        # A tile is clean where every form of it is (whole tiles, and a partial edge tile).
        blocks = {r.case.block_size for r in group}
        clean = [b for b in blocks if all(r.runnable for r in group if r.case.block_size == b)]
        if not clean or not group[0].tile_kind:
            continue
        field = "multibuffer" if group[0].case.multibuffer else "single"
        entry = plan.setdefault(group[0].tile_kind, {})
        entry[field] = min(entry.get(field, max(clean)), max(clean))
    return dict(sorted(plan.items()))


def write_ub_plan(plans: Dict[str, Dict[str, Dict[str, int]]],
                  compilers: Dict[str, bishengir.Compiler], targets: Sequence[str]) -> Path:
    """Write the measured plan of each toolchain (``plans``) into ``ub_plan.json``, keeping
    the others' as they are."""
    path = configs.UB_PLAN_FILE
    recorded = dict(configs.ub_plan()["plans"])
    for toolchain, entries in plans.items():
        recorded[toolchain] = {
            "compiler": compilers[toolchain].version,
            "targets": [t for t in targets if chips.chip(t).toolchain.name == toolchain],
            "date": datetime.date.today().isoformat(), "entries": entries}
    path.write_text(json.dumps({
        "what": "per toolchain (chips.json) and configs.TileKind key: the largest tile "
                "bishengir-compile plans cleanly (no overflow, no retry, multibuffer kept) on "
                "every target; written by ./run ascend-check --update-ub-plan",
        "plans": dict(sorted(recorded.items()))}, indent=1) + "\n")
    configs.ub_plan.cache_clear()
    launcher_cases.cache_clear()
    return path


def stale_ub_plan(measured: Dict[str, Dict[str, int]], compiler: bishengir.Compiler,
                  toolchain: str = "a2_a3") -> List[str]:
    """Where ``ub_plan.json`` and this run's measurements for ``toolchain`` disagree (for the
    same compiler)."""
    recorded = configs.ub_plan()["plans"].get(toolchain, {})
    if recorded.get("compiler") != compiler.version:
        return [f"ub_plan.json's {toolchain} plan was measured with {recorded.get('compiler')}, "
                f"this is {compiler.version}: run --update-ub-plan"]
    entries = recorded.get("entries", {})
    return [f"{toolchain} {key}: ub_plan.json has {entries.get(key)}, the compiler plans "
            f"{value}" for key, value in measured.items() if entries.get(key) != value]


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


def _required_transfer_bytes(plan, operand: int, itemsizes: Sequence[int]) -> int:
    """The least an operand's block transfer must move: ``MIN_TRANSFER_BYTES`` in a layout of
    ``LARGE_LAYOUT`` elements or more, or all of the operand's elements over the tile's two
    dimensions where they hold less (a tile cannot span more). An operand broadcast along a
    tile dimension moves one vector per tile, as long as the tile's other side (an input of
    one value per row, moved flat: a tile's rows): not judged."""
    mode = plan.constexprs.get(MODE_OF[operand], kernels.TILE.value)  # flat: all walked
    per_row = operand < 3 and plan.constexprs.get(PER_ROW_OF[operand], False)
    if plan.layout.num_rows * plan.layout.row_length < LARGE_LAYOUT or mode not in _WALKED \
            or per_row:
        return 0
    extent = plan.layout.row_length * plan.layout.tile_rows * itemsizes[operand]
    return min(MIN_TRANSFER_BYTES, extent)


_WALKED = (kernels.TILE.value, kernels.TRANSPOSED.value, kernels.DENSE_TRANSPOSED.value,
           kernels.STEPPED.value)
# The strided kernel's mode constexpr of each of OPERANDS.
MODE_OF = ("GRAD_MODE", "SELF_MODE", "TARGET_MODE", "OUT_MODE", "OUT_MODE")
# The flat kernel's constexprs that say an input holds one value per row.
PER_ROW_OF = ("GRAD_PER_ROW", "SELF_PER_ROW", "TARGET_PER_ROW")


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


_STATUS_LABEL = {"clean": "clean", "code-motion retry": "retry", "multibuffer dropped": "mb-drop",
                 "overflow": "overflow", "error": "error", "skipped": "skipped", "": "-"}


def _role_label(result: Result) -> str:
    """Who uses the config, and which variant: +neg both gradients, /none the none order."""
    return (result.role + ("+neg" if result.case.negated else "")
            + ("/none" if result.case.reduction == Reduction.NONE else ""))


def format_table(results: Sequence[Result]) -> str:
    header = (f"{'chips':<6} {'layout':<20} {'dtypes g/x/y/out':<17} {'tile':>9} {'mb':>2} "
              f"{'role':<9} "
              f"{'path':<16} {'access':<6} {'bytes per transfer':<20} {'B/el':>4} {'min':>3} "
              f"{'bisheng':<8} {'UB KB':>6} {'vec':>5} {'rows':>5}  verdict")
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.case
        access = "".join(r.access.get(name, "?") for name in OPERANDS) if r.lowered else "-"
        status = verdict(r.problems, r.error)
        notes = r.notes + ([] if c.transpose else ["strided form: no on-chip turn"])
        if notes:
            status += " (" + "; ".join(notes) + ")"
        tile = f"{r.tile[0]}x{r.tile[1]}" if r.lowered else str(c.block_size)
        ub = r.planned_ub_bytes or r.required_ub_bytes
        body = r.body
        lines.append(
            f"{c.toolchain:<6} {c.layout + ('+part' if c.partial_rows else ''):<20} "
            f"{'/'.join(c.dtypes):<17} {tile:>9} "
            f"{'y' if c.multibuffer else 'n':>2} {_role_label(r):<9} "
            f"{r.path:<16} {access:<6} {_transfer_label(r):<20} {r.moved_per_element:>4.3g} "
            f"{r.minimum_per_element:>3} {_STATUS_LABEL[r.status]:<8} "
            f"{ub / 1024 if ub else 0:>6.1f} {body.vector_calls if body else 0:>5} "
            f"{body.row_loop_calls if body else 0:>5}  {status}")
    return "\n".join(lines)


def format_model_table(results: Sequence[Result]) -> str:
    """Per layout x dtype at the launcher's default: the compiled tile and its modelled time
    beside aclnn's."""
    rows = [r for r in results if r.modelled]
    target = MODEL_TARGETS[0]
    header = (f"{'layout':<20} {'dtype':<5} {'red.':<4} {'tile':>9} {'UB %':>5} "
              f"{'vec/tile':>8} "
              f"{'in rows':>7} {'DMAs':>4} {'min DMA':>7} {'scalar':>6} {'bar':>4} "
              f"{'flags':>5} {'us':>8} {'GB/s':>6} {'roof':>5} {'bound':>5} "
              f"{'aclnn us':>9} {'vs aclnn':>8} {'B1 vs aclnn':>11}  aclnn as")
    lines = [f"Modelled for {target} from the compiled HIVM - not measured "
             f"({pipe_model.SOURCE}); the last ratio for {MODEL_TARGETS[1]} (48 cores)",
             header, "-" * len(header)]
    for r in rows:
        m, a, body = r.modelled.get(target), r.aclnn.get(target), r.body
        if m is None:
            continue
        dmas = [t for t in body.transfers]
        smallest = min((t.burst_bytes for t in dmas), default=0)
        lines.append(
            f"{r.case.layout:<20} {r.case.dtypes[1]:<5} "
            f"{Reduction(r.case.reduction).name.lower():<4} {f'{r.tile[0]}x{r.tile[1]}':>9} "
            f"{100 * r.planned_ub_bytes / (r.ub_capacity_bytes or 1):>5.0f} "
            f"{body.vector_calls:>8} {body.row_loop_calls:>7} {len(dmas):>4} {smallest:>7} "
            f"{body.scalar_gm_accesses + body.scalar_ub_accesses:>6} {body.barriers:>4} "
            f"{body.flags:>5} {m.us:>8.1f} {m.gbps:>6.0f} {100 * m.roofline_fraction:>4.0f}% "
            f"{m.bottleneck:>5} {a.us:>9.1f} {a.seconds / m.seconds:>7.2f}x "
            f"{_ratio(r, MODEL_TARGETS[1]):>11}  {a.label.split(',')[0]}")
    assumptions = sorted({text for r in rows for m in r.modelled.values()
                          for text in m.assumptions})
    lines.append("vector calls the cost table lacks, costed as: "
                 + pipe_model.format_assumptions(assumptions))
    return "\n".join(lines)


def format_unmodelled_table(results: Sequence[Result]) -> str:
    """Per layout x dtype at the launcher's default on the chips without published cost
    figures (the 950 series): the compiled tile, unmodelled."""
    rows = [r for r in results if r.body is not None and r.case.toolchain != "a2_a3"]
    header = (f"{'layout':<20} {'dtype':<5} {'red.':<4} {'tile':>9} {'mb':>2} {'UB %':>5} "
              f"{'vec/tile':>8} {'in rows':>7} {'DMAs':>4} {'min DMA':>7} {'scalar':>6} "
              f"{'bar':>4} {'flags':>5}  model")
    lines = [header, "-" * len(header)]
    for r in rows:
        body = r.body
        smallest = min((t.burst_bytes for t in body.transfers), default=0)
        lines.append(
            f"{r.case.layout:<20} {r.case.dtypes[1]:<5} "
            f"{Reduction(r.case.reduction).name.lower():<4} {f'{r.tile[0]}x{r.tile[1]}':>9} "
            f"{'y' if r.case.multibuffer else 'n':>2} "
            f"{100 * r.planned_ub_bytes / (r.ub_capacity_bytes or 1):>5.0f} "
            f"{body.vector_calls:>8} {body.row_loop_calls:>7} {len(body.transfers):>4} "
            f"{smallest:>7} {body.scalar_gm_accesses + body.scalar_ub_accesses:>6} "
            f"{body.barriers:>4} {body.flags:>5}  unmodelled")
    return "\n".join(lines)


# Goal 6 (small tensors) is judged on the flat layouts, where aclnn's grid leaves cores idle.
SMALL_GOAL_LAYOUTS = ("flat", "flat_scalar_grad")


@dataclasses.dataclass(frozen=True)
class SmallCall:
    """A flat layout at one of ``goals.SMALL_ELEMENTS``, at the tile the launcher shrinks to
    on a modelled target, modelled from that tile's compiled body (None: not compiled)."""

    case: Case                 # the launcher's small-tensor case
    target: str
    elements: int
    ours: Optional[pipe_model.Modelled]
    aclnn: pipe_model.Modelled
    miss: Optional[goals.Miss]


def small_operands(case: Case, elements: int) -> Tuple[torch.Tensor, ...]:
    """A flat case's four operands (meta) at ``elements``."""
    grad, x, y, o = (DTYPES[d] for d in case.dtypes)
    return (_meta([] if case.layout == "flat_scalar_grad" else [elements], grad),
            _meta([elements], x), _meta([elements], y), _meta([elements], o))


def small_calls(results: Sequence[Result]) -> List[SmallCall]:
    """Goal 6 for every modelled flat layout, size and target (``SmallCall``)."""
    compiled = {r.case: r for r in results if r.body is not None and r.runnable}
    calls = []
    for result in results:
        if result.case.layout not in SMALL_GOAL_LAYOUTS:
            continue
        for target, cores in ((t, result.vector_cores.get(t)) for t in result.modelled):
            for elements in goals.SMALL_ELEMENTS:
                operands = small_operands(result.case, elements)
                plan = planning.plan_launch(*operands, result.case.reduction,
                                            npu_backend(target))
                case = dataclasses.replace(result.case, block_size=plan.config.block_size,
                                           multibuffer=plan.config.multibuffer)
                aclnn = model_aclnn(operands, cores)
                body = compiled[case].body if case in compiled else None
                if body is None:
                    calls.append(SmallCall(case, target, elements, None, aclnn,
                                           goals.Miss(6, "its tile was not compiled cleanly")))
                    continue
                ours = pipe_model.model_tile_call(
                    body, plan.num_tiles, plan.num_programs, cores, case.multibuffer,
                    *minimal_bytes(operands), plan.last_tile_fraction)
                calls.append(SmallCall(case, target, elements, ours, aclnn,
                                       goals.small_miss(ours, aclnn)))
    return calls


def format_goals(results: Sequence[Result], small: Sequence[SmallCall]) -> str:
    """Issue 21's goals (``goals.py``) per modelled launcher default, and the small calls."""
    rows = [r for r in results if r.goal_facts]
    target = MODEL_TARGETS[0]
    header = (f"{'layout':<20} {'dtype':<5} {'red.':<4} {'roof':>5} {'bound':>5} "
              f"{'vs aclnn':>8} {'need':>5} {'vec':>4} {'limit':>5}  misses (either target)")
    lines = [f"Issue 21's goals, {pipe_model.LABEL} (mse_grad_triton/tools/goals.py): figures "
             f"for {target} at >= {goals.LARGE_ELEMENTS} elements (the outermost dimension "
             f"scaled up, the same compiled tile); misses on {' or '.join(MODEL_TARGETS)}",
             header, "-" * len(header)]
    for r in rows:
        facts = r.goal_facts.get(target)
        if facts is None:
            continue
        misses = shown_misses(r)
        need = goals.MIN_VS_ACLNN_V2 if facts.aclnn_v2 else goals.MIN_VS_ACLNN_FALLBACK
        lines.append(
            f"{r.case.layout:<20} {r.case.dtypes[1]:<5} "
            f"{Reduction(r.case.reduction).name.lower():<4} "
            f"{100 * facts.large.roofline_fraction:>4.0f}% {facts.large.bottleneck:>5} "
            f"{facts.large_aclnn.seconds / facts.large.seconds:>7.2f}x {need:>4.1f}x "
            f"{facts.body.vector_calls:>4} "
            f"{goals.vector_call_limit(facts.itemsize, facts.guarded):>5}  "
            f"{'; '.join(misses) or 'met'}")
    lines.append(f"small tensors (goal 6: >= {goals.MIN_SMALL_VS_ACLNN:.1f}x aclnn), at the "
                 "tile the launcher shrinks to:")
    for call in small:
        ratio = (f"{call.aclnn.seconds / call.ours.seconds:.2f}x aclnn "
                 f"({call.ours.us:.1f} vs {call.aclnn.us:.1f} us)" if call.ours else "-")
        lines.append(f"  {call.case.layout:<17} {call.case.dtypes[1]:<5} "
                     f"{Reduction(call.case.reduction).name.lower():<4} {call.target:<12} "
                     f"{call.elements:>8} elements, tile {call.case.block_size:>5}: {ratio}"
                     f"{'  MISS: ' + call.miss.text if call.miss else ''}")
    met = sum(not any(r.goal_misses.values()) for r in rows)
    lines.append(f"goals met by {met} of {len(rows)} launcher defaults; small calls: "
                 f"{sum(c.miss is None for c in small)} of {len(small)}")
    return "\n".join(lines)


def shown_misses(result: Result) -> List[str]:
    """The first modelled target's misses, and another's of a goal the first meets."""
    shown, goals_missed = [], set()
    for target in MODEL_TARGETS:
        these = result.goal_misses.get(target, [])
        new = [m for m in these if m.goal not in goals_missed]
        shown += [m.text if target == MODEL_TARGETS[0] else f"{target}: {m.text}"
                  for m in new]
        goals_missed.update(m.goal for m in these)
    return shown


def goal_failures(results: Sequence[Result], small: Sequence[SmallCall]) -> int:
    """How many launcher defaults and small calls miss a goal (``--enforce-goals``)."""
    return sum(any(r.goal_misses.values()) for r in results) + sum(bool(c.miss) for c in small)


def _ratio(result: Result, target: str) -> str:
    """aclnn's modelled time over the kernel's on ``target``."""
    if target not in result.modelled:
        return "-"
    return f"{result.aclnn[target].seconds / result.modelled[target].seconds:.2f}x"


def model_cases(cases: Sequence[Case]) -> List[Case]:
    """What the model tables show: the launcher's default per layout and uniform dtype."""
    return [c for c in cases if c.dtypes[0] == c.dtypes[1] == c.dtypes[2] == c.dtypes[3]
            and not c.negated and c.transpose
            and c == launcher_cases(c.layout, c.dtypes, False, c.reduction, c.toolchain)[0]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="every dtype combination for every layout and tile size")
    parser.add_argument("--targets", type=cli.choice_list(("all", *ALL_TARGETS)),
                        default=list(DEFAULT_TARGETS),
                        help=f"comma-separated, or 'all' ({', '.join(ALL_TARGETS)})")
    parser.add_argument("--jobs", type=cli.positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary")
    parser.add_argument("--quick", action="store_true",
                        help="tuner candidates for the first A2/A3 target only (the launcher's "
                             "and the tables' configs still for every target); on the 950 "
                             "series the launcher's configs for the uniform dtypes")
    parser.add_argument("--enforce-goals", action="store_true",
                        help="fail on every modelled launcher default that misses one of "
                             "issue 21's goals (tools/goals.py); without it they are reported")
    parser.add_argument("--update-ub-plan", action="store_true",
                        help="measure the largest clean tile per kind and write "
                             "mse_grad_triton/ub_plan.json (the launcher's defaults)")
    args = parser.parse_args(argv)
    targets = ALL_TARGETS if "all" in args.targets else tuple(args.targets)
    toolchains = list(dict.fromkeys(chips.chip(t).toolchain.name for t in targets))
    compilers = {tc: bishengir.find_compiler(tc) for tc in toolchains}
    if args.update_ub_plan and (args.quick or None in compilers.values()):
        parser.error("--update-ub-plan needs every toolchain's bishengir-compile (CANN, or pip "
                     "install ascendnpu-ir==1.2.0 on x86_64) and every candidate (no --quick)")
    print(f"Ascend gate: targets {', '.join(targets)}"
          + (f" (tuner candidates: {targets[0]} only)" if args.quick else "")
          + "; TTIR -> Linalg (triton-adapter-opt), then the final HIVM")
    for toolchain, compiler in compilers.items():
        name = chips.TOOLCHAINS[toolchain].compiler
        print(f"{toolchain}: {name}: {compiler.version} ({compiler.source}, {compiler.path})"
              if compiler else f"{toolchain}: {name} NOT FOUND (neither CANN's on $PATH nor "
              "the ascendnpu-ir wheel): ONLY the Linalg stage is checked - NOT the real "
              "compiler's verdict")

    started = time.time()
    results = _run_and_measure(args, targets, toolchains, compilers)
    shown = [r for r in results if r.problems] if args.quiet else results
    print("access per operand grad_output/self/target/out/negated_out: B block transfer (DMA), "
          "S scalar load, U unstructured (per-lane scalar code), - unused; bytes per transfer: "
          "each operand's smallest block transfer, ~ where its innermost stride is not 1 "
          f"(layouts of >= {LARGE_LAYOUT} elements must move >= {MIN_TRANSFER_BYTES} B); "
          "bisheng: clean / retry (code motion off) / mb-drop (multibuffer dropped) / overflow "
          "/ error, the worst over the targets; UB KB: planned (or required, on overflow); "
          "vec: vector calls per tile, rows: of them in per-row loops")
    if shown:
        print(format_table(shown))
    small: List[SmallCall] = []
    if compilers.get("a2_a3") is not None:
        print(format_model_table(results))
        small = small_calls(results)
        print(format_goals(results, small))
    if any(tc != "a2_a3" and compiler for tc, compiler in compilers.items()):
        print("The 950 series at the launcher's defaults (Ascend910_95xx, bishengir-compile-a5, "
              "register-based: vec/tile counts each compute instruction of its vector "
              "functions once): unmodelled, no published cost figures")
        print(format_unmodelled_table([r for r in results if r.case in
                                       set(model_cases([r.case for r in results]))]))
    stale = []
    for toolchain, compiler in compilers.items():
        measured = measured_ub_plan(results, toolchain)
        if compiler is not None and not (args.quick and toolchain != "a2_a3"):
            stale += stale_ub_plan(measured, compiler, toolchain)
    for line in stale:
        print(f"FAIL: UB plan data is stale: {line}")
    failed = sum(bool(r.problems) for r in results) + bool(stale)
    missed = goal_failures(results, small)
    if missed:
        print(f"{'FAIL' if args.enforce_goals else 'not enforced (no --enforce-goals)'}: "
              f"{missed} launcher defaults or small calls miss one of issue 21's goals")
    statuses = collections.Counter(r.status for r in results if r.compiled)
    print("bishengir-compile: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
                                   if any(compilers.values())
                                   else "not run (NOT FOUND): Linalg stage only"))
    unstructured = sorted({r.case.layout for r in results if "U" in r.access.values()})
    print(f"unstructured (allowed) in: {', '.join(unstructured) or 'none'}")
    print(f"{len(results) - failed} passed, {failed} failed ({time.time() - started:.0f} s)"
          + ("" if all(compilers.values()) else " - Linalg stage only where a bishengir-compile "
             "is NOT FOUND"))
    return 1 if failed or (missed and args.enforce_goals) else 0


def _run_and_measure(args, targets, toolchains, compilers) -> List[Result]:
    """Every case; with --update-ub-plan, measure and write the plan first, then check the
    launcher's choices it implies."""
    passes = 2 if args.update_ub_plan else 1
    brief = [tc for tc in toolchains if tc != "a2_a3"] if args.quick else []
    for done in range(passes):
        cases = enumerate_cases(args.full, toolchains, brief)  # follows ub_plan.json
        with tqdm(total=len(cases), disable=not sys.stderr.isatty(), unit="spec") as bar:
            results = run(cases, targets, args.jobs, compilers, model_cases(cases),
                          bar.update, targets[:1] if args.quick else None)
        if done + 1 < passes:  # measured: write, then check what it makes the launcher pick
            plans = {tc: measured_ub_plan(results, tc) for tc in toolchains}
            plans = {tc: plan for tc, plan in plans.items() if plan}
            print(f"wrote {write_ub_plan(plans, compilers, targets)}")
    return results


if __name__ == "__main__":
    sys.exit(main())
