"""The reduction's one definition: codes as PyTorch's, names, and the gradient's scale."""

import pytest
import torch

from mse_grad_triton.reduction import Reduction, gradient_scale, parse_reduction, scale_divisor


@pytest.mark.parametrize("name", ["none", "mean", "sum"])
def test_codes_are_pytorchs(name):
    code = torch.nn._reduction.get_enum(name)
    assert parse_reduction(name) == parse_reduction(code) == Reduction[name.upper()] == code


@pytest.mark.parametrize("bad", [3, -1, "avg", "Mean", "NONE", None, 1.0, True])
def test_anything_else_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="reduction"):
        parse_reduction(bad)


def test_the_scale_divides_by_selfs_element_count_for_mean_only():
    assert gradient_scale(Reduction.MEAN, 8) == 0.25 and scale_divisor(Reduction.MEAN, 8) == 8
    for reduction in (Reduction.NONE, Reduction.SUM):
        assert gradient_scale(reduction, 8) == 2.0 and scale_divisor(reduction, 8) == 1
