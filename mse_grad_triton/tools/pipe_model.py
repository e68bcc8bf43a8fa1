"""A pipe model of a compiled tile on Ascend 910B: **modelled, not measured**.

Every constant is Huawei's own, published in triton-ascend's cost model
(``third_party/ascend/costmodel/configs/ascend_910b.json``, migrated from their tilesim;
REFERENCE.md section 9), and is cited where it is defined below. What the model reads is the
compiled tile (``hivm.TileBody``: bishengir-compile's final HIVM); what it cannot know: hivmc's
own code (instruction scheduling, the real repeat and stride encoding of each vector call),
how the pipes really overlap, pipe_barrier costs in a pure vector kernel, and aclnn's V1 kernel
(its source is not public).

Per tile, on one vector core with ``cores`` of them moving data at once:

- MTE: bytes in at the per-core HBM->UB bandwidth plus bytes out at UB->HBM, each DMA's packet
  under 256 B at the small-packet bandwidth, plus each DMA's startup. A packet is the DMA's
  unit-stride run on both sides (``hivm.Transfer.burst_bytes``): a row landing in a UB row
  padded to 32 B is a packet of its own, however the rows lie in HBM (this reading of
  "packet" is the model's assumption; Huawei's figures give the bandwidth per packet size).
  On 910B a vector core's MTE2 (in) and MTE3 (out) share one pipe: their times add.
- V: per vector call, compute x repeats + head cycles, repeats = ceil(bytes walked / 256).
- S: scalar accesses in the tile, at the memory's latency.

A tile costs max(MTE, V, S) with multibuffer (the pipes overlap; plus one tile's fill), their
sum without. A call: the tiles each core runs (a persistent grid: programs over cores in
waves), the partial last tile's bytes scaled by how full it is.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

from .. import chips
from .hivm import TileBody

SOURCE = "triton-ascend third_party/ascend/costmodel/configs/ascend_910b.json (REFERENCE.md §9)"
LABEL = "modelled from the compiled HIVM - not measured"
# The chips these figures are for: the 910B (A2) series. Huawei published none for the A3 or
# the 950 series, whose tiles are listed unmodelled.
MODELLED_CHIPS = tuple(name for name, chip in chips.known().items() if chip.series == "A2")

# clock.frequency_ghz
CLOCK_HZ = 1.85e9
# bandwidth_tables["hbm:ub"] / ["ub:hbm"].per_core_gbps: GB/s per vector core with n cores
# moving data at once (tilesim bandwidth_910B1.csv).
HBM_TO_UB_GBPS = (
    100.9, 64.5, 88.29666667, 77.945, 84.852, 80.82666667, 73.31571429, 68.93375, 73.22888889,
    67.586, 71.13727273, 68.08833333, 69.14615385, 72.60785714, 74.99866667, 73.26375,
    72.05058824, 70.66833333, 73.27, 68.7705, 68.72190476, 66.07909091, 66.33826087,
    65.08041667, 65.3448, 62.61884615, 62.15148148, 58.95964286, 58.23, 56.146, 56.48,
    53.3059375, 51.55151515, 49.97264706, 48.51342857, 46.525, 46.06621622, 43.74315789,
    42.97435897, 41.5595, 40.44609756, 39.31904762, 38.47302326, 37.03886364, 36.33777778,
    35.40717391, 34.83446809, 33.68666667)
UB_TO_HBM_GBPS = (
    188.46, 210.53, 117.2733333, 130.295, 108.964, 119.54, 117.280446425, 115.02089285,
    112.761339275, 110.5017857, 108.242232125, 105.98267855, 103.723124975, 101.4635714,
    100.0593333, 100.373125, 96.81470588, 98.78555556, 90.44578947, 88.896, 83.38571429,
    83.77727273, 77.92608696, 76.65166667, 71.0792, 70.58615385, 66.58407407, 66.42357143,
    61.56655172, 59.854, 56.1083871, 55.9315625, 53.0, 51.53, 49.45828571, 48.11111111,
    46.14540541, 45.26947368, 43.51512821, 42.56075, 40.9797561, 40.19857143, 38.46488372,
    38.07454545, 36.684, 36.17608696, 34.70893617, 34.34291667)
# tilesim.small_packet: a packet under 64/128/256 B moves at bw = b / (a*b + bytes / 2^30) GB/s.
SMALL_PACKET = ((64, 0.295, 12.061), (128, 0.272, 16.820), (256, 0.322, 24.004))
# calibration.startup_latencies (cycles): per DMA in (MTE2) and out (MTE3).
MTE2_STARTUP_CYCLES, MTE3_STARTUP_CYCLES = 50, 40
# memory_spaces.*.latency_cycles: a scalar access to global memory (HBM) and to the UB.
SCALAR_GM_CYCLES, SCALAR_UB_CYCLES = 200, 5
REPEAT_BYTES = 256  # vector.width_bytes: one repeat
# vec_cycle_tables: (compute, head) cycles per (intrinsic, "fp16" | "fp32"); fp16 covers bf16.
VECTOR_CYCLES: Dict[Tuple[str, str], Tuple[int, int]] = {
    ("VADD", "fp16"): (2, 13), ("VADD", "fp32"): (2, 13),
    ("VSUB", "fp16"): (2, 13), ("VSUB", "fp32"): (2, 13),
    ("VMUL", "fp16"): (2, 13), ("VMUL", "fp32"): (2, 13),
    ("VDIV", "fp16"): (8, 13), ("VDIV", "fp32"): (4, 13),
    ("VMAX", "fp16"): (2, 14), ("VMAX", "fp32"): (2, 14),
    ("VMIN", "fp16"): (2, 14), ("VMIN", "fp32"): (2, 14),
    ("VABS", "fp16"): (1, 13), ("VABS", "fp32"): (1, 14),
    ("VSEL", "fp16"): (2, 13), ("VSEL", "fp32"): (2, 13),
    ("VCMPV_NE", "fp16"): (2, 14), ("VCMPV_NE", "fp32"): (2, 14),
    ("VCMPV_GE", "fp16"): (2, 14), ("VCMPV_GE", "fp32"): (2, 14),
    ("CMPV_EQ", "fp16"): (2, 13), ("CMPV_EQ", "fp32"): (2, 13),
    ("VCOPY", "fp16"): (1, 11), ("VCOPY", "fp32"): (1, 11),
    ("CONV_F322F16", "fp32"): (1, 16), ("CONV_F162F32", "fp16"): (2, 13),
    ("CONV_F322BF16", "fp32"): (1, 14), ("CONV_BF162F32", "fp16"): (2, 14),
}
# HIVM library calls -> the table's intrinsic, by name prefix; and where the table has no
# entry of its own, the twin assumed (reported with every figure that uses it).
_INTRINSICS = (
    ("vcast_bfloat16_t_to_float", "CONV_BF162F32", None),
    ("vcast_half_to_float", "CONV_F162F32", None),
    ("vcast_float_to_bfloat16_t", "CONV_F322BF16", None),
    ("vcast_float_to_half", "CONV_F322F16", None),
    ("vcast_bool_to_half", "CONV_F162F32", "vcast_bool_to_half as CONV_F162F32"),
    ("vsub", "VSUB", None), ("vadds", "VADD", "vadds as VADD"), ("vadd", "VADD", None),
    ("vmuls", "VMUL", "vmuls as VMUL"), ("vmul", "VMUL", None),
    ("vdiv", "VDIV", None), ("vmax", "VMAX", None), ("vmin", "VMIN", None),
    ("vabs", "VABS", None), ("vsel", "VSEL", None),
    ("vcmp_eq", "CMPV_EQ", None), ("vcmp_ne", "VCMPV_NE", None), ("vcmp_ge", "VCMPV_GE", None),
    ("vcmp_", "VCMPV_GE", "vcmp_le/lt/gt as VCMPV_GE"),
    ("broadcast_scalar", "VCOPY", "a scalar broadcast as VCOPY"),
    ("vcopy", "VCOPY", None),
    ("transpose", "VCOPY", "an on-chip transpose as VCOPY over its bytes"),
    ("interleave", "VCOPY", "interleave as VCOPY over its bytes"),
    ("deinterleave", "VCOPY", "deinterleave as VCOPY over its bytes"),
)


@dataclasses.dataclass(frozen=True)
class TileCycles:
    """One tile's cycles per pipe."""

    mte_in: float
    mte_out: float
    vector: float
    scalar: float
    assumptions: Tuple[str, ...] = ()

    @property
    def mte(self) -> float:  # MTE2 and MTE3 share one pipe on 910B
        return self.mte_in + self.mte_out

    @property
    def pipes(self) -> Dict[str, float]:
        return {"MTE": self.mte, "V": self.vector, "S": self.scalar}

    @property
    def bottleneck(self) -> str:
        return max(self.pipes, key=self.pipes.get)


@dataclasses.dataclass(frozen=True)
class Modelled:
    """A call's modelled device time (not measured)."""

    seconds: float
    minimal_bytes: int
    roofline_seconds: float
    bottleneck: str          # "MTE", "V" or "S"
    cores: int               # cores kept busy
    tiles_per_core: int
    waves: int
    label: str = LABEL
    assumptions: Tuple[str, ...] = ()

    @property
    def us(self) -> float:
        return self.seconds * 1e6

    @property
    def gbps(self) -> float:
        return self.minimal_bytes / self.seconds / 1e9 if self.seconds else 0.0

    @property
    def roofline_fraction(self) -> float:
        return self.roofline_seconds / self.seconds if self.seconds else 0.0


def per_core_gbps(table: Sequence[float], cores: int) -> float:
    """A per-core bandwidth with ``cores`` moving data at once (the table's 1..48)."""
    return table[min(max(cores, 1), len(table)) - 1]


def packet_gbps(table: Sequence[float], cores: int, packet_bytes: int) -> float:
    """The bandwidth of one DMA whose unit-stride run is ``packet_bytes`` long."""
    for limit, a, b in SMALL_PACKET:
        if packet_bytes < limit:
            return min(b / (a * b + packet_bytes / 2**30), per_core_gbps(table, cores))
    return per_core_gbps(table, cores)


def intrinsic(name: str) -> Tuple[str, Optional[str]]:
    """The cost table's intrinsic for a HIVM vector call, and the assumption made, if any."""
    for prefix, key, assumption in _INTRINSICS:
        if name.startswith(prefix):
            return key, assumption
    return "VADD", f"{name.split('_')[0]} (not in the table) as VADD"


def vector_cycles(name: str, span_bytes: int, itemsize: int) -> Tuple[int, Optional[str]]:
    """One vector call's cycles: compute x repeats + head."""
    key, assumption = intrinsic(name)
    width = "fp16" if itemsize <= 2 else "fp32"
    compute, head = VECTOR_CYCLES.get((key, width)) or VECTOR_CYCLES[(key, "fp32" if width ==
                                                                     "fp16" else "fp16")]
    return compute * math.ceil(max(span_bytes, 1) / REPEAT_BYTES) + head, assumption


def _mte_cycles(bytes_: int, packet: int, table: Sequence[float], cores: int,
                startup: int) -> float:
    return bytes_ / (packet_gbps(table, cores, packet) * 1e9) * CLOCK_HZ + startup


def tile_cycles(body: TileBody, cores: int) -> TileCycles:
    """One tile body's cycles per pipe, with ``cores`` vector cores moving data at once."""
    mte = {"in": 0.0, "out": 0.0}
    for transfer in body.transfers:
        table, startup = ((HBM_TO_UB_GBPS, MTE2_STARTUP_CYCLES) if transfer.direction == "in"
                          else (UB_TO_HBM_GBPS, MTE3_STARTUP_CYCLES))
        mte[transfer.direction] += transfer.calls * _mte_cycles(
            transfer.bytes, transfer.burst_bytes, table, cores, startup)
    vector, assumptions = 0.0, []
    for op in body.vector_ops:
        cycles, assumption = vector_cycles(op.name, op.span_bytes, op.itemsize)
        vector += op.calls * cycles
        if assumption and assumption not in assumptions:
            assumptions.append(assumption)
    scalar = body.scalar_gm_accesses * SCALAR_GM_CYCLES + body.scalar_ub_accesses * \
        SCALAR_UB_CYCLES
    return TileCycles(mte["in"], mte["out"], vector, scalar, tuple(assumptions))


def roofline_seconds(bytes_in: int, bytes_out: int, cores: int) -> float:
    """The least time: the minimal bytes over every core at its MTE bandwidth (in and out on
    one shared pipe per core)."""
    return (bytes_in / per_core_gbps(HBM_TO_UB_GBPS, cores)
            + bytes_out / per_core_gbps(UB_TO_HBM_GBPS, cores)) / cores / 1e9


def model_call(tile: TileCycles, num_tiles: int, num_programs: int, cores: int,
               multibuffer: bool, minimal_in: int, minimal_out: int,
               last_tile_fraction: float = 1.0, label: str = LABEL) -> Modelled:
    """A launch of ``num_programs`` persistent programs over ``num_tiles`` tiles of cost
    ``tile`` on a chip of ``cores`` vector cores. ``tile`` must be modelled with the cores
    this call keeps busy (``busy_cores``)."""
    busy = busy_cores(num_programs, cores)
    waves = -(-num_programs // cores)
    tiles = -(-num_tiles // num_programs) * waves
    per_tile = max(tile.pipes.values()) if multibuffer else sum(tile.pipes.values())
    fill = sum(tile.pipes.values()) - per_tile   # the first tile's pipes do not overlap
    cycles = tiles * per_tile + fill - (1 - last_tile_fraction) * tile.mte
    return Modelled(cycles / CLOCK_HZ, minimal_in + minimal_out,
                    roofline_seconds(minimal_in, minimal_out, cores), tile.bottleneck, busy,
                    tiles, waves, label, tile.assumptions)


def model_tile_call(body: TileBody, num_tiles: int, num_programs: int, cores: int,
                    multibuffer: bool, minimal_in: int, minimal_out: int,
                    last_tile_fraction: float = 1.0, label: str = LABEL) -> Modelled:
    """``model_call`` for a compiled tile ``body``, its cycles modelled with the cores the
    call keeps busy."""
    cycles = tile_cycles(body, busy_cores(num_programs, cores))
    return model_call(cycles, num_tiles, num_programs, cores, multibuffer, minimal_in,
                      minimal_out, last_tile_fraction, label)


def busy_cores(num_programs: int, cores: int) -> int:
    return max(1, min(num_programs, cores))


# --- aclnn's V2 kernel (REFERENCE.md section 1), on the same model -------------------------

ACLNN_TILE = {4: 12288, 2: 8192}         # elements per tile by item size (mse_loss_grad_v2)
ACLNN_DOUBLE_BUFFER_ABOVE = 65536         # elements


def aclnn_tile(itemsize: int, elements: int) -> TileBody:
    """aclnn V2's tile as a TileBody: DataCopyPad x3 in, Sub, Muls, Mul in fp32 (fp16/bf16:
    three casts up, one down), DataCopyPad out."""
    from .hivm import Memref, Transfer, VectorOp

    gm = Memref((elements,), "f32" if itemsize == 4 else "f16", (1,), "gm")
    ops = []
    if itemsize == 2:
        ops += [VectorOp("vcast_half_to_float", elements, elements * 2, 2, 3, False)]
    ops += [VectorOp(name, elements, elements * 4, 4, 1, False)
            for name in ("vsub", "vmuls", "vmul")]
    if itemsize == 2:
        ops += [VectorOp("vcast_float_to_half", elements, elements * 4, 4, 1, False)]
    return TileBody("aclnn V2 tile", ops, [Transfer("in", gm, 3), Transfer("out", gm, 1)])


def model_aclnn(numel: int, itemsize: int, cores: int,
                copies: Sequence[Tuple[int, int]] = (),
                label: str = "aclnn V2, " + LABEL) -> Modelled:
    """aclnnMseLossBackward's V2 kernel on ``numel`` elements: tiles of ``ACLNN_TILE``
    elements, the work split evenly over ceil(numel / tile) cores at most, double buffering
    above 65536 elements. ``copies``: (bytes read, bytes written) of each copy made first (an
    expanded input for V1, a non-contiguous input made contiguous), each modelled as a copy
    kernel at the roofline of every core."""
    tile_elements = ACLNN_TILE[itemsize]
    busy = max(1, min(cores, -(-numel // tile_elements)))
    per_core = -(-numel // busy)
    tiles = -(-per_core // tile_elements)
    body = aclnn_tile(itemsize, min(tile_elements, per_core))
    modelled = model_tile_call(body, tiles * busy, busy, cores,
                               numel > ACLNN_DOUBLE_BUFFER_ABOVE, 3 * numel * itemsize,
                               numel * itemsize, label=label)
    extra = sum(roofline_seconds(read, written, cores) for read, written in copies)
    return dataclasses.replace(modelled, seconds=modelled.seconds + extra)


def format_assumptions(assumptions: List[str]) -> str:
    return "; ".join(sorted(set(assumptions))) or "none"
