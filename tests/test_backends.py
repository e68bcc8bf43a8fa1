"""Device backends: the CPU interpreter path, its isolation, and lazy imports."""

import subprocess
import sys
import threading

import pytest
import torch
import triton
import triton.language as tl

from mse_grad_triton import backends, interpreter, mse_loss_backward, triton_compat
from mse_grad_triton.testing import assert_ulp_close, make, reference

# A target the installed compiler builds for without a device.
NATIVE_TARGET = (triton_compat.target("npu", "Ascend910B3") if triton_compat.FLAVOUR == "ascend"
                 else triton_compat.target("cuda", 90))


def test_cpu_backend_interprets_the_jit_kernel():
    backend = backends.backend_for(torch.device("cpu"))
    assert backend.kind == "cpu" and backend.num_units >= 1 and backend.supports_fp64
    assert isinstance(backend, backends.InterpretedBackend)
    mse_loss_backward(torch.ones(3), torch.ones(3), torch.zeros(3), "sum")
    assert all(isinstance(k, interpreter.InterpretedKernel) for k in backend.kernels.values())
    assert backends.backend_for(torch.device("cpu")) is backend  # cached


def test_interpreting_leaves_triton_language_as_it_was():
    before = {name: getattr(tl, name) for name in ("load", "store", "arange", "range")}
    tensor_dict = dict(vars(tl.tensor))
    mse_loss_backward(torch.ones(3), torch.ones(3), torch.zeros(3), "sum")
    assert {name: getattr(tl, name) for name in before} == before
    assert dict(vars(tl.tensor)) == tensor_dict


def test_triton_still_compiles_after_a_cpu_call():
    # The interpreter patches triton.language for good; the backend restores it, so building
    # Triton IR (for this compiler's own target) in the same process still works.
    mse_loss_backward(torch.ones(3), torch.ones(3), torch.zeros(3), "sum")

    @triton.jit
    def double(x_ptr, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets) * 2)

    spec = triton_compat.specialise(double, (torch.empty(16, device="meta"),), {"BLOCK": 16},
                                    NATIVE_TARGET)
    assert "tt.load" in str(triton_compat.make_ir(spec))


def test_concurrent_cpu_calls_are_correct():
    inputs = [(make([33, 70], torch.float32, 3 * i), make([33, 70], torch.float32, 3 * i + 1),
               make([70], torch.float32, 3 * i + 2)) for i in range(6)]
    results = [None] * len(inputs)

    def work(i):
        grad, self, target = inputs[i]
        results[i] = mse_loss_backward(grad, self, target, "none")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (grad, self, target), result in zip(inputs, results):
        assert_ulp_close(result, reference(grad, self, target, "none"))


def test_import_needs_no_accelerator_stack():
    code = ("import sys, mse_grad_triton; "
            "assert 'torch_npu' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.cuda
def test_cuda_backend_matches_reference():
    grad, self, target = (make([1000, 257], torch.float16, i).cuda() for i in range(3))
    result = mse_loss_backward(grad, self, target.t().contiguous().t(), "mean")
    assert_ulp_close(result.cpu(), reference(grad.cpu(), self.cpu(), target.cpu(), "mean"))


@pytest.mark.npu
def test_npu_backend_properties():
    backend = backends.backend_for(torch.device("npu", 0))
    assert backend.kind == "npu" and backend.num_units > 0 and not backend.supports_fp64


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_bfloat16_results_round_to_nearest_even(input_dtype):
    # 2 * x for x between bfloat16 neighbours: exact ties (1 + 3 * 2**-8 lies halfway between
    # 1 + 2**-7 and 1 + 2**-6) and values just past a midpoint. Truncation would differ.
    x = torch.tensor([1 + 3 * 2**-8, 1 + 2**-8, 1 + 2**-8 + 2**-12, -(1 + 3 * 2**-8),
                      3.3e38 / 2], dtype=input_dtype)
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    mse_loss_backward(torch.tensor(1.0, dtype=input_dtype), x, torch.zeros_like(x), "none",
                      out=out)
    expected = (2 * x.double()).to(torch.bfloat16)
    assert torch.equal(out.view(torch.int16), expected.view(torch.int16))


DIRECT_LAUNCH = r"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import host_path
stub = host_path.install_driver_stub(Path(tempfile.mkdtemp()))
import torch
from triton import knobs
from mse_grad_triton import backends, kernels, launcher, mse_loss_backward, triton_compat

gpu = backends.CompiledBackend("cuda", "stub", 132, True, torch.device("cuda", 0))
grad, target = torch.ones(()), torch.zeros(64)
aligned, shifted = torch.ones(64), torch.ones(65)[1:]   # 4 bytes past a 16-byte boundary
with backends.overridden("cpu", gpu):
    before = stub.stub_launch_count()
    for self in (aligned, shifted, aligned, shifted, aligned):
        mse_loss_backward(grad, self, target, backend="triton")
    assert stub.stub_launch_count() - before == 5
    plan = launcher._call(grad, aligned, target, "mean", None, "triton", False).plan
    # One compiled kernel per alignment, both kept for direct launches.
    assert set(plan.compiled) == {True, (True, False, True, True, True)}, plan.compiled
    assert triton_compat.compiled_variants(kernels.mse_loss_backward_flat_kernel) == 2
    seen = []
    knobs.runtime.launch_enter_hook.add(seen.append)  # a profiler's hook
    mse_loss_backward(grad, aligned, target, backend="triton")
    assert len(seen) == 1 and stub.stub_launch_count() - before == 6
print("ok")
"""


@pytest.mark.skipif(triton_compat.FLAVOUR != "upstream",
                    reason="needs upstream Triton's CUDA launcher (triton-ascend here)")
def test_direct_launches_are_keyed_by_alignment_and_honour_hooks():
    # Upstream Triton's real JIT and C launcher over a stand-in libcuda.so.1 (bench/), in a
    # process of its own: Triton's active driver is switched for good.
    import shutil
    from pathlib import Path

    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the stand-in libcuda.so.1")
    bench = Path(__file__).resolve().parents[1] / "bench"
    result = subprocess.run([sys.executable, "-c", DIRECT_LAUNCH, str(bench)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), \
        result.stdout[-2000:] + result.stderr[-3000:]
