"""Layout analysis: broadcasting, TensorIterator-style ordering and coalescing, launch paths."""

import pytest
import torch

from mse_grad_triton import kernels, layout
from mse_grad_triton.kernels import MAX_OUTER_DIMS


def _rows(grad, self, target, out=None):
    shape = torch.broadcast_shapes(grad.shape, self.shape, target.shape)
    out = torch.empty(shape) if out is None else out
    return layout.coalesce(shape, [layout.broadcast_strides(tuple(t.shape), t.stride(), shape)
                                   for t in (grad, self, target, out)])


def _offsets(rows, operand):
    """Every element's offset for one operand, in the layout's iteration order."""
    offsets = torch.zeros(1, dtype=torch.long)
    for size, stride in zip(rows.sizes, rows.strides[operand]):  # innermost first
        offsets = (torch.arange(size).unsqueeze(1) * stride + offsets.unsqueeze(0)).flatten()
    return offsets


@pytest.mark.parametrize("shapes,expected", [
    (([], [3], [2, 1]), (2, 3)),
    (([5, 1, 4], [3, 1], [1]), (5, 3, 4)),
    (([0], [1], []), (0,)),
])
def test_broadcast_shapes(shapes, expected):
    assert layout.broadcast_shapes(shapes, ["a", "b", "c"]) == expected


def test_broadcast_shapes_names_the_misfit():
    with pytest.raises(ValueError, match=r"c of shape \[4\] does not broadcast with \[2, 3\]"):
        layout.broadcast_shapes([(2, 1), (3,), (4,)], ["a", "b", "c"])


def test_broadcast_strides_zero_where_broadcast():
    assert layout.broadcast_strides((3, 1), (1, 1), (2, 3, 4)) == (0, 1, 0)


def test_contiguous_coalesces_to_one_flat_row():
    rows = _rows(*(torch.ones(2, 3, 4, 5) for _ in range(3)))
    assert rows.sizes == (120,) and rows.path == "flat"


def test_scalar_grad_path():
    rows = _rows(torch.tensor(2.0), torch.ones(6, 7), torch.ones(6, 7))
    assert rows.sizes == (42,) and rows.scalar_grad and rows.path == "flat_scalar_grad"
    assert rows.strides[layout.GRAD] == (0,)


def test_broadcast_target_keeps_two_dims():
    rows = _rows(torch.ones(6, 7), torch.ones(6, 7), torch.ones(6, 1))
    assert rows.sizes == (7, 6) and rows.path == "strided"
    assert rows.strides[layout.TARGET] == (0, 1)


def test_size_one_dims_dropped_and_zero_dims_become_one_element():
    rows = _rows(torch.ones(1, 1), torch.ones(1), torch.ones(1, 1, 1))
    assert rows.sizes == (1,) and rows.num_rows == 1


def test_output_order_decides_between_equals():
    out = torch.empty(5, 4).t()  # [4, 5] walked column-major
    rows = _rows(torch.tensor(1.0), torch.ones(5, 4).t(), torch.ones(4, 5), out=out)
    assert rows.strides[layout.OUT][0] == 1 and rows.sizes == (4, 5)


def test_tile_columns_follow_the_operands_with_unit_stride():
    out = torch.empty(5, 4).t()  # [4, 5] walked column-major; every input row-major
    rows = _rows(torch.ones(4, 5), torch.ones(4, 5), torch.ones(4, 5), out=out)
    assert rows.sizes == (5, 4) and rows.strides[layout.SELF] == (1, 5)
    assert rows.strides[layout.OUT] == (4, 1)  # stored along its own rows: transposed
    assert rows.tile_modes() == (kernels.TILE.value,) * 3 + (kernels.TRANSPOSED.value,)


@pytest.mark.parametrize("make", [
    lambda: (torch.ones(3, 4, 5), torch.ones(5, 4, 3).permute(2, 1, 0), torch.ones(4, 1)),
    lambda: (torch.tensor(1.0), torch.ones(2, 6, 3, 4)[:, ::2], torch.ones(3, 1, 4)),
    lambda: (torch.ones(2, 3, 4, 5).to(memory_format=torch.channels_last),
             torch.ones(5), torch.ones(3, 1, 1)),
    lambda: (torch.ones(7).expand(2, 3, 7), torch.ones(2, 3, 7), torch.ones(2, 1, 7)),
], ids=["permuted", "sliced", "channels_last", "expanded"])
def test_layout_reaches_exactly_the_elements_torch_does(make):
    tensors = make()
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    rows = _rows(*tensors)
    out_offsets = _offsets(rows, layout.OUT)
    # Each output element once; each operand's offset at that position is torch's offset.
    assert sorted(out_offsets.tolist()) == list(range(int(torch.tensor(shape).prod())))
    for k, tensor in enumerate(tensors):
        expected = torch.as_strided(
            torch.arange(tensor.untyped_storage().nbytes() // tensor.element_size()),
            tensor.shape, tensor.stride(), tensor.storage_offset()).expand(shape) \
            - tensor.storage_offset()
        got = torch.empty(shape, dtype=torch.long).view(-1)
        got[out_offsets] = _offsets(rows, k)
        assert torch.equal(got.view(shape), expected)


def test_too_many_dims_after_coalescing():
    # Broadcast in every other dim: nothing merges.
    n = MAX_OUTER_DIMS + 2
    shape = (2, 3) * ((n + 1) // 2)
    with pytest.raises(ValueError, match="coalesced"):
        _rows(torch.ones(shape), torch.ones(shape), torch.ones((2, 1) * ((n + 1) // 2)))


@pytest.mark.parametrize("grad, self, target, expected", [
    # target [N, 1] against [N, 4]: one value per row for the target
    (torch.empty([]), torch.empty(64, 4), torch.empty(64, 1), (False, False, True)),
    # grad and self one per row, target walks the rows as the output does
    (torch.empty(64, 1), torch.empty(64, 1), torch.empty(64, 8), (True, True, False)),
    (torch.empty(64, 2), torch.empty(64, 2), torch.empty(64, 1), (False, False, True)),
    # rows of 3 or of 16: not a power of two up to 8
    (torch.empty([]), torch.empty(64, 3), torch.empty(64, 1), None),
    (torch.empty([]), torch.empty(64, 16), torch.empty(64, 1), None),
    # one value per column (a [1, 4] target), a sliced row, nothing per row: not this form
    (torch.empty([]), torch.empty(64, 4), torch.empty(1, 4), None),
    (torch.empty([]), torch.empty(64, 64)[:, :4], torch.empty(64, 1), None),
    (torch.empty([]), torch.empty(64, 4), torch.empty(64, 4), None),
    # a target of one value for the whole output is not one per row
    (torch.empty(64, 1), torch.empty(64, 4), torch.empty([]), None),
    # a transposed self
    (torch.empty([]), torch.empty(4, 64).t(), torch.empty(64, 1), None),
])
def test_inputs_of_one_value_per_row(grad, self, target, expected):
    assert _rows(grad, self, target).per_row_inputs() == expected
