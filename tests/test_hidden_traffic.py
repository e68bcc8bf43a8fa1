"""No hidden traffic: with the kernel launch stubbed, the only ATen operator a call issues is
the output's allocation (none when ``out`` is given), and exactly one kernel is launched."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mse_grad_triton import mse_loss_backward


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


# The output's allocation: empty_like(self) where the result has self's shape (cheaper on the
# host), empty(shape) where it broadcasts to another.
ALLOCATIONS = {"aten.empty.memory_format", "aten.empty_like.default"}


@pytest.fixture
def launches(stubbed_launches):
    """Every launch, as (plan, operands); nothing runs."""
    return stubbed_launches


CASES = {
    "contiguous": lambda: (torch.ones(8, 9), torch.ones(8, 9), torch.ones(8, 9)),
    "scalar_grad": lambda: (torch.tensor(1.0), torch.ones(8, 9), torch.ones(8, 9)),
    "broadcast": lambda: (torch.ones(9), torch.ones(8, 9), torch.ones(8, 1)),
    "expanded": lambda: (torch.ones(9).expand(8, 9), torch.ones(8, 9), torch.ones(8, 9)),
    "strided": lambda: (torch.ones(8, 9), torch.ones(9, 8).t(), torch.ones(8, 20)[:, ::2][:, :9]),
    "mixed_dtypes": lambda: (torch.ones(8, 9, dtype=torch.bfloat16),
                             torch.ones(8, 9, dtype=torch.float16), torch.ones(8, 9)),
}


@pytest.mark.parametrize("case", CASES)
def test_only_the_output_allocation(case, launches):
    grad, self, target = CASES[case]()
    with RecordOps() as recorder:
        result = mse_loss_backward(grad, self, target, "mean")
    assert len(recorder.ops) == 1 and recorder.ops[0] in ALLOCATIONS
    assert result.is_contiguous() and result.shape == (8, 9) and result.dtype == self.dtype
    assert len(launches) == 1
    # The kernel receives the caller's tensors themselves, not copies.
    pointers = launches[0][1][:4]  # the operands the kernel receives
    assert pointers[0] is grad and pointers[1] is self and pointers[2] is target
    assert pointers[3] is result


@pytest.mark.parametrize("case", CASES)
def test_no_op_at_all_with_out(case, launches):
    grad, self, target = CASES[case]()
    out = torch.empty(8, 9)
    with RecordOps() as recorder:
        mse_loss_backward(grad, self, target, "sum", out=out)
    assert recorder.ops == []
    assert len(launches) == 1 and launches[0][1][3] is out


@pytest.mark.parametrize("case", CASES)
def test_pair_allocates_both_results_and_launches_once(case, launches):
    from mse_grad_triton import mse_loss_backward_pair
    grad, self, target = CASES[case]()
    with RecordOps() as recorder:
        grad_self, grad_target = mse_loss_backward_pair(grad, self, target, "sum")
    assert recorder.ops == ["aten.empty.memory_format"] * 2
    assert len(launches) == 1
    pointers = launches[0][1][:5]
    assert pointers[3] is grad_self and pointers[4] is grad_target
    assert launches[0][0].constexprs["WRITE_NEGATED"] is True
