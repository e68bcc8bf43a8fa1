"""The launcher's semantics, run through Triton's interpreter on CPU tensors and compared with
a float64 reference in ULPs of the result's dtype."""

import pytest
import torch
from cases import DTYPES, LAYOUTS, REDUCTIONS

from mse_grad_triton import (
    configs,
    launcher,
    mse_loss_backward,
    mse_loss_backward_pair,
)
from mse_grad_triton.reduction import parse_reduction
from mse_grad_triton.testing import assert_ulp_close, make, reference


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_float64_reference(dtype, reduction, layout):
    grad, self, target = LAYOUTS[layout](dtype)
    result = mse_loss_backward(grad, self, target, reduction)
    shape = torch.broadcast_shapes(grad.shape, self.shape, target.shape)
    assert result.shape == shape and result.dtype == dtype and result.is_contiguous()
    assert_ulp_close(result, reference(grad, self, target, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_int_and_str_reductions_agree(reduction):
    grad, self, target = LAYOUTS["broadcast_target"](torch.float32)
    by_name = mse_loss_backward(grad, self, target, reduction)
    by_code = mse_loss_backward(grad, self, target, parse_reduction(reduction))
    assert torch.equal(by_name, by_code)


def test_reductions_differ_only_in_scale():
    grad, self, target = LAYOUTS["contiguous"](torch.float32)
    none = mse_loss_backward(grad, self, target, "none")
    assert torch.equal(none, mse_loss_backward(grad, self, target, "sum"))
    assert_ulp_close(mse_loss_backward(grad, self, target, "mean"),
                     none.double() / self.numel())


def test_mean_uses_numel_of_self_not_of_result():
    grad, self, target = LAYOUTS["broadcast_self"](torch.float32)
    result = mse_loss_backward(grad, self, target, "mean")
    assert self.numel() == 130 and result.numel() == 37 * 130
    expected = grad.double() * (self.double() - target.double()) * (2 / 130)
    assert_ulp_close(result, expected)


@pytest.mark.parametrize("grad_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("self_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("target_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_mixed_input_dtypes_each_read_in_own_dtype(grad_dtype, self_dtype, target_dtype):
    grad, self, target = make([9, 130], grad_dtype, 1), make([9, 130], self_dtype, 2), \
        make([9, 130], target_dtype, 3)
    result = mse_loss_backward(grad, self, target, "mean")
    assert result.dtype == self_dtype
    assert_ulp_close(result, reference(grad, self, target, "mean"))


@pytest.mark.parametrize("out_dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_out_dtype_rounded_once_from_fp32(dtype, out_dtype):
    grad, self, target = LAYOUTS["scalar_grad"](dtype)
    out = torch.empty(self.shape, dtype=out_dtype)
    result = mse_loss_backward(grad, self, target, "mean", out=out)
    assert result is out
    # fp32 arithmetic, one rounding: within the ULP budget even of a float64 output's fp32
    # part. A float64 out of low-precision inputs is held to fp32 accuracy.
    max_ulp = 4 * 2**29 if out_dtype == torch.float64 else None
    assert_ulp_close(out, reference(grad, self, target, "mean"), max_ulp=max_ulp)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float64_is_computed_in_float64(reduction):
    grad, self, target = (make(s, torch.float64, i) for i, s in
                          enumerate([[37, 1], [37, 130], [130]]))
    result = mse_loss_backward(grad, self, target, reduction)
    assert result.dtype == torch.float64
    assert_ulp_close(result, reference(grad, self, target, reduction))


SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 4), (2, 3, 1, 2, 3),
          (2, 1, 2, 1, 2, 1, 3), (2,) * 8, (2, 1) * 5, (1, 2, 3) * 3 + (2,)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_any_rank(shape):
    grad, self, target = (make(shape, torch.float32, i) for i in range(3))
    result = mse_loss_backward(grad, self, target, "mean")
    assert result.shape == shape
    assert_ulp_close(result, reference(grad, self, target, "mean"))


@pytest.mark.parametrize("which", ["grad_output", "self", "target"])
def test_broadcast_in_each_input_beyond_eight_dims(which):
    full = (2, 3, 2, 1, 3, 1, 2, 3, 2, 33)   # 10 dims
    small = (2, 1, 2, 1, 1, 1, 2, 1, 2, 33)  # broadcasts in three places
    shapes = {name: small if name == which else full
              for name in ("grad_output", "self", "target")}
    grad, self, target = (make(shapes[n], torch.float32, i)
                          for i, n in enumerate(["grad_output", "self", "target"]))
    result = mse_loss_backward(grad, self, target, "mean")
    assert result.shape == full
    assert_ulp_close(result, reference(grad, self, target, "mean"))


def test_layout_beyond_kernel_rank_is_refused_before_anything_is_written():
    # Broadcast in every other dimension: nothing coalesces, 10 dimensions remain.
    self = make((2, 3) * 5, torch.float32, 1)
    target = make((2, 1) * 5, torch.float32, 2)
    out = torch.full(self.shape, 7.0)
    with pytest.raises(ValueError, match="coalesced"):
        mse_loss_backward(torch.tensor(1.0), self, target, "mean", out=out)
    assert bool((out == 7.0).all())


def test_many_tiles_rows_and_programs(monkeypatch):
    # Small tiles: many tiles per row, tails in every row, every program loops several times.
    monkeypatch.setattr(launcher, "_plans", {})  # plans made under other defaults
    monkeypatch.setattr(launcher, "_calls", {})
    monkeypatch.setitem(configs.DEFAULTS, "cpu", {
        "config": configs.KernelConfig(block_size=16, programs_per_unit=3), "min_block_size": 16})
    grad, self, target = make([5, 37], torch.float16, 1), make([37, 5], torch.float16, 2).t(), \
        make([5, 1], torch.float16, 3)
    assert_ulp_close(mse_loss_backward(grad, self, target, "none"),
                     reference(grad, self, target, "none"))


@pytest.mark.parametrize("numel", [7, 16 * 8, 185], ids=["one-partial", "full-only", "tail"])
@pytest.mark.parametrize("scalar_grad", [False, True], ids=["full-grad", "scalar-grad"])
def test_flat_full_tiles_and_masked_tail(numel, scalar_grad, monkeypatch):
    # The flat kernel loads full tiles unmasked and only the last partial tile masked, by the
    # program after the last full tile's: every split of numel into tiles and programs.
    monkeypatch.setattr(launcher, "_calls", {})
    monkeypatch.setitem(configs.DEFAULTS, "cpu", {
        "config": configs.KernelConfig(block_size=16, programs_per_unit=3), "min_block_size": 16})
    grad = make([] if scalar_grad else [numel], torch.float32, 1)
    self, target = make([numel], torch.bfloat16, 2), make([numel], torch.float16, 3)
    out = torch.full([numel], float("nan"))
    plan = launcher.explain(grad, self, target, "sum", out=out)
    assert plan.path.startswith("flat") and plan.config.block_size == 16
    mse_loss_backward(grad, self, target, "sum", out=out)
    assert_ulp_close(out, reference(grad, self, target, "sum"))


# --- out ---------------------------------------------------------------------------------

def test_out_non_contiguous_written_through_its_strides():
    grad, self, target = LAYOUTS["broadcast_target"](torch.float32)
    storage = torch.full((130, 80), -1.0)
    out = storage[:, 3:40].t()  # shape [37, 130], strides (1, 80)
    result = mse_loss_backward(grad, self, target, "sum", out=out)
    assert result is out
    assert_ulp_close(out, reference(grad, self, target, "sum"))
    untouched = torch.ones_like(storage, dtype=torch.bool)
    untouched[:, 3:40] = False
    assert bool((storage[untouched] == -1.0).all())


@pytest.mark.parametrize("alias", ["self", "target", "grad_output"])
def test_out_may_be_an_input(alias):
    grad, self, target = LAYOUTS["contiguous"](torch.float32)
    expected = reference(grad, self, target, "none")
    inputs = {"grad_output": grad, "self": self, "target": target}
    result = mse_loss_backward(grad, self, target, "none", out=inputs[alias])
    assert result is inputs[alias]
    assert_ulp_close(result, expected)


# --- empty tensors, special values -------------------------------------------------------

@pytest.mark.parametrize("shapes", [([0], [0], [0]), ([], [3, 0], [1]), ([4, 0, 2], [0, 1], [2])],
                         ids=str)
def test_empty_result_without_launch(shapes, stubbed_launches):
    grad, self, target = (torch.ones(s) for s in shapes)
    result = mse_loss_backward(grad, self, target, "mean")
    assert result.shape == torch.broadcast_shapes(*shapes) and result.numel() == 0
    assert stubbed_launches == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_and_inf_propagate(dtype):
    inf, nan = float("inf"), float("nan")
    self = torch.tensor([inf, -inf, inf, nan, 1.0, 1.0, 0.0, 2.0, -0.0], dtype=dtype)
    target = torch.tensor([1.0, 1.0, inf, 1.0, nan, -inf, 0.0, 2.0, 0.0], dtype=dtype)
    grad = torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 0.5, inf, 0.0, -1.0], dtype=dtype)
    result = mse_loss_backward(grad, self, target, "none")
    expected = reference(grad, self, target, "none")
    assert torch.equal(torch.isnan(result), torch.isnan(expected))
    assert_ulp_close(result, expected)


def test_float16_results_overflow_to_signed_inf():
    self = torch.tensor([60000.0, -60000.0, 60000.0], dtype=torch.float16)
    target = torch.tensor([-60000.0, 60000.0, 59000.0], dtype=torch.float16)
    grad = torch.tensor(1.0, dtype=torch.float16)
    result = mse_loss_backward(grad, self, target, "none")
    assert result[0].item() == float("inf") and result[1].item() == float("-inf")
    assert_ulp_close(result, reference(grad, self, target, "none"))


def test_float16_mean_over_2_pow_25_elements_does_not_underflow(monkeypatch):
    # ATen computes 2/numel in float16, which underflows here; the fp32 scale does not.
    monkeypatch.setattr(launcher, "_plans", {})
    monkeypatch.setattr(launcher, "_calls", {})
    monkeypatch.setitem(configs.DEFAULTS, "cpu", {
        "config": configs.KernelConfig(block_size=1 << 16), "min_block_size": 1 << 16})
    n = 1 << 25
    self = make([n], torch.float16, 1, low=-1000, high=1000)
    target = torch.zeros(1, dtype=torch.float16)
    grad = torch.tensor(1000.0, dtype=torch.float16)
    result = mse_loss_backward(grad, self, target, "mean")
    assert bool((result != 0).sum() > n // 2)
    assert_ulp_close(result, reference(grad, self, target, "mean"))


# --- purity ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "transposed_self", "expanded_grad"])
def test_deterministic_and_inputs_unchanged(layout):
    grad, self, target = LAYOUTS[layout](torch.bfloat16)
    before = [t.clone() for t in (grad, self, target)]
    first = mse_loss_backward(grad, self, target, "mean")
    second = mse_loss_backward(grad, self, target, "mean")
    assert torch.equal(first.view(torch.int16), second.view(torch.int16))
    for tensor, copy in zip((grad, self, target), before):
        assert torch.equal(tensor, copy)


def test_short_rows_pack_many_rows_into_one_tile():
    from mse_grad_triton import explain
    grad, self, target = torch.tensor(1.0), make([100, 30], torch.float32, 1), \
        make([100, 1], torch.float32, 2)
    explained = explain(grad, self, target)
    # The CPU's 1024-element tile: as wide as the row (rounded up), as many rows as fit.
    assert explained.tile == (32, 32) and explained.config.block_size == 1024
    assert_ulp_close(mse_loss_backward(grad, self, target), reference(grad, self, target, "mean"))


@pytest.mark.parametrize("dtype, row, grad_shape, per_row", [
    (torch.float32, 4, [], (False, False, True)),          # a 0-d grad, target [N, 1]
    (torch.float32, 2, [4096, 1], (True, False, True)),    # grad one per row too
    (torch.bfloat16, 8, [4096, 8], (False, False, True)),  # 16 B rows of bf16
    (torch.float16, 4, [4096, 4], (False, False, True)),
])
def test_narrow_rows_against_one_value_per_row_move_flat(dtype, row, grad_shape, per_row):
    # Rows narrower than an Ascend UB block (32 B) would be padded to it: the flat kernel moves
    # them as one run and repeats the inputs that hold one value per row on chip.
    from mse_grad_triton import kernels
    from mse_grad_triton.launcher import _call
    grad, self, target = make(grad_shape, dtype, 1), make([4096, row], dtype, 2), \
        make([4096, 1], dtype, 3)
    plan = _call(grad, self, target, "mean", None, "triton", False).plan
    assert plan.kernel is kernels.mse_loss_backward_flat_kernel and plan.moved_flat
    assert plan.tile == (1, plan.config.block_size) and plan.path == "strided"
    assert plan.constexprs["ROW_LENGTH"] == row and plan.scalar_args[-2] == 4096 * row
    assert tuple(plan.constexprs[f"{k}_PER_ROW"] for k in ("GRAD", "SELF", "TARGET")) == per_row
    assert_ulp_close(mse_loss_backward(grad, self, target), reference(grad, self, target, "mean"))


@pytest.mark.parametrize("shapes", [
    ([4096, 8], [4096, 1]),      # 32 B rows of fp32: not padded, the 2-D tile
    ([4096, 4], [1, 4]),         # the target one value per column: the 2-D tile
    ([4096, 4], [4096, 4]),      # nothing per row: flat anyway
])
def test_other_rows_keep_their_kernel(shapes):
    from mse_grad_triton.launcher import _call
    self, target = make(shapes[0], torch.float32, 1), make(shapes[1], torch.float32, 2)
    plan = _call(torch.tensor(1.0), self, target, "mean", None, "triton", False).plan
    assert plan.constexprs.get("ROW_LENGTH", 1) == 1
    assert plan.moved_flat == (plan.path == "flat_scalar_grad")


@pytest.mark.parametrize("case, tile, modes", [
    # target [N, 1] against [N, 3]: rows of 3 (4 wide, masked), 256 per tile; the target one
    # value per row (rows of a power of two move flat: see the next test)
    ("short_rows", (256, 4), ("SCALAR", "TILE", "ROW_VECTOR", "TILE")),
    # self [:, :4] of [N, 64]: a 2-D walk with row stride 64
    ("sliced_short_rows", (256, 4), ("SCALAR", "TILE", "TILE", "TILE")),
    # rows of 3 (the tile is 4 wide, masked), target broadcast across the 100 rows
    ("rows_of_3", (128, 4), ("TILE", "TILE", "COL_VECTOR", "TILE")),
    # a transposed self is moved along its own rows and turned on chip: a square tile
    ("transposed_self", (32, 32), ("TILE", "TRANSPOSED", "TILE", "TILE")),
    ("transposed_out", (32, 32), ("SCALAR", "TILE", "TILE", "TRANSPOSED")),
    ("channels_last_self", (4, 64), ("TILE", "TRANSPOSED", "TILE", "TILE")),
    # every channel in the tile: the turned operand's tile is one run (a partial column tile)
    ("channels_last_dense_self", (4, 64), ("TILE", "DENSE_TRANSPOSED", "TILE", "TILE")),
    ("channels_last_dense_out", (4, 64), ("SCALAR", "TILE", "TILE", "DENSE_TRANSPOSED")),
    # a row every tile shares (broadcast across the rows, one column tile): loaded once
    ("broadcast_self", (4, 256), ("SCALAR", "HELD_ROW", "TILE", "TILE")),
    ("expanded_grad", (4, 256), ("HELD_ROW", "TILE", "HELD_ROW", "TILE")),
    # a row longer than the tile's: moved with each tile
    ("long_broadcast_self", (1, 1024), ("SCALAR", "COL_VECTOR", "TILE", "TILE")),
])
def test_tile_shape_and_operand_modes(case, tile, modes):
    from mse_grad_triton import kernels
    from mse_grad_triton.launcher import _call
    grad, self, target, out = {
        "short_rows": lambda: (torch.tensor(1.0), make([4096, 3], torch.float32, 1),
                               make([4096, 1], torch.float32, 2), None),
        "sliced_short_rows": lambda: (torch.tensor(1.0), make([300, 64], torch.float32, 1)[:, :4],
                                      make([300, 4], torch.float32, 2), None),
        "rows_of_3": lambda: (make([32, 100, 3], torch.float32, 1),
                              make([32, 100, 3], torch.float32, 2),
                              make([32, 1, 3], torch.float32, 3), None),
        "transposed_self": lambda: (make([300, 200], torch.float32, 1),
                                    make([200, 300], torch.float32, 2).t(),
                                    make([300, 200], torch.float32, 3), None),
        "transposed_out": lambda: (torch.tensor(1.0), make([64, 48], torch.float32, 1),
                                   make([64, 48], torch.float32, 2), torch.empty(48, 64).t()),
        "channels_last_self": lambda: (
            make([2, 3, 8, 8], torch.float32, 1),
            make([2, 3, 8, 8], torch.float32, 2).to(memory_format=torch.channels_last),
            make([2, 3, 8, 8], torch.float32, 3), None),
        "channels_last_dense_self": lambda: (
            make([2, 4, 6, 10], torch.float32, 1),
            make([2, 4, 6, 10], torch.float32, 2).to(memory_format=torch.channels_last),
            make([2, 4, 6, 10], torch.float32, 3), None),
        "channels_last_dense_out": lambda: (
            torch.tensor(1.0), make([2, 4, 6, 10], torch.float32, 1),
            make([2, 4, 6, 10], torch.float32, 2),
            torch.empty(2, 4, 6, 10).to(memory_format=torch.channels_last)),
        "broadcast_self": lambda: (torch.tensor(1.0), make([1, 200], torch.float32, 1),
                                   make([50, 200], torch.float32, 2), None),
        "expanded_grad": lambda: (make([200], torch.float32, 1).expand(50, 200),
                                  make([50, 200], torch.float32, 2),
                                  make([200], torch.float32, 3), None),
        "long_broadcast_self": lambda: (torch.tensor(1.0), make([1, 3000], torch.float32, 1),
                                        make([50, 3000], torch.float32, 2), None),
    }[case]()
    plan = _call(grad, self, target, "sum", out, "triton", False).plan
    assert plan.tile == tile
    assert tuple(plan.constexprs[f"{k}_MODE"] for k in ("GRAD", "SELF", "TARGET", "OUT")) \
        == tuple(getattr(kernels, m).value for m in modes)
    result = mse_loss_backward(grad, self, target, "sum", out=out)
    assert_ulp_close(result, reference(grad, self, target, "sum"))


# --- both gradients in one pass ------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "scalar_grad", "transposed_self", "sliced",
                                    "channels_last_dense"])
@pytest.mark.parametrize("target_dtype", DTYPES, ids=str)
def test_pair_returns_both_gradients(layout, target_dtype):
    grad, self, target = LAYOUTS[layout](torch.float16)
    target = target.to(target_dtype)
    grad_self, grad_target = mse_loss_backward_pair(grad, self, target, "mean")
    expected = reference(grad, self, target, "mean")
    assert grad_self.dtype == torch.float16 and grad_target.dtype == target_dtype
    assert_ulp_close(grad_self, expected)
    assert_ulp_close(grad_target, -expected)


def test_pair_mean_needs_equal_element_counts():
    with pytest.raises(ValueError, match="as many elements"):
        mse_loss_backward_pair(torch.tensor(1.0), torch.ones(4, 5), torch.ones(5), "mean")
    grad_self, grad_target = mse_loss_backward_pair(torch.tensor(1.0), torch.ones(4, 5),
                                                    torch.zeros(5), "sum")
    assert torch.equal(grad_target, -grad_self) and grad_self.shape == (4, 5)


def test_plans_are_reused_per_geometry(monkeypatch):
    monkeypatch.setattr(launcher, "_calls", {})
    grad, self, target = LAYOUTS["broadcast_target"](torch.float32)
    mse_loss_backward(grad, self, target)
    mse_loss_backward(grad.clone(), self.clone(), target.clone())  # same geometry
    assert len(launcher._calls) == 1
    mse_loss_backward(grad, self.t().contiguous().t(), target)   # other strides
    mse_loss_backward(grad, self, target, "sum")                   # other reduction
    assert len(launcher._calls) == 3


def test_checks_run_once_per_geometry(monkeypatch):
    monkeypatch.setattr(launcher, "_calls", {})
    checked = []
    real_check = launcher.validation.check_inputs
    monkeypatch.setattr(launcher.validation, "check_inputs",
                        lambda *args: checked.append(1) or real_check(*args))
    grad, self, target = LAYOUTS["broadcast_target"](torch.float32)
    for _ in range(3):
        mse_loss_backward(grad, self, target)
    assert checked == [1]
    # What the cache must tell apart: a reduction spelled True is refused, not taken for 1.
    with pytest.raises(ValueError, match="reduction"):
        mse_loss_backward(grad, self, target, True)


# --- edges (issue 12): each of these was a silent wrong answer or a crash -----------------

def test_out_bumps_the_version_counter_so_autograd_sees_the_overwrite():
    a = torch.ones(4, requires_grad=True)
    saved = a * 1.0                      # a graph that saved `saved` for its backward
    loss = (saved * saved).sum()
    with torch.no_grad():
        mse_loss_backward(torch.tensor(1.0), saved, torch.zeros(4), "sum", out=saved)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_out_refuses_autograd_and_inference_tensors_as_aten_does():
    grad, target = torch.tensor(1.0), torch.zeros(4)
    with pytest.raises(ValueError, match="automatic differentiation"):
        mse_loss_backward(grad, torch.ones(4, requires_grad=True), target, out=torch.empty(4))
    with torch.inference_mode():
        inference_out = torch.empty(4)
    with pytest.raises(ValueError, match="inference tensor"):
        mse_loss_backward(grad, torch.ones(4), target, out=inference_out)
    with torch.inference_mode():  # inside inference mode it is fine
        mse_loss_backward(grad, torch.ones(4), target, "sum", out=inference_out)
    assert torch.equal(inference_out, torch.full((4,), 2.0))


def test_overlap_across_storages_over_the_same_memory_is_refused():
    import numpy as np
    memory = np.arange(4196, dtype=np.float32)
    x, out = torch.from_numpy(memory[:4096]), torch.from_numpy(memory[100:4196])
    assert x.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    with pytest.raises(ValueError, match="out partially overlaps self"):
        mse_loss_backward(torch.tensor(1.0), x, torch.zeros(4096), "sum", out=out)
    assert np.array_equal(memory, np.arange(4196, dtype=np.float32))  # nothing written


def test_the_overlap_test_is_exact():
    grad, x, y = torch.tensor(1.0), make([3, 3], torch.float32, 1), make([3, 3], torch.float32, 2)
    # Distinct elements whose strides the quick test cannot prove apart: offsets 2i + 3j.
    out = torch.full((20,), -1.0).as_strided((3, 3), (2, 3))
    mse_loss_backward(grad, x, y, "sum", out=out)
    assert_ulp_close(out, reference(grad, x, y, "sum"))
    # The same bytes under another dtype of the same size are exactly self's elements.
    half = make([5], torch.float16, 3)
    expected = reference(torch.tensor(1.0), half, torch.zeros(5), "sum").to(torch.bfloat16)
    mse_loss_backward(torch.tensor(1.0), half, torch.zeros(5, dtype=torch.float16), "sum",
                      out=half.view(torch.bfloat16))
    assert torch.equal(half.view(torch.bfloat16), expected)
    # Interleaved, disjoint elements of one storage.
    base = torch.zeros(20)
    mse_loss_backward(grad, base[1::2] + 0, torch.zeros(10), "sum", out=base[::2])


def test_a_zero_tensor_gradient_gives_zeros_not_a_crash():
    zero = torch._efficientzerotensor(4)
    assert torch.equal(mse_loss_backward(zero, torch.ones(4), torch.zeros(4), "none"),
                       torch.zeros(4))
    out = torch.full((4,), 7.0)
    mse_loss_backward(zero, torch.ones(4), torch.zeros(4), "none", out=out)
    assert torch.equal(out, torch.zeros(4))
    grad_self, grad_target = mse_loss_backward_pair(zero, torch.ones(4), torch.zeros(4))
    assert torch.equal(grad_self, torch.zeros(4)) and torch.equal(grad_target, torch.zeros(4))


@pytest.mark.parametrize("grad,expected", [(0.25, 0.25 * 2 * 2e38), (0.0, 0.0)])
def test_none_keeps_intermediates_in_range(grad, expected):
    # 2 * (self - target) overflows fp32 here; grad * 2 first does not.
    self = torch.tensor([2e38], dtype=torch.bfloat16)
    result = mse_loss_backward(torch.tensor([grad], dtype=torch.bfloat16), self,
                               torch.zeros(1, dtype=torch.bfloat16), "none")
    exact = reference(torch.tensor([grad], dtype=torch.bfloat16), self,
                      torch.zeros(1, dtype=torch.bfloat16), "none")
    assert torch.isfinite(result).all() and result.item() == pytest.approx(expected, rel=0.01)
    assert_ulp_close(result, exact)


def test_mean_keeps_intermediates_out_of_the_subnormals():
    # (self - target) * 2 / numel rounds in fp32's subnormals here; grad * 2 / numel first
    # does not.
    self = torch.full((4,), 3e-44)
    grad = torch.tensor(3e30)
    result = mse_loss_backward(grad, self, torch.zeros(4), "mean")
    assert_ulp_close(result, reference(grad, self, torch.zeros(4), "mean"))


@pytest.mark.parametrize("grad_shape, dtype, reduction, order", [
    ([], torch.float32, "mean", "SCALAR_FACTORS"),
    ([], torch.bfloat16, "sum", "SCALAR_FACTORS"),
    ([6, 5], torch.float32, "sum", "PRODUCT_FIRST"),
    ([6, 5], torch.float32, "none", "PRODUCT_FIRST"),
    ([6, 5], torch.float16, "mean", "PRODUCT_FIRST"),
    ([6, 5], torch.float32, "mean", "GUARDED"),
    ([6, 5], torch.bfloat16, "mean", "GUARDED")])
def test_the_evaluation_order_is_chosen_per_launch(stubbed_launches, grad_shape, dtype,
                                                   reduction, order):
    from mse_grad_triton import kernels
    mse_loss_backward(make(grad_shape, dtype, 1), make([6, 5], dtype, 2), make([6, 5], dtype, 3),
                      reduction)
    (plan, _), = stubbed_launches
    assert plan.constexprs["ORDER"] == getattr(kernels, order).value


@pytest.mark.parametrize("grad, self_value, reduction", [
    (3e38, 0.25, "sum"),          # grad * 2 overflows: the scale goes on the difference
    (29 * 2.0**-149, 1e38, "mean"),  # grad * 2/4 rounds in the subnormals: on the difference
    (-3e38, 1e-30, "none"),       # a full grad: the product first, then the scale
])
@pytest.mark.parametrize("grad_shape", [[], [4]], ids=["0d_grad", "full_grad"])
def test_every_evaluation_order_keeps_intermediates_in_range(grad, self_value, reduction,
                                                             grad_shape):
    grad = torch.full(grad_shape, grad)
    self, target = torch.full((4,), self_value), torch.zeros(4)
    result = mse_loss_backward(grad, self, target, reduction)
    exact = reference(grad, self, target, reduction)
    assert torch.isfinite(exact).all() and torch.isfinite(result).all()
    assert_ulp_close(result, exact)


@pytest.mark.parametrize("grad, self_value", [
    (1e30, 1e10),      # |grad| > 1: grad * difference overflows; grad * scale first does not
    (3e30, 3e-44),     # |grad| > 1: difference * scale would sink into the subnormals
    (0.75, 3e38),      # |grad| <= 1: the scale on the difference, then grad
    (1e-35, 1e30),     # |grad| <= 1: grad * scale would sink into the subnormals
])
def test_the_guarded_order_keeps_a_full_grad_with_mean_in_range(grad, self_value):
    # 2**18 elements: the mean's scale is 2**-17, so grad * (self - target) can overflow
    # where the result does not.
    numel = 1 << 18
    grad, self, target = torch.full((numel,), grad), torch.full((numel,), self_value), \
        torch.zeros(numel)
    result = mse_loss_backward(grad, self, target, "mean")
    exact = reference(grad, self, target, "mean")
    assert torch.isfinite(exact).all() and torch.isfinite(result).all()
    assert_ulp_close(result, exact)


