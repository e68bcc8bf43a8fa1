"""Kernel configurations: per-backend defaults (as data), Ascend's UB budget, ``select_config``.

A configuration is the tile size, the number of programs per parallel unit (NPU vector core,
CUDA SM, CPU core) and each backend's own knobs. ``select_config`` is the one place the
launcher asks; tuned tables plug in there.
"""

import dataclasses
import itertools
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

# Ascend A2/A3 unified buffer per vector core (REFERENCE.md section 3).
UB_BYTES = 192 * 1024
# Triton's ``tl.arange`` needs a power of two; the kernel's lanes are int32.
MAX_BLOCK_SIZE = 1 << 16


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
# size is derived from the UB budget (``None``). The minimum keeps transfers long enough to be
# worth a DMA when a small tensor is split over many cores.
DEFAULTS = {
    "npu": {"config": KernelConfig(block_size=0, programs_per_unit=1), "min_block_size": 1024},
    "cuda": {"config": KernelConfig(block_size=2048, programs_per_unit=4, num_warps=8),
             "min_block_size": 512},
    "cpu": {"config": KernelConfig(block_size=1024, programs_per_unit=1), "min_block_size": 512},
}


def ub_footprint_bytes(block_size: int, input_itemsizes: Sequence[int],
                       output_itemsizes: Sequence[int], multibuffer: bool,
                       transposed: int = 0) -> int:
    """Unified-buffer bytes one tile needs on Ascend.

    Per element: every input tile as loaded (``input_itemsizes``: the tensors the kernel loads
    per tile; a one-element grad_output is not one) and its fp32 widening unless it already is
    fp32; the fp32 result; for each output (``output_itemsizes``: out, and the target's
    gradient when both are written) the result narrowed to its dtype unless that is fp32, and
    for the second an fp32 negation; for each of the ``transposed`` operands moved along the
    tile's rows, its turned copy (at most fp32). Multibuffer keeps two of everything in flight.
    """
    per_element = 4 + 4 * (len(output_itemsizes) - 1)  # fp32 result (and its negation)
    per_element += 4 * transposed
    for itemsize in input_itemsizes:
        per_element += itemsize + (4 if itemsize != 4 else 0)
    for itemsize in output_itemsizes:
        per_element += itemsize if itemsize != 4 else 0
    return block_size * per_element * (2 if multibuffer else 1)


def largest_fitting_block(input_itemsizes: Sequence[int], output_itemsizes: Sequence[int],
                          multibuffer: bool, transposed: int = 0) -> int:
    """The largest power-of-two tile that fits the UB budget."""
    block = MAX_BLOCK_SIZE
    while block > 1 and ub_footprint_bytes(block, input_itemsizes, output_itemsizes,
                                           multibuffer, transposed) > UB_BYTES:
        block //= 2
    return block


def select_config(kind: str, input_itemsizes: Sequence[int],
                  output_itemsizes: Sequence[int], row_length: int, num_rows: int,
                  num_units: int, tuned: Optional[KernelConfig] = None,
                  transposed: int = 0) -> KernelConfig:
    """The configuration for one call.

    ``kind`` is the device kind, ``npu``, ``cuda`` or ``cpu``; ``input_itemsizes`` and
    ``output_itemsizes`` the item sizes of the tensors loaded and stored per tile,
    ``transposed`` how many of them are moved along the tile's rows (see
    ``ub_footprint_bytes``). A ``tuned`` config (from the device's tuned table) wins.
    Otherwise the default tile shrinks (by 4, down to a minimum) until there are at least as
    many tiles as parallel units, so small tensors still spread over the device.
    """
    if tuned is not None:
        return tuned
    defaults = DEFAULTS[kind]
    config = defaults["config"]
    block = config.block_size or largest_fitting_block(input_itemsizes, output_itemsizes,
                                                       config.multibuffer, transposed)
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


def candidate_configs(kind: str, input_itemsizes: Sequence[int],
                      output_itemsizes: Sequence[int], transposed: int = 0
                      ) -> List[KernelConfig]:
    """Every configuration the tuner may try for these item sizes (UB-feasible on NPU, with
    ``transposed`` operands moved along the rows; on CUDA, at most
    ``MAX_ELEMENTS_PER_THREAD`` elements per thread)."""
    space = CANDIDATES[kind]
    names = list(space)
    configs = [KernelConfig(**dict(zip(names, values)), source="candidate")
               for values in itertools.product(*(space[n] for n in names))]
    if kind == "npu":
        configs = [c for c in configs if ub_footprint_bytes(
            c.block_size, input_itemsizes, output_itemsizes, c.multibuffer,
            transposed) <= UB_BYTES]
    if kind == "cuda":
        configs = [c for c in configs
                   if c.block_size <= MAX_ELEMENTS_PER_THREAD * 32 * c.num_warps]
    if transposed:  # the strided form beside the on-chip turn
        configs += [replace(c, transpose=False) for c in configs]
    return configs
