"""The numerical yardstick itself: ULP distances and the reference."""

import pytest
import torch

from mse_grad_triton.testing import assert_ulp_close, make, max_ulp_error, reference, ulp_distance


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("value", [1.0, -3.5, 1e-3, 6e-8])
def test_one_step_is_one_ulp(dtype, value):
    x = torch.tensor([value], dtype=dtype)
    neighbour = torch.nextafter(x.float(), torch.tensor([float("inf")])).to(dtype) \
        if dtype == torch.float32 else (x.view(torch.int16) + 1).view(dtype)
    assert ulp_distance(neighbour, x.double()).item() == pytest.approx(1.0)
    assert ulp_distance(x, x.double()).item() == 0.0


def test_subnormal_ulp_is_the_smallest_step():
    smallest = torch.tensor([2.0**-24], dtype=torch.float16)
    assert ulp_distance(smallest, torch.tensor([0.0], dtype=torch.float64)).item() == 1.0


def test_special_values_must_match():
    inf, nan = float("inf"), float("nan")
    got = torch.tensor([inf, nan, -inf, 1.0])
    assert ulp_distance(got, torch.tensor([inf, nan, -inf, 1.0], dtype=torch.float64)).max() == 0
    assert ulp_distance(torch.tensor([inf]), torch.tensor([-inf], dtype=torch.float64)) == inf
    assert ulp_distance(torch.tensor([nan]), torch.tensor([1.0], dtype=torch.float64)) == inf
    # An exact value that rounds to inf in the result's dtype must be inf.
    assert ulp_distance(torch.tensor([inf], dtype=torch.float16),
                        torch.tensor([70000.0], dtype=torch.float64)).item() == 0
    with pytest.raises(AssertionError, match="ULP"):
        assert_ulp_close(torch.tensor([65504.0], dtype=torch.float16),
                         torch.tensor([70000.0], dtype=torch.float64))


def test_reference_mean_divides_by_self_numel():
    grad, self, target = torch.tensor(1.0), torch.ones(1, 4), torch.zeros(3, 4)
    assert torch.equal(reference(grad, self, target, "mean"), torch.full((3, 4), 0.5,
                                                                         dtype=torch.float64))
    assert torch.equal(reference(grad, self, target, "sum"), torch.full((3, 4), 2.0,
                                                                        dtype=torch.float64))


@pytest.mark.parametrize("shapes", [([], [1 << 12], [1 << 12]), ([], [64, 64], [64, 1]),
                                    ([64, 64], [64, 64], [64])], ids=str)
def test_max_ulp_error_in_chunks_finds_a_single_bad_element(shapes):
    grad, self, target = (make(s, torch.float32, i) for i, s in enumerate(shapes))
    result = torch.ops.aten.mse_loss_backward(grad, self, target, 1)
    assert max_ulp_error(result, grad, self, target, "mean", chunk_elements=100) <= 4
    result.view(-1)[-1] += 1.0  # the very last element, in the last chunk
    assert max_ulp_error(result, grad, self, target, "mean", chunk_elements=100) > 1000
