"""Cases shared by the test modules: dtypes, reductions and input layouts, built on any
device (the CPU interpreter's suite and the device tests run the same ones)."""

import torch

from mse_grad_triton.testing import make

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
REDUCTIONS = ["none", "mean", "sum"]


def _maker(dtype, device):
    return lambda shape, seed: make(shape, dtype, seed, device=device)


# Input layouts: (dtype, device) -> (grad_output, self, target), built on the device itself so
# that views keep their strides.
def _contiguous(dtype, device="cpu"):
    m = _maker(dtype, device)
    return m([37, 130], 1), m([37, 130], 2), m([37, 130], 3)


def _scalar_grad(dtype, device="cpu"):
    m = _maker(dtype, device)
    return m([], 1), m([37, 130], 2), m([37, 130], 3)


def _broadcast_target(dtype, device="cpu"):  # target [N, 1] against self [N, D]
    m = _maker(dtype, device)
    return m([37, 130], 1), m([37, 130], 2), m([37, 1], 3)


def _broadcast_self(dtype, device="cpu"):  # self smaller than the result: mean / self.numel()
    m = _maker(dtype, device)
    return m([], 1), m([1, 130], 2), m([37, 130], 3)


def _transposed_self(dtype, device="cpu"):
    m = _maker(dtype, device)
    return m([37, 130], 1), m([130, 37], 2).t(), m([37, 130], 3)


def _sliced(dtype, device="cpu"):
    m = _maker(dtype, device)
    return m([37, 130], 1), m([37, 200], 2)[:, 7:137], m([74, 130], 3)[::2]


def _channels_last(dtype, device="cpu"):
    m = _maker(dtype, device)
    self = m([2, 9, 6, 7], 2).to(memory_format=torch.channels_last)
    return m([2, 9, 6, 7], 1), self, m([2, 9, 6, 7], 3)


def _channels_last_dense(dtype, device="cpu"):  # 8 channels: a tile holds them all, and the
    m = _maker(dtype, device)                     # turned operand's tile is one run
    self = m([2, 8, 5, 7], 2).to(memory_format=torch.channels_last)
    return m([2, 8, 5, 7], 1), self, m([2, 8, 5, 7], 3)


def _expanded_grad(dtype, device="cpu"):  # stride-0 grad_output, as autograd's expand makes
    m = _maker(dtype, device)
    return m([130], 1).expand(37, 130), m([37, 130], 2), m([130], 3)


def _rows_of_4(dtype, device="cpu"):  # short rows: many per 2-D tile, target one per row
    m = _maker(dtype, device)
    return m([], 1), m([300, 4], 2), m([300, 1], 3)


def _rows_of_3(dtype, device="cpu"):  # rows shorter than the tile: masked columns
    m = _maker(dtype, device)
    return m([6, 50, 3], 1), m([6, 50, 3], 2), m([6, 1, 3], 3)


def _rank3_broadcast(dtype, device="cpu"):
    m = _maker(dtype, device)
    return m([5, 1, 1], 1), m([5, 1, 130], 2), m([1, 9, 130], 3)


LAYOUTS = {f.__name__[1:]: f for f in (
    _contiguous, _scalar_grad, _broadcast_target, _broadcast_self, _transposed_self, _sliced,
    _channels_last, _channels_last_dense, _expanded_grad, _rows_of_4, _rows_of_3, _rank3_broadcast)}
