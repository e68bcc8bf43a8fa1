"""Kernel configurations: per-backend defaults (as data), Ascend's UB plan, ``select_config``.

A configuration is the tile size, the number of programs per parallel unit (NPU vector core,
CUDA SM, CPU core) and each backend's own knobs. ``select_config`` is the one place the
launcher asks; tuned tables plug in there.

On Ascend the tile is as large as bishengir-compile plans **cleanly** — no UB overflow, no
retry with code motion off, multibuffer kept — for the kind of tile it is (``TileKind``, which
names the chip's toolchain: A2/A3 and the 950 series have their own plans, UB sizes and
multibuffer defaults, ``chips.py``): measured by the Ascend gate and kept as data with the
compiler's version (``ub_plan.json``, written by ``./run ascend-check --update-ub-plan``,
re-checked by every gate run). A kind the data lacks gets the smallest clean tile measured for
its path and row padding.
"""

import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import chips

# What the gate measured: the largest clean tile per TileKind (see the module docstring).
UB_PLAN_FILE = Path(__file__).resolve().parent / "ub_plan.json"
# Triton's ``tl.arange`` needs a power of two; the kernel's lanes are int32.
MAX_BLOCK_SIZE = 1 << 16
# A DMA whose unit-stride runs are shorter than this moves at a fraction of a core's bandwidth
# (about a tenth at 128 B): the largest limit of Huawei's small-packet figures (tilesim
# small_packet, REFERENCE.md section 9; pipe_model.SMALL_PACKET). Where the multibuffered tile
# would move such runs and the single-buffered one would not, the default single-buffers.
FULL_SPEED_RUN_BYTES = 256


@dataclass(frozen=True)
class KernelConfig:
    """One way to launch the kernel."""

    block_size: int              # elements per tile (power of two)
    programs_per_unit: int = 1   # persistent programs per parallel unit
    num_warps: int = 4           # CUDA only
    multibuffer: bool = True     # Ascend only: double-buffer transfers (doubles the UB need)
    # Path "transposed": move an operand whose unit stride runs along the tile's rows along
    # that stride and turn it on chip (False: walk it at its column stride, no turn). Both are
    # candidates: where the turn fails to build or loses, the tuner records the other.
    transpose: bool = True
    source: str = "default"      # where it came from, for explain()


# The fields a tuned table records of a config (all but where it came from).
TABLE_FIELDS = tuple(f.name for f in dataclasses.fields(KernelConfig) if f.name != "source")


def table_fields(config: KernelConfig) -> Dict[str, object]:
    """``config`` as a tuned table's entry records it."""
    return {name: getattr(config, name) for name in TABLE_FIELDS}


# Starting points, not measurements: the tuner measures and replaces them. On NPU the block
# size comes from the compiler's UB plan (0: ``largest_clean_block``). The minimum keeps
# transfers long enough to be worth a DMA when a small tensor is split over many cores.
DEFAULTS = {
    "npu": {"config": KernelConfig(block_size=0, programs_per_unit=1), "min_block_size": 1024},
    "cuda": {"config": KernelConfig(block_size=2048, programs_per_unit=4, num_warps=8),
             "min_block_size": 512},
    "cpu": {"config": KernelConfig(block_size=1024, programs_per_unit=1), "min_block_size": 512},
}


@dataclass(frozen=True)
class TileKind:
    """What bishengir-compile's UB plan for a tile depends on besides its size: the chip's
    toolchain (``chips.Toolchain``: its compiler and UB), the kernel path, how each operand is
    moved, the item sizes loaded and stored per tile, and how much a tile row narrower than
    the chip's UB alignment is padded in the UB."""

    toolchain: str                  # chips.Toolchain.name: which plan of ub_plan.json
    path: str                       # "flat" or "strided"
    modes: Tuple[int, ...]          # strided: layout.tile_modes of grad, self, target, out
    loaded: Tuple[int, ...]         # item sizes of the tensors loaded per tile
    stored: Tuple[int, ...]         # ... and stored
    row_padding: int = 1            # UB bytes per row / bytes the row holds (narrowest operand)
    # An operand walked along the tile's columns at a stride other than 1 (a stepped slice,
    # the strided form of a permuted operand): each element gets a UB slot of its own.
    element_strided: bool = False
    order: int = 0                  # the kernel's ORDER (planning.evaluation_order)

    @property
    def key(self) -> str:
        modes = "".join(map(str, self.modes)) or "-"
        return (f"{self.path}/modes {modes}/in {','.join(map(str, self.loaded))}/out "
                f"{','.join(map(str, self.stored))}/pad {self.row_padding}/order {self.order}"
                + ("/element-strided" if self.element_strided else ""))


def row_padding(row_length: int, itemsizes: Sequence[int], flat: bool,
                ub_align_bytes: int) -> int:
    """How many times over a tile row of ``row_length`` elements (as the launcher tiles it: a
    power of two) is padded in a UB aligned to ``ub_align_bytes`` (``chips.Chip``), for the
    narrowest of ``itemsizes``."""
    if flat:
        return 1
    row_bytes = (1 << max(row_length - 1, 0).bit_length()) * min(itemsizes)
    return max(1, ub_align_bytes // row_bytes)


@functools.cache
def ub_plan() -> dict:
    """The gate's measurements (``ub_plan.json``): per toolchain (``chips.Toolchain.name``) its
    compiler, targets and, per ``TileKind.key``, the largest clean tile with and without
    multibuffer."""
    try:
        data = json.loads(UB_PLAN_FILE.read_text())
    except (OSError, ValueError):
        return {"plans": {}}
    return data if isinstance(data.get("plans"), dict) else {"plans": {}}


def largest_clean_block(kind: TileKind, multibuffer: bool) -> Tuple[int, str]:
    """The largest tile bishengir-compile plans cleanly for ``kind``, and where that comes
    from: ``"measured"`` for this kind; else ``"nearest measured"``, the smallest measured
    for its toolchain, path and row padding (or, failing that, its path); else 1024,
    ``"unmeasured"``."""
    entries = ub_plan()["plans"].get(kind.toolchain, {}).get("entries", {})
    field = "multibuffer" if multibuffer else "single"
    measured = entries.get(kind.key, {}).get(field)
    if measured:
        return measured, "measured"
    same_path = {key: e[field] for key, e in entries.items()
                 if key.startswith(f"{kind.path}/") and e.get(field)}
    padded = [b for key, b in same_path.items()
              if f"/pad {kind.row_padding}/" in key and ("/element-strided" in key) ==
              kind.element_strided]
    if padded or same_path:
        return min(padded or same_path.values()), "nearest measured"
    return 1024, "unmeasured"


def select_config(kind: str, row_length: int, num_rows: int, num_units: int,
                  tuned: Optional[KernelConfig] = None,
                  tile_kind: Optional[TileKind] = None,
                  shortest_run: Optional[Callable[[int], int]] = None) -> KernelConfig:
    """The configuration for one call.

    ``kind`` is the device kind, ``npu``, ``cuda`` or ``cpu``; on NPU ``tile_kind`` says what
    the tile is, and the default tile is the largest bishengir-compile plans cleanly for it
    (``largest_clean_block``) with the chip's toolchain's multibuffer default, or
    single-buffered where only that makes every run at least ``FULL_SPEED_RUN_BYTES``
    (``shortest_run``: the shortest unit-stride run, in bytes, a tile of that many elements
    moves). A ``tuned`` config (from the device's tuned table) wins.
    Otherwise the default tile shrinks (by 4, down to a minimum) until there are at least as
    many tiles as parallel units, so small tensors still spread over the device.
    """
    if tuned is not None:
        return tuned
    defaults = DEFAULTS[kind]
    config = defaults["config"]
    block = config.block_size
    if not block:  # NPU: from the compiler's plan
        multibuffer = chips.TOOLCHAINS[tile_kind.toolchain].multibuffer_default
        block, origin = largest_clean_block(tile_kind, multibuffer)
        origin = f"default ({origin} in ub_plan.json)"
        if multibuffer and shortest_run and shortest_run(block) < FULL_SPEED_RUN_BYTES:
            single, single_origin = largest_clean_block(tile_kind, False)
            if single > block and shortest_run(single) >= FULL_SPEED_RUN_BYTES:
                block, multibuffer = single, False
                origin = (f"default ({single_origin} in ub_plan.json; single-buffered: "
                          f"runs of {FULL_SPEED_RUN_BYTES} B or more)")
        config = replace(config, multibuffer=multibuffer, source=origin)
    # Shrink in steps of 4, so that at most three tile sizes (three compiled variants per
    # dtype and path) serve every size: each is a multi-second compile on Ascend.
    minimum = defaults["min_block_size"]
    while block > minimum and -(-row_length * num_rows // block) < num_units:
        block = max(minimum, block // 4)
    return replace(config, block_size=block)


# The search space the tuner explores and the Ascend lowering check compiles, per backend:
# every combination of these values (on NPU, minus those over the UB budget).
CANDIDATES = {
    "npu": {"block_size": (1024, 2048, 4096, 8192, 16384), "programs_per_unit": (1, 2),
            "multibuffer": (True, False)},
    "cuda": {"block_size": (512, 1024, 2048, 4096, 8192), "programs_per_unit": (2, 4, 8),
             "num_warps": (4, 8)},
    "cpu": {"block_size": (256, 1024, 4096), "programs_per_unit": (1,)},
}


# CUDA: elements each thread holds per operand. At 16 (e.g. 2048 x fp16 over 4 warps) ptxas
# spills on sm_90/sm_100; at 8 no specialisation does (./run cuda-check, Triton 3.9). A tile
# with an operand turned on chip (through shared memory) is held at exactly 4: a 64 x 32 fp32
# tile over 8 warps (8 per thread) spilled 16 B on sm_90, and so did a 32 x 16 fp16 tile over
# 8 warps (2 per thread); at 4 none does.
MAX_ELEMENTS_PER_THREAD = 8
ELEMENTS_PER_THREAD_TRANSPOSED = 4


def fit_for_transposes(kind: str, config: KernelConfig, transposed: int) -> KernelConfig:
    """``config`` for a tile that turns ``transposed`` operands on chip: on CUDA, tile and
    warps sized so that each thread holds ``ELEMENTS_PER_THREAD_TRANSPOSED`` elements."""
    if kind != "cuda" or not transposed:
        return config
    per_warp = 32 * ELEMENTS_PER_THREAD_TRANSPOSED
    block = min(config.block_size, per_warp * config.num_warps)
    return replace(config, block_size=block, num_warps=max(1, block // per_warp))


def candidate_configs(kind: str, tile_kind: Optional[TileKind] = None,
                      transposed: int = 0, runnable_only: bool = True) -> List[KernelConfig]:
    """Every configuration the tuner may try: on NPU (``tile_kind``) only tiles
    bishengir-compile plans cleanly (``largest_clean_block``) unless not ``runnable_only``
    (the gate compiles them all); on CUDA at most ``MAX_ELEMENTS_PER_THREAD`` elements per
    thread; where ``transposed`` operands are turned on chip, also the strided form (not on
    NPU)."""
    space = CANDIDATES[kind]
    names = list(space)
    configs = [KernelConfig(**dict(zip(names, values)), source="candidate")
               for values in itertools.product(*(space[n] for n in names))]
    if kind == "npu" and runnable_only:
        configs = [c for c in configs
                   if c.block_size <= largest_clean_block(tile_kind, c.multibuffer)[0]]
    if kind == "cuda":
        configs = [c for c in configs
                   if c.block_size <= MAX_ELEMENTS_PER_THREAD * 32 * c.num_warps]
    # The strided form beside the on-chip turn, except on Ascend: there it walks the operand
    # element by element, each in a 32-byte UB slot moved as a DMA of its own (bishengir-
    # compile 1.2.0: a transposed self overflows the UB at every candidate tile; channels-last
    # plans 1024, by the pipe model 8 % of the roofline, 0.19x aclnn). The turn is the path.
    if transposed and kind != "npu":
        configs += [replace(c, transpose=False) for c in configs]
    return configs
