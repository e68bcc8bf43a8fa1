"""The C++ override (``cpp_override``, ``csrc/cpp_override.cpp``): it builds where a compiler
is; below the crossover it runs PyTorch's kernel with no Python at all, above it hands the call
to the Python override; its cached crossovers follow the tables in force; where it cannot be
built, ``enable()`` warns and installs the Python override alone."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import mse_grad_triton as mgt
from mse_grad_triton import cpp_override
from mse_grad_triton.testing import assert_ulp_close, make

ALL_BELOW = {"float32": 1 << 20, "float16": 1 << 20, "bfloat16": 1 << 20}


@pytest.fixture(autouse=True)
def stock_pytorch_after():
    yield
    mgt.disable()


@pytest.fixture
def cpp():
    """The C++ override in front (skipped, with the reason, where it cannot be built)."""
    if not cpp_override.available():
        pytest.skip(f"the C++ override is unavailable: {cpp_override.why_unavailable()}")


def _python_ops_run(fn) -> set:
    """The package's Python-registered ops that ``fn()`` runs, as the profiler records them."""
    with torch.profiler.profile() as profile:
        fn()
    return {event.name for event in profile.events()
            if event.name.startswith("mse_grad_triton::")}


def test_it_builds_where_there_is_a_compiler():
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    assert cpp_override.available(), cpp_override.why_unavailable()
    assert cpp_override.why_unavailable() is None


def test_below_the_crossover_no_python_runs(cpp, recorded_launches, tuned_crossover):
    tuned_crossover({"float32": 100})
    grad = torch.tensor(1.0)
    small, small_target = make([64, 1], torch.float32, 1), make([64, 1], torch.float32, 2)
    large, large_target = make([20, 10], torch.float32, 1), make([20, 10], torch.float32, 2)
    with mgt.enabled(devices=("cpu",)):
        assert mgt.enabled_override("cpu") == "c++"
        first = _python_ops_run(
            lambda: torch.ops.aten.mse_loss_backward(grad, small, small_target, 1))
        assert first == {"mse_grad_triton::native_below"}  # the crossover, read once
        assert _python_ops_run(
            lambda: torch.ops.aten.mse_loss_backward(grad, small, small_target, 1)) == set()
        assert len(recorded_launches) == 0
        assert "mse_grad_triton::enabled_mse_loss_backward" in _python_ops_run(
            lambda: torch.ops.aten.mse_loss_backward(grad, large, large_target, 1))
        assert len(recorded_launches) == 1


def test_the_cached_crossover_follows_the_tables(cpp, recorded_launches, tuned_crossover):
    grad, x, y = torch.tensor(1.0), make([4, 5], torch.float32, 1), make([4, 5], torch.float32, 2)
    tuned_crossover({"float32": 100})
    with mgt.enabled(devices=("cpu",)):
        torch.ops.aten.mse_loss_backward(grad, x, y, 1)
        assert len(recorded_launches) == 0
        tuned_crossover({"float32": 10})  # 20 elements are above it now
        torch.ops.aten.mse_loss_backward(grad, x, y, 1)
        assert len(recorded_launches) == 1
        tuned_crossover({"float32": 100})
        torch.ops.aten.mse_loss_backward(grad, x, y, 1)
        assert len(recorded_launches) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("grad_shape", [[], [6, 5]], ids=["0d_grad", "full_grad"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_results_are_pytorchs_on_both_sides_of_the_override(cpp, tuned_crossover, dtype,
                                                            grad_shape, layout):
    # float64 has no crossover: the C++ override hands it to the Python one (the kernel).
    tuned_crossover(ALL_BELOW)
    shape = [6, 5] if layout == "contiguous" else [5, 6]
    x, y = make(shape, dtype, 1), make(shape, dtype, 2)
    if layout == "transposed":
        x, y = x.t(), y.t()
    grad = make(grad_shape, dtype, 3)
    for reduction in (0, 1, 2):
        expected = torch.ops.aten.mse_loss_backward(grad, x, y, reduction)
        with mgt.enabled(devices=("cpu",)):
            result = torch.ops.aten.mse_loss_backward(grad, x, y, reduction)
        assert result.is_contiguous() and result.dtype == dtype
        if dtype == torch.float64:
            assert_ulp_close(result, expected)
        else:  # PyTorch's own kernel ran
            torch.testing.assert_close(result, expected, rtol=0, atol=0)


def test_without_a_compiler_enable_falls_back_to_the_python_override(tmp_path):
    script = """
import warnings
import torch
import mse_grad_triton as mgt
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mgt.enable(devices=("cpu",))
print(mgt.enabled_override("cpu"))
print(sum("C++ override is unavailable" in str(w.message) for w in caught))
x = torch.ones(3, requires_grad=True)
torch.nn.MSELoss()(x, torch.zeros(3)).backward()
print(x.grad.tolist())
"""
    env = dict(os.environ, CXX="no-such-compiler", **{cpp_override.CACHE_DIR_ENV: str(tmp_path)})
    env.pop(cpp_override.ENABLE_ENV, None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    override, warnings_seen, grad = run.stdout.split("\n")[:3]
    assert (override, warnings_seen) == ("python", "1")
    assert grad == str([torch.tensor(2 / 3).item()] * 3)  # float32


def test_a_failed_install_leaves_pytorch_as_it_was(cpp, recorded_launches, monkeypatch):
    def fails(dispatch_key):
        raise RuntimeError("install failed")

    monkeypatch.setattr(cpp_override, "install", fails)
    with pytest.raises(RuntimeError, match="install failed"):
        mgt.enable(devices=("cpu",))
    with pytest.raises(RuntimeError, match="install failed"), mgt.enabled(devices=("cpu",)):
        pass
    assert mgt.enabled_devices() == () and mgt.enabled_override("cpu") is None
    x = make([4, 5], torch.float32, 1).requires_grad_()
    torch.nn.MSELoss()(x, make([4, 5], torch.float32, 2)).backward()
    assert len(recorded_launches) == 0  # PyTorch's own kernels, the Python ones removed too
    monkeypatch.undo()
    with mgt.enabled(devices=("cuda",)):  # the failed requests for the CPU left nothing behind
        assert mgt.enabled_devices() == ("cuda",)
