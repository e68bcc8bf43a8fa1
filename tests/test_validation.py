"""Bad input: the exception's type, that its message names the argument, and that nothing was
written or launched."""

import pytest
import torch

from mse_grad_triton import backends, mse_loss_backward


@pytest.fixture
def no_launch(stubbed_launches):
    """Fail the test if any kernel is launched."""
    yield
    assert stubbed_launches == [], "a refused call launched a kernel"


def _args(shape=(4, 5), dtype=torch.float32):
    return [torch.ones(shape, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("reduction", [3, -1, "avg", "Mean", None, 1.0, True])
def test_bad_reduction(reduction, no_launch):
    with pytest.raises(ValueError, match="reduction"):
        mse_loss_backward(*_args(), reduction)


@pytest.mark.parametrize("position,name", [(0, "grad_output"), (1, "self"), (2, "target")])
@pytest.mark.parametrize("value", [1.0, [1.0, 2.0], None])
def test_non_tensor_argument(position, name, value, no_launch):
    args = _args()
    args[position] = value
    with pytest.raises(TypeError, match=name):
        mse_loss_backward(*args, "mean")


@pytest.mark.parametrize("position,name", [(0, "grad_output"), (1, "self"), (2, "target")])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64,
                                   torch.uint8], ids=str)
def test_non_float_dtype(position, name, dtype, no_launch):
    args = _args()
    args[position] = args[position].to(dtype)
    with pytest.raises(TypeError, match=name):
        mse_loss_backward(*args, "mean")


def test_sparse_input(no_launch):
    args = _args()
    args[1] = args[1].to_sparse()
    with pytest.raises(TypeError, match="self"):
        mse_loss_backward(*args, "mean")


@pytest.mark.parametrize("position,name", [(1, "self"), (2, "target")])
def test_different_devices(position, name, no_launch):
    args = [torch.ones(4, 5, device="meta") if i == position else t
            for i, t in enumerate(_args())]
    with pytest.raises(ValueError, match=name):
        mse_loss_backward(*args, "mean")


def test_unsupported_device(no_launch):
    args = [torch.ones(4, 5, device="meta") for _ in range(3)]
    with pytest.raises(ValueError, match="meta"):
        mse_loss_backward(*args, "mean")


@pytest.mark.parametrize("shapes,name", [
    (([4, 5], [4, 6], [4, 5]), "self"),
    (([4, 5], [4, 5], [3, 5]), "target"),
    (([2, 5], [4, 5], [4, 5]), "self"),
    (([4, 5], [4, 1], [2, 4, 3]), "target"),
], ids=str)
def test_shapes_that_do_not_broadcast(shapes, name, no_launch):
    with pytest.raises(ValueError, match=f"{name} of shape"):
        mse_loss_backward(*(torch.ones(s) for s in shapes), "mean")


@pytest.mark.parametrize("out_shape", [(4, 6), (5, 4), (20,), (1, 4, 5), ()], ids=str)
def test_out_of_wrong_shape(out_shape, no_launch):
    out = torch.full(out_shape, 3.0)
    with pytest.raises(ValueError, match="out has shape"):
        mse_loss_backward(*_args(), "mean", out=out)
    assert bool((out == 3.0).all())


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64], ids=str)
def test_out_of_non_float_dtype(dtype, no_launch):
    out = torch.zeros(4, 5, dtype=dtype)
    with pytest.raises(TypeError, match="out"):
        mse_loss_backward(*_args(), "mean", out=out)
    assert not bool(out.any())


def test_out_not_a_tensor(no_launch):
    with pytest.raises(TypeError, match="out"):
        mse_loss_backward(*_args(), "mean", out=[0.0] * 20)


@pytest.mark.parametrize("make_out", [
    lambda: torch.full((5,), 3.0).expand(4, 5),                      # stride 0
    lambda: torch.full((8,), 3.0).as_strided((4, 5), (1, 1)),         # rows overlap
], ids=["stride0", "as_strided"])
def test_out_with_internal_overlap(make_out, no_launch):
    out = make_out()
    with pytest.raises(ValueError, match="out has overlapping elements"):
        mse_loss_backward(*_args(), "none", out=out)
    assert bool((out == 3.0).all())


@pytest.mark.parametrize("position,name", [(0, "grad_output"), (1, "self"), (2, "target")])
def test_out_partially_overlapping_an_input(position, name, no_launch):
    storage = torch.arange(30, dtype=torch.float32)
    before = storage.clone()
    args = _args()
    args[position] = storage[:20].view(4, 5)
    out = storage[5:25].view(4, 5)
    with pytest.raises(ValueError, match=f"out partially overlaps {name}"):
        mse_loss_backward(*args, "none", out=out)
    assert torch.equal(storage, before)


def test_out_overlapping_a_scalar_grad(no_launch):
    out = torch.zeros(4, 5)
    grad = out[0, 0]
    with pytest.raises(ValueError, match="out partially overlaps grad_output"):
        mse_loss_backward(grad, *_args()[1:], "mean", out=out)


def test_out_on_another_device(no_launch):
    with pytest.raises(ValueError, match="out"):
        mse_loss_backward(*_args(), "mean", out=torch.empty(4, 5, device="meta"))


def test_float64_refused_on_backend_without_it(no_launch):
    import dataclasses
    cpu = backends.backend_for(torch.device("cpu"))
    args = _args()
    args[2] = args[2].double()
    with backends.overridden(torch.device("cpu"), dataclasses.replace(cpu, supports_fp64=False)):
        with pytest.raises(TypeError, match="target is float64"):
            mse_loss_backward(*args, "mean")


def test_a_lazily_negated_tensor_is_refused_not_misread(no_launch):
    # A real view with the negative bit set: its memory holds the negation of its values.
    x = torch.tensor([1 + 2j, 3 - 4j]).conj().imag
    assert x.is_neg()
    with pytest.raises(TypeError, match="self has its negative bit set"):
        mse_loss_backward(torch.ones(2), x, torch.zeros(2), "none")


def test_nested_tensors_are_a_type_error(no_launch):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nested tensors are a prototype
        nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match="target must be a dense .*nested"):
        mse_loss_backward(torch.ones(2), torch.ones(2), nested, "none")


@pytest.mark.parametrize("position,name", [(1, "self"), (2, "target")])
def test_a_zero_tensor_input_is_a_type_error(position, name, no_launch):
    args = _args((4,))
    args[position] = torch._efficientzerotensor(4)
    with pytest.raises(TypeError, match=f"{name} is a ZeroTensor"):
        mse_loss_backward(*args, "none")
