"""Property-based fuzzing: random layouts, broadcasts, dtypes and ``out`` aliasing against
the float64 reference (bounded to well under a minute)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mse_grad_triton import mse_loss_backward
from mse_grad_triton.testing import assert_ulp_close, reference

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@st.composite
def operand(draw, shape, name_seed):
    """A tensor that broadcasts to ``shape``: some dimensions 1 or dropped, any dtype, and a
    layout that is permuted, sliced with a step, or expanded (stride 0) — never copied."""
    rank = len(shape)
    dropped = draw(st.integers(0, rank))
    own = [1 if draw(st.booleans()) and draw(st.booleans()) else size
           for size in shape[dropped:]]
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["contiguous", "permuted", "sliced", "expanded"]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)) + name_seed)

    def values(sizes):
        return (torch.rand(sizes, generator=generator, dtype=torch.float64) * 8 - 4).to(dtype)

    if kind == "permuted" and len(own) > 1:
        order = draw(st.permutations(range(len(own))))
        base = values([own[d] for d in order])
        inverse = sorted(range(len(own)), key=lambda d: order[d])
        return base.permute(inverse)
    if kind == "sliced" and own:
        step = draw(st.integers(2, 3))
        return values(own[:-1] + [own[-1] * step])[..., ::step]
    if kind == "expanded" and own:
        return values([1] * len(own)).expand(own)
    return values(own)


@st.composite
def call(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=0, max_size=4))
    grad, self, target = (draw(operand(tuple(shape), seed)) for seed in (0, 1, 2))
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    out_kind = draw(st.sampled_from(["none", "strided", "self"]))
    return grad, self, target, reduction, out_kind


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call())
def test_random_calls_match_the_float64_reference(case):
    grad, self, target, reduction, out_kind = case
    expected = reference(grad, self, target, reduction)
    shape = torch.broadcast_shapes(grad.shape, self.shape, target.shape)
    out = None
    if out_kind == "strided":
        out = torch.full(tuple(shape) + (2,), float("nan"), dtype=self.dtype)[..., 0]
    elif out_kind == "self":
        if self.shape != shape or self.stride().count(0) or 0 in self.shape:
            out_kind = "none"   # out=self needs self to be the whole, distinct result
        else:
            out = self
    result = mse_loss_backward(grad, self, target, reduction, out=out)
    if out is not None:
        assert result is out
    assert result.shape == shape
    assert_ulp_close(result, expected)


@pytest.mark.parametrize("seed", range(3))
def test_repeated_calls_are_bitwise_identical(seed):
    generator = torch.Generator().manual_seed(seed)
    grad, self, target = (torch.randn(7, 9, generator=generator) for _ in range(3))
    first = mse_loss_backward(grad, self.t().contiguous().t(), target[:, :1], "mean")
    second = mse_loss_backward(grad, self.t().contiguous().t(), target[:, :1], "mean")
    assert torch.equal(first, second)
