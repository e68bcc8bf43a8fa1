"""The compiled kernel on a real device — an Ascend NPU (triton-ascend + torch_npu) or a CUDA
GPU — against the float64 reference and the native op (aclnnMseLossBackward through torch_npu;
ATen on CUDA), over the CPU suite's cases. Skipped where there is no such device.

On an Atlas host: ``MSE_GRAD_TRITON_PYTHON=$(which python) ./run test -m npu``.
"""

import pytest
import torch
from cases import DTYPES, LAYOUTS, REDUCTIONS

import mse_grad_triton as mgt
from mse_grad_triton import mse_loss_backward
from mse_grad_triton.reduction import parse_reduction
from mse_grad_triton.testing import (
    MAX_ULP,
    assert_ulp_close,
    make,
    reference,
    ulp_distance,
)

DEVICES = [pytest.param("npu", marks=pytest.mark.npu),
           pytest.param("cuda", marks=pytest.mark.cuda)]


def _cpu(*tensors):
    return [t.cpu() for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference_and_native_op(device, dtype, reduction, layout):
    grad, self, target = LAYOUTS[layout](dtype, device)
    result = mse_loss_backward(grad, self, target, reduction)
    assert result.device == self.device and result.dtype == dtype
    expected = reference(*_cpu(grad, self, target), reduction)
    assert_ulp_close(result.cpu(), expected)
    native = torch.ops.aten.mse_loss_backward(grad, self, target, parse_reduction(reduction))
    # The native op rounds in the input dtype (and more than once): ours is within budget and
    # at least as close to the exact value at its worst.
    native_worst = ulp_distance(native.cpu(), expected).max().item()
    assert ulp_distance(result.cpu(), expected).max().item() <= max(native_worst,
                                                                    MAX_ULP[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("out_dtype", DTYPES, ids=str)
def test_mixed_dtypes_and_strided_out(device, out_dtype):
    grad = make([], torch.bfloat16, 1, device=device)
    self = make([130, 37], torch.float16, 2, device=device).t()
    target = make([37, 1], torch.float32, 3, device=device)
    out = torch.empty(130, 37, dtype=out_dtype, device=device).t()
    assert mse_loss_backward(grad, self, target, "mean", out=out) is out
    assert_ulp_close(out.cpu(), reference(*_cpu(grad, self, target), "mean"))


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    grad, self, target = LAYOUTS["broadcast_target"](torch.bfloat16, device)
    first = mse_loss_backward(grad, self, target, "none")
    assert torch.equal(first, mse_loss_backward(grad, self, target, "none"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("native_below", [0, 1 << 20], ids=["kernel", "native_op"])
def test_stock_training_under_enable(device, native_below, override, tuned_crossover):
    # Either side of the crossover, through the C++ override and through the Python one.
    tuned_crossover({"float32": native_below}, device=device)
    x = make([64, 1], torch.float32, 1, device=device).requires_grad_()
    y = make([64, 1], torch.float32, 2, device=device)
    torch.nn.MSELoss()(x, y).backward()
    stock, x.grad = x.grad.clone(), None
    try:
        with mgt.enabled(devices=(device,)):
            assert mgt.enabled_override(device) == override
            torch.nn.MSELoss()(x, y).backward()
    finally:
        mgt.disable()
    if native_below:
        assert torch.equal(x.grad, stock)
    else:
        assert_ulp_close(x.grad.cpu(), stock.cpu().double())


def _free_bytes(device: str) -> int:
    return getattr(torch, device).mem_get_info()[0]


@pytest.mark.parametrize("device", DEVICES)
def test_more_than_2_pow_31_elements(device):
    n = 2**31 + 2**20 + 7
    if _free_bytes(device) < 3 * 2 * n + 2**30:
        pytest.skip("not enough free device memory for three 2**31-element fp16 tensors")
    self = torch.full((n,), 0.25, dtype=torch.float16, device=device)
    target = torch.full((n,), 1.5, dtype=torch.float16, device=device)
    windows = [slice(s, s + 4096) for s in (0, 2**31 - 2048, n - 4096)]  # both sides of 2**31
    for seed, window in enumerate(windows):
        self[window] = make([4096], torch.float16, seed, device=device)
    grad = torch.tensor(3.0, dtype=torch.float16, device=device)
    result = mse_loss_backward(grad, self, target, "mean")
    for window in windows:
        expected = 3.0 * (self[window].double().cpu() - 1.5) * (2.0 / n)
        assert_ulp_close(result[window].cpu(), expected)
