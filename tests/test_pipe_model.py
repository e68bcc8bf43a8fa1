"""The pipe model (``tools/pipe_model.py``) against figures worked out by hand from Huawei's
published constants (REFERENCE.md section 9) for the two abridged HIVM modules of
``tests/hivm/``."""

from pathlib import Path

import pytest

from mse_grad_triton.tools import hivm, pipe_model

HERE = Path(__file__).resolve().parent / "hivm"
CYCLES_PER_SECOND = 1.85e9
# Per-core GB/s with 40 cores moving data at once: HBM -> UB 41.5595, UB -> HBM 42.56075.
IN_40, OUT_40 = 41.5595e9, 42.56075e9


def _tile(name: str) -> hivm.TileBody:
    return hivm.read((HERE / f"{name}.mlir").read_text()).tile


def test_a_flat_tile_by_hand():
    cycles = pipe_model.tile_cycles(_tile("flat_f32_1024"), cores=40)
    # Two 4 KB loads (+50 cycles startup each), one 4 KB store (+40).
    assert cycles.mte_in == pytest.approx(2 * (4096 / IN_40 * CYCLES_PER_SECOND + 50))
    assert cycles.mte_out == pytest.approx(4096 / OUT_40 * CYCLES_PER_SECOND + 40)
    # vsub and vmuls (costed as VMUL) on 4096 bytes: 16 repeats x 2 + head 13 = 45 each.
    assert cycles.vector == 2 * 45 and cycles.scalar == 0
    assert cycles.bottleneck == "MTE" and cycles.assumptions == ("vmuls as VMUL",)
    # 400 tiles over 40 programs on 40 cores: 10 tiles each, the pipes overlapping
    # (multibuffer): 10 x MTE + the first tile's vector work.
    call = pipe_model.model_call(cycles, num_tiles=400, num_programs=40, cores=40,
                                 multibuffer=True, minimal_in=400 * 8192,
                                 minimal_out=400 * 4096)
    mte = cycles.mte_in + cycles.mte_out
    assert call.seconds == pytest.approx((10 * mte + 90) / CYCLES_PER_SECOND)
    assert (call.tiles_per_core, call.waves, call.cores, call.bottleneck) == (10, 1, 40, "MTE")
    roofline = (400 * 8192 / IN_40 + 400 * 4096 / OUT_40) / 40
    assert call.roofline_seconds == pytest.approx(roofline)
    assert call.gbps == pytest.approx(400 * 12288 / call.seconds / 1e9)
    # Without multibuffer every pipe waits for the others.
    single = pipe_model.model_call(cycles, 400, 40, 40, False, 400 * 8192, 400 * 4096)
    assert single.seconds == pytest.approx(10 * (mte + 90) / CYCLES_PER_SECOND)


def test_a_short_row_tile_by_hand():
    cycles = pipe_model.tile_cycles(_tile("rows_of_4_f32"), cores=40)
    # vabs on 2032 bytes: 8 repeats x 1 + head 14 = 22; 64 compares (as VCMPV_GE) on 16
    # bytes: 1 x 2 + 14 = 16 each.
    assert cycles.vector == 22 + 64 * 16
    assert cycles.scalar == 64 * 5  # UB scalar loads at 5 cycles
    # self's 1024 bytes move in 16-byte packets (one per UB row padded to 32 B), the target's
    # 256 in 4-byte ones: b / (a*b + bytes / 2^30) with the under-64-B pair (0.295, 12.061),
    # about 3.39 GB/s either way.
    def small(packet):
        return 12.061 / (0.295 * 12.061 + packet / 2**30) * 1e9
    assert cycles.mte_in == pytest.approx(1024 / small(16) * CYCLES_PER_SECOND + 50
                                          + 256 / small(4) * CYCLES_PER_SECOND + 50)
    assert cycles.mte_out == pytest.approx(1024 / small(16) * CYCLES_PER_SECOND + 40)
    # The small packets outweigh even the 64 per-row compares.
    assert cycles.bottleneck == "MTE" and cycles.mte > cycles.vector
    # A partial last tile (a quarter full) moves a quarter of a tile's bytes.
    whole = pipe_model.model_call(cycles, 80, 40, 40, True, 1, 1)
    partial = pipe_model.model_call(cycles, 80, 40, 40, True, 1, 1, last_tile_fraction=0.25)
    assert whole.seconds - partial.seconds == pytest.approx(0.75 * cycles.mte
                                                            / CYCLES_PER_SECOND)


def test_waves_when_programs_outnumber_cores():
    cycles = pipe_model.TileCycles(mte_in=100, mte_out=0, vector=10, scalar=0)
    call = pipe_model.model_call(cycles, num_tiles=96, num_programs=96, cores=48,
                                 multibuffer=True, minimal_in=1, minimal_out=1)
    assert (call.waves, call.tiles_per_core) == (2, 2)


def test_aclnns_v2_tile_by_hand():
    # fp32, 2^20 elements on 40 cores: tiles of 12288, ceil(2^20 / 12288) = 86 > 40 cores.
    modelled = pipe_model.model_aclnn(1 << 20, 4, 40)
    assert modelled.cores == 40
    per_core = -(-(1 << 20) // 40)                  # 26215 elements
    assert modelled.tiles_per_core == -(-per_core // 12288)  # 3
    # fp16 at 2^16 elements: ceil(65536 / 8192) = 8 cores, no double buffering.
    small = pipe_model.model_aclnn(1 << 16, 2, 40)
    assert small.cores == 8 and small.tiles_per_core == 1
    tile = pipe_model.aclnn_tile(2, 8192)
    # 3 casts up (16 KB fp16: 64 repeats x 2 + 13), Sub/Muls/Mul on 32 KB fp32 (128 x 2 + 13),
    # one cast down (on its fp32 source: 128 x 1 + 16).
    assert pipe_model.tile_cycles(tile, 8).vector == 3 * (64 * 2 + 13) + 3 * (128 * 2 + 13) \
        + 128 + 16


def test_every_hivm_vector_call_of_the_kernel_is_costed():
    for name in ("vsub_1d_float", "vabs_2d_float", "vcmp_eq_1d_half", "vsel_vv_1d_bool_float",
                 "vcast_bfloat16_t_to_float_1d_with_mode", "vcast_float_to_half_2d_with_mode",
                 "broadcast_scalar_half_to_1d", "vmuls_vs_1d_float", "vadds_vs_1d_float"):
        key, _ = pipe_model.intrinsic(name)
        assert (key, "fp32") in pipe_model.VECTOR_CYCLES or (key, "fp16") in \
            pipe_model.VECTOR_CYCLES
    assert pipe_model.intrinsic("vexotic_1d_float")[1] == "vexotic (not in the table) as VADD"


def test_the_default_planning_rule_reads_the_small_packet_figures():
    from mse_grad_triton import configs
    # configs.FULL_SPEED_RUN_BYTES is the largest limit below which a packet is slowed
    assert pipe_model.SMALL_PACKET[-1][0] == configs.FULL_SPEED_RUN_BYTES
    full = pipe_model.per_core_gbps(pipe_model.HBM_TO_UB_GBPS, 40)
    assert pipe_model.packet_gbps(pipe_model.HBM_TO_UB_GBPS, 40, 128) < full / 4
    assert pipe_model.packet_gbps(pipe_model.HBM_TO_UB_GBPS, 40,
                                  configs.FULL_SPEED_RUN_BYTES) == full
