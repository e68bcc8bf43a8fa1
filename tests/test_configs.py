"""Configurations: the defaults' choices, and on Ascend the tile sizes bishengir-compile plans
cleanly (``ub_plan.json``, measured by the gate: ``tests/test_ascend_check.py`` re-checks it)."""

import json
from dataclasses import replace

import pytest

from mse_grad_triton import chips, configs


def A2(*fields, **named) -> configs.TileKind:  # noqa: N802 (reads as the constructor)
    """A TileKind on A2/A3."""
    return configs.TileKind("a2_a3", *fields, **named)


# fp32 with a 0-d grad (scalar factors); bf16 with a full grad and mean (guarded); rows of 4
# in fp32 against a broadcast target (moved flat), and rows of 8 (a 2-D tile).
FLAT_F32 = A2("flat", (), (4, 4), (4,), order=2)
KINDS = [FLAT_F32, A2("flat", (), (2, 2, 2), (2,), order=0),
         A2("rows of 4", (3, 0, 1, 0), (4, 4), (4,), order=2),
         A2("strided", (3, 0, 1, 0), (4, 4), (4,), order=2)]


@pytest.fixture
def ub_plan(tmp_path, monkeypatch):
    """``ub_plan({key: {"multibuffer": n, "single": m}}, toolchain)`` puts a UB plan in force
    for a toolchain (``chips.Toolchain.name``)."""
    def put(entries, toolchain="a2_a3"):
        path = tmp_path / f"ub_plan{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps({"plans": {toolchain: {"compiler": "test",
                                                          "entries": entries}}}))
        monkeypatch.setattr(configs, "UB_PLAN_FILE", path)
        configs.ub_plan.cache_clear()

    yield put
    configs.ub_plan.cache_clear()


@pytest.mark.parametrize("toolchain", sorted(chips.TOOLCHAINS))
def test_the_shipped_plan_names_its_compiler_and_measures_the_common_kinds(toolchain):
    plan = configs.ub_plan()["plans"][toolchain]
    assert plan["compiler"].startswith("bishengir-compile ")
    assert set(plan["targets"]) <= set(chips.targets(toolchain))
    multibuffer = chips.TOOLCHAINS[toolchain].multibuffer_default
    for kind in KINDS:
        block, origin = configs.largest_clean_block(replace(kind, toolchain=toolchain),
                                                    multibuffer)
        assert origin == "measured" and block & (block - 1) == 0 and block >= 1024


def test_the_npu_default_is_the_measured_clean_tile(ub_plan):
    ub_plan({FLAT_F32.key: {"multibuffer": 2048, "single": 8192}})
    config = configs.select_config("npu", 1 << 24, 1, 48, tile_kind=FLAT_F32)
    assert config.block_size == 2048 and config.multibuffer
    assert config.programs_per_unit == 1
    assert configs.largest_clean_block(FLAT_F32, multibuffer=False) == (8192, "measured")


TURNED_BF16 = A2("strided", (3, 4, 0, 0), (2, 2), (2,), order=2)


@pytest.mark.parametrize("single, expected", [
    (16384, (16384, False)),   # only the single-buffered tile moves runs of 256 B: it wins
    (8192, (8192, True)),      # no larger single-buffered tile: multibuffer kept
])
def test_the_npu_default_single_buffers_where_only_that_moves_full_speed_runs(
        ub_plan, single, expected):
    ub_plan({TURNED_BF16.key: {"multibuffer": 8192, "single": single}})
    runs = {8192: 128, 16384: 256}    # bytes: the shorter side of a square 16-bit tile
    config = configs.select_config("npu", 1 << 24, 1, 48, tile_kind=TURNED_BF16,
                                   shortest_run=runs.get)
    assert (config.block_size, config.multibuffer) == expected
    assert ("single-buffered" in config.source) == (not expected[1])


def test_the_npu_default_keeps_multibuffer_where_its_runs_are_long_enough(ub_plan):
    ub_plan({TURNED_BF16.key: {"multibuffer": 8192, "single": 16384}})
    config = configs.select_config("npu", 1 << 24, 1, 48, tile_kind=TURNED_BF16,
                                   shortest_run=lambda block: configs.FULL_SPEED_RUN_BYTES)
    assert (config.block_size, config.multibuffer) == (8192, True)


def test_each_toolchain_has_its_own_plan_and_multibuffer_default(ub_plan):
    ub_plan({FLAT_F32.key: {"multibuffer": 2048, "single": 16384}}, toolchain="910_95")
    on_950 = replace(FLAT_F32, toolchain="910_95")
    config = configs.select_config("npu", 1 << 24, 1, 72, tile_kind=on_950)
    assert (config.block_size, config.multibuffer) == (16384, False)  # triton-ascend's default
    assert configs.largest_clean_block(FLAT_F32, True) == (1024, "unmeasured")  # not A2's


def test_an_unmeasured_kind_gets_the_smallest_clean_tile_of_its_path(ub_plan):
    ub_plan({FLAT_F32.key: {"multibuffer": 4096},
             A2("flat", (), (2, 2), (2,)).key: {"multibuffer": 2048},
             A2("strided", (0, 0, 0, 0), (4,), (4,), 4).key: {"multibuffer": 512},
             A2("strided", (0, 0, 0, 0), (4,), (4,), 1).key: {"multibuffer": 8192}})
    mixed = A2("flat", (), (2, 4), (4,))
    assert configs.largest_clean_block(mixed, True) == (2048, "nearest measured")
    padded = A2("strided", (3, 0, 0, 0), (4,), (4,), row_padding=4)
    assert configs.largest_clean_block(padded, True) == (512, "nearest measured")
    stepped = A2("strided", (3, 0, 0, 0), (4,), (4,), 1, element_strided=True)
    assert configs.largest_clean_block(stepped, True) == (512, "nearest measured")
    ub_plan({})
    assert configs.largest_clean_block(mixed, True) == (1024, "unmeasured")


def test_row_padding_follows_the_narrowest_operand():
    assert configs.row_padding(4, [4, 4], flat=False, ub_align_bytes=32) == 2  # 16 B -> 32
    assert configs.row_padding(3, [2, 2], flat=False, ub_align_bytes=32) == 4  # 8 B -> 32
    assert configs.row_padding(4, [4, 4], flat=False, ub_align_bytes=64) == 4
    assert configs.row_padding(30, [4], flat=False, ub_align_bytes=32) == 1
    assert configs.row_padding(4, [4], flat=True, ub_align_bytes=32) == 1


def test_npu_candidates_are_the_tiles_that_plan_cleanly(ub_plan):
    ub_plan({FLAT_F32.key: {"multibuffer": 4096, "single": 8192}})
    runnable = configs.candidate_configs("npu", FLAT_F32)
    everything = configs.candidate_configs("npu", FLAT_F32, runnable_only=False)
    assert {(c.block_size, c.multibuffer) for c in runnable} == {
        (b, mb) for b in (1024, 2048, 4096, 8192) for mb in (True, False)
        if b <= (4096 if mb else 8192)}
    assert len(everything) == len(configs.CANDIDATES["npu"]["block_size"]) * 2 * 2


@pytest.mark.parametrize("backend", ["npu", "cuda", "cpu"])
def test_small_tensors_get_smaller_tiles_down_to_the_minimum(backend):
    big = configs.select_config(backend, 1 << 24, 1, 40, tile_kind=FLAT_F32).block_size
    small = configs.select_config(backend, 40 * 1024, 1, 40, tile_kind=FLAT_F32).block_size
    tiny = configs.select_config(backend, 10, 1, 40, tile_kind=FLAT_F32).block_size
    assert small <= big
    assert tiny == configs.DEFAULTS[backend]["min_block_size"]


def test_cuda_candidates_hold_at_most_eight_elements_per_thread():
    # Measured by the CUDA gate: 16 per thread spills on sm_90/sm_100.
    candidates = configs.candidate_configs("cuda")
    assert candidates and all(c.block_size <= 8 * 32 * c.num_warps for c in candidates)
    assert {(c.block_size, c.num_warps) for c in candidates} >= {(2048, 8), (1024, 4)}


@pytest.mark.parametrize("backend", ["cuda", "cpu"])
def test_a_transposed_layout_gets_the_strided_form_as_candidates_too(backend):
    plain = configs.candidate_configs(backend, FLAT_F32)
    both = configs.candidate_configs(backend, FLAT_F32, transposed=1)
    assert all(c.transpose for c in plain)
    assert {replace(c, transpose=True) for c in both if not c.transpose} \
        == {c for c in both if c.transpose}


def test_on_npu_the_on_chip_turn_is_the_only_form():
    # the strided form there gives every element a 32-byte UB slot and a DMA of its own
    for runnable_only in (True, False):
        turned = configs.candidate_configs("npu", FLAT_F32, transposed=1,
                                           runnable_only=runnable_only)
        assert turned and all(c.transpose for c in turned)


def test_cuda_tiles_that_turn_an_operand_hold_four_elements_per_thread():
    fitted = configs.fit_for_transposes("cuda", configs.KernelConfig(2048, num_warps=8), 1)
    assert (fitted.block_size, fitted.num_warps) == (1024, 8)
    fitted = configs.fit_for_transposes("cuda", configs.KernelConfig(512, num_warps=8), 1)
    assert (fitted.block_size, fitted.num_warps) == (512, 4)
    npu = configs.KernelConfig(8192)
    assert configs.fit_for_transposes("npu", npu, 1) is npu
