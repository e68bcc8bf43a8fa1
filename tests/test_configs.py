"""Configurations: the UB formula and the defaults' choices."""

from dataclasses import replace

import pytest

from mse_grad_triton import configs


def test_ub_formula_counts_each_buffer():
    # fp16 inputs x3: 2 bytes each + fp32 widening; fp32 result; fp16 output.
    per_element = 3 * (2 + 4) + 4 + 2
    assert configs.ub_footprint_bytes(1024, [2, 2, 2], [2], multibuffer=False) \
        == 1024 * per_element
    assert configs.ub_footprint_bytes(1024, [2, 2, 2], [2], multibuffer=True) \
        == 2048 * per_element
    # fp32 needs no widening and no narrowing.
    assert configs.ub_footprint_bytes(1, [4, 4], [4], multibuffer=False) == 3 * 4
    # A second output (the target's gradient): an fp32 negation, narrowed to bf16.
    assert configs.ub_footprint_bytes(1, [4, 4], [4, 2], multibuffer=False) == 3 * 4 + 4 + 2


@pytest.mark.parametrize("itemsizes,out_itemsize", [([4, 4, 4], [4]), ([2, 2, 2], [2]),
                                                    ([4, 4], [4]), ([2, 2], [2, 2]),
                                                    ([2, 4, 2], [4])])
@pytest.mark.parametrize("multibuffer", [True, False])
def test_largest_fitting_block_is_the_largest_that_fits(itemsizes, out_itemsize, multibuffer):
    block = configs.largest_fitting_block(itemsizes, out_itemsize, multibuffer)
    assert block & (block - 1) == 0
    assert configs.ub_footprint_bytes(block, itemsizes, out_itemsize, multibuffer) \
        <= configs.UB_BYTES
    assert block == configs.MAX_BLOCK_SIZE or configs.ub_footprint_bytes(
        2 * block, itemsizes, out_itemsize, multibuffer) > configs.UB_BYTES


def test_npu_default_fits_ub_and_uses_one_program_per_core():
    config = configs.select_config("npu", [2, 2, 2], [2], row_length=1 << 24, num_rows=1,
                                   num_units=48)
    assert config.block_size == configs.largest_fitting_block([2, 2, 2], [2], True)
    assert config.programs_per_unit == 1 and config.multibuffer


@pytest.mark.parametrize("backend", ["npu", "cuda", "cpu"])
def test_small_tensors_get_smaller_tiles_down_to_the_minimum(backend):
    big = configs.select_config(backend, [4, 4], [4], 1 << 24, 1, num_units=40).block_size
    small = configs.select_config(backend, [4, 4], [4], 40 * 1024, 1, num_units=40).block_size
    tiny = configs.select_config(backend, [4, 4], [4], 10, 1, num_units=40).block_size
    assert small <= big
    assert tiny == configs.DEFAULTS[backend]["min_block_size"]


def test_cuda_candidates_hold_at_most_eight_elements_per_thread():
    # Measured by the CUDA gate: 16 per thread spills on sm_90/sm_100.
    candidates = configs.candidate_configs("cuda", [2, 2, 2], [2])
    assert candidates and all(c.block_size <= 8 * 32 * c.num_warps for c in candidates)
    assert {(c.block_size, c.num_warps) for c in candidates} >= {(2048, 8), (1024, 4)}


@pytest.mark.parametrize("backend", ["npu", "cuda", "cpu"])
def test_a_transposed_layout_gets_the_strided_form_as_candidates_too(backend):
    plain = configs.candidate_configs(backend, [4, 4], [4])
    both = configs.candidate_configs(backend, [4, 4], [4], transposed=1)
    assert all(c.transpose for c in plain)
    assert {replace(c, transpose=True) for c in both if not c.transpose} \
        == {c for c in both if c.transpose}
    if backend == "npu":  # the turned copy counts against the UB
        assert configs.ub_footprint_bytes(1024, [4, 4], [4], False, transposed=1) \
            == configs.ub_footprint_bytes(1024, [4, 4], [4], False) + 1024 * 4


def test_cuda_tiles_that_turn_an_operand_hold_four_elements_per_thread():
    fitted = configs.fit_for_transposes("cuda", configs.KernelConfig(2048, num_warps=8), 1)
    assert (fitted.block_size, fitted.num_warps) == (1024, 8)
    fitted = configs.fit_for_transposes("cuda", configs.KernelConfig(512, num_warps=8), 1)
    assert (fitted.block_size, fitted.num_warps) == (512, 4)
    npu = configs.KernelConfig(8192)
    assert configs.fit_for_transposes("npu", npu, 1) is npu
