"""Host path: what a call costs on the host, measured on any machine.

    python bench/host_path.py [--quick] [--output DIR] [--no-driver-stub]

Two measurements, each as medians of interleaved runs in one process, reported as ratios:

1. **Launch path through Triton's real dispatch** (needs upstream Triton and a C compiler):
   upstream Triton's own JIT, compiler (ptxas) and C launcher, with a stand-in
   ``libcuda.so.1`` (``stub_libcuda.c``, built here) in which every driver call succeeds and
   ``cuLaunchKernelEx`` only counts. CPU tensors stand in for device memory, which nothing
   touches. Compared: ``mse_loss_backward(backend="triton")`` on 16 elements; the same kernel
   through ``kernel[grid](...)`` (Triton's per-call JIT work); a minimal 4-argument vector add
   through ``kernel[grid](...)``; ATen's whole CPU ``mse_loss_backward`` on the same tensors.
   Also the compiled variants over ``[B, 1000]`` float32, B = 1..256, per launch path.
2. **A training step** (``loss = fn(x, y); loss.backward()`` on ``[64, 1]`` float32, with a
   tuned table whose crossover sends the backward to the native op, as it would on a device
   with such a table): ``mgt.MSELoss``, stock ``torch.nn.MSELoss`` under ``mgt.enabled()``
   (the C++ override in front, where it builds), the same with the Python override alone,
   stock ``torch.nn.MSELoss`` alone, and stock under a bare Python override that only calls
   PyTorch's kernel (what any Python-registered override costs: the Python override's floor).

Writes ``host_path.json`` to --output (default bench/results/host) and prints a table.
Figures depend on the host CPU; the ratios are what to compare.
"""

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional
from unittest import mock

import torch

HERE = Path(__file__).resolve().parent
STUB_SOURCE = HERE / "stub_libcuda.c"


def interleaved_medians(fns: Dict[str, Callable[[], object]], calls: int, rounds: int,
                        contexts: Optional[Dict[str, Callable[[], ContextManager]]] = None
                        ) -> Dict[str, float]:
    """Median microseconds per call of each function, over ``rounds`` rounds of ``calls``
    back-to-back calls, the functions taking turns within each round in a shuffled order (no
    function always runs after the same one), each inside its ``contexts`` entry, entered
    outside the timed calls."""
    contexts = contexts or {}
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    order, shuffle = list(fns), random.Random(0).shuffle
    for _ in range(rounds + 1):  # the first round warms up and is discarded
        shuffle(order)
        for name in order:
            fn = fns[name]
            with contexts.get(name, contextlib.nullcontext)():
                fn()
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values[1:]) for name, values in samples.items()}


# --- 1. Triton's real dispatch, driver stubbed ---------------------------------------------

def driver_stub_unavailable() -> Optional[str]:
    """Why the stubbed-driver measurement cannot run here, or None."""
    from mse_grad_triton import triton_compat

    if triton_compat.FLAVOUR != "upstream":
        return (f"needs upstream Triton's CUDA launcher ({triton_compat.FLAVOUR} Triton "
                "installed; ./run bench runs it in .venv-upstream)")
    if torch.cuda.is_available():
        return "a real GPU is present: the benchmark's end-to-end column measures this"
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build the stand-in libcuda.so.1"
    return None


def install_driver_stub(folder: Path):
    """Build and load the stand-in ``libcuda.so.1``, and make Triton's CUDA driver active on
    it as device 0 (sm_90, stream 0). Returns the loaded library (``stub_launch_count``)."""
    library = folder / "libcuda.so.1"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o",
                    str(library), str(STUB_SOURCE)], check=True)
    # Loaded first by path: the dlopen("libcuda.so.1") in Triton's C code then finds it by
    # its soname; TRITON_LIBCUDA_PATH lets Triton's launcher link against it.
    stub = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    stub.stub_launch_count.restype = ctypes.c_uint64
    os.environ["TRITON_LIBCUDA_PATH"] = str(folder)
    import triton
    from triton.backends.nvidia.driver import CudaDriver

    driver = CudaDriver()
    driver.get_current_device = lambda: 0
    driver.get_current_stream = lambda device=None: 0
    driver.get_device_capability = lambda device=0: (9, 0)
    triton.runtime.driver.set_active(driver)
    return stub


def launch_path(stub, quick: bool) -> dict:
    """Host microseconds per call through Triton's real JIT and C launcher (driver stubbed)."""
    import triton
    import triton.language as tl

    from mse_grad_triton import backends, launcher, mse_loss_backward

    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask)
                 + tl.load(y_ptr + offsets, mask=mask), mask=mask)

    grad, self, target = torch.ones(()), torch.ones(16), torch.zeros(16)
    added = torch.empty(16)
    gpu = backends.CompiledBackend("cuda", "stub_sm90", 132, True, torch.device("cuda", 0))
    with backends.overridden("cpu", gpu):
        variants = compiled_variants(range(1, 257, 15 if quick else 1))
        plan = launcher.explain(grad, self, target, backend="triton")
        planned = launcher._call(grad, self, target, "mean", None, "triton", False).plan
        out = torch.empty(16)
        operands = (grad, self, target, out, out)

        def through_jit():
            planned.kernel[(planned.num_programs,)](
                *operands, *planned.scalar_args, **planned.constexprs,
                num_warps=planned.config.num_warps)

        fns = {
            "aten_whole_call": lambda: torch.ops.aten.mse_loss_backward(grad, self, target, 1),
            "mse_loss_backward": lambda: mse_loss_backward(grad, self, target,
                                                           backend="triton"),
            "our_kernel_via_jit": through_jit,
            "vector_add_via_jit": lambda: add_kernel[(1,)](self, target, added, 16, BLOCK=16),
        }
        before = stub.stub_launch_count()
        calls, rounds = (500, 5) if quick else (2000, 15)
        medians = interleaved_medians(fns, calls, rounds)
        launches = stub.stub_launch_count() - before
    aten = medians["aten_whole_call"]
    launching = len(fns) - 1  # every function but ATen's launches one kernel per call
    return {
        "path": plan.path, "numel": 16, "us": medians,
        "ratio_to_aten": {name: us / aten for name, us in medians.items()},
        "launches_counted": launches,
        "launches_expected": launching * (calls + 1) * (rounds + 1),
        "compiled_variants": variants,
    }


def compiled_variants(batch_sizes) -> Dict[str, int]:
    """Kernels Triton compiles for ``[B, 1000]`` float32 calls over ``batch_sizes``, per launch
    path (grad_output ``[B, 1000]``: ``flat``; 0-d: ``flat_scalar_grad``), counted in its
    JIT cache."""
    from mse_grad_triton import kernels, mse_loss_backward, triton_compat

    kernel = kernels.mse_loss_backward_flat_kernel
    counts = {}
    for path, grad_shape in (("flat", lambda b: [b, 1000]), ("flat_scalar_grad", lambda b: [])):
        before = triton_compat.compiled_variants(kernel)
        for batch in batch_sizes:
            grad = torch.ones(grad_shape(batch))
            mse_loss_backward(grad, torch.ones(batch, 1000), torch.zeros(batch, 1000),
                              backend="triton")
        counts[path] = triton_compat.compiled_variants(kernel) - before
    return counts


# --- 2. a training step ----------------------------------------------------------------------

def training_step(quick: bool) -> dict:
    """Microseconds per training step on [64, 1] float32, backward sent to the native op."""
    import mse_grad_triton as mgt
    from mse_grad_triton import cpp_override, tables

    with tempfile.TemporaryDirectory() as folder:
        # A crossover as a tuned table on a device with slow launches would record it.
        Path(folder, "cpu.json").write_text(json.dumps({
            "format": tables.FORMAT, "device": "cpu", "entries": [],
            "native_below": {"float32": 1 << 20, "float16": 1 << 20, "bfloat16": 1 << 20}}))
        previous = os.environ.get(tables.TUNE_DIR_ENV)
        os.environ[tables.TUNE_DIR_ENV] = folder
        tables.clear_cache()
        try:
            torch.manual_seed(0)
            x = torch.randn(64, 1, requires_grad=True)
            y = torch.randn(64, 1)
            ours, stock = mgt.MSELoss(), torch.nn.MSELoss()

            def step(loss_fn):
                def run():
                    x.grad = None
                    loss_fn(x, y).backward()
                return run

            fns = {"stock_MSELoss": step(stock), "mgt_MSELoss": step(ours),
                   "stock_MSELoss_under_enabled": step(stock),
                   "stock_MSELoss_under_enabled_python_only": step(stock),
                   "stock_MSELoss_under_bare_override": step(stock)}
            contexts = {"stock_MSELoss_under_enabled": lambda: mgt.enabled(devices=("cpu",)),
                        "stock_MSELoss_under_enabled_python_only": python_override_only,
                        "stock_MSELoss_under_bare_override": bare_python_override}
            with mgt.enabled(devices=("cpu",)):  # builds the C++ override if need be
                override = mgt.enabled_override("cpu")
            calls, rounds = (200, 5) if quick else (1000, 15)
            medians = interleaved_medians(fns, calls, rounds, contexts)
        finally:
            if previous is None:
                os.environ.pop(tables.TUNE_DIR_ENV, None)
            else:
                os.environ[tables.TUNE_DIR_ENV] = previous
            tables.clear_cache()
    base = medians["stock_MSELoss"]
    return {"shape": [64, 1], "us": medians,
            "ratio_to_stock": {k: v / base for k, v in medians.items()},
            "enabled_override": override,
            "cpp_override_unavailable": cpp_override.why_unavailable()}


@contextlib.contextmanager
def python_override_only():
    """``mgt.enabled()`` with its Python override alone, as where the C++ one cannot be
    built."""
    import mse_grad_triton as mgt
    from mse_grad_triton import cpp_override

    with mock.patch.dict(os.environ, {cpp_override.ENABLE_ENV: "0"}), \
            mgt.enabled(devices=("cpu",)):
        yield


@contextlib.contextmanager
def bare_python_override():
    """The floor of any Python-registered override of ``aten::mse_loss_backward`` (as
    ``mgt.enable`` installs): one that only calls PyTorch's own CPU kernel."""
    kernel = torch.library.get_kernel("aten::mse_loss_backward.grad_input", "CPU")
    keyset = torch._C.DispatchKeySet("CPU")

    def mse_loss_backward(grad_output, self, target, reduction):
        return kernel.call_boxed(keyset, grad_output, self, target, reduction,
                                 grad_input=torch.empty_like(self))

    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():  # "Overriding a previously registered kernel"
            warnings.simplefilter("ignore", UserWarning)
            library.impl("mse_loss_backward", mse_loss_backward, "CPU")
        yield
    finally:
        library._destroy()


def measure(quick: bool, driver_stub: bool = True) -> dict:
    """Both measurements (the first where it can run here, else why not), as a dict."""
    import triton

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"torch": torch.__version__, "triton": triton.__version__,
                     "python": platform.python_version()},
    }
    skipped = None if driver_stub else "not requested"
    skipped = skipped or driver_stub_unavailable()
    if skipped:
        report["launch_path"] = {"skipped": skipped}
    else:  # first: Triton's driver is switched for good in this process
        with tempfile.TemporaryDirectory() as folder:
            report["launch_path"] = launch_path(install_driver_stub(Path(folder)), quick)
    report["training_step"] = training_step(quick)
    return report


def format_report(report: dict) -> str:
    """The report as lines of text."""
    lines = []
    launch = report["launch_path"]
    if "skipped" in launch:
        lines.append(f"launch path through Triton's real dispatch: skipped ({launch['skipped']})")
    else:
        lines.append(f"launch path, {launch['numel']} elements ({launch['path']}), through "
                     f"Triton {report['versions']['triton']}'s real JIT and C launcher, driver "
                     f"stubbed ({launch['launches_counted']} launches counted, "
                     f"{launch['launches_expected']} expected):")
        for name, us in launch["us"].items():
            lines.append(f"  {name:<40} {us:8.2f} us  {launch['ratio_to_aten'][name]:5.2f}x "
                         "ATen's whole call")
        lines.append("  compiled variants over [B, 1000] float32, B = 1..256: " + ", ".join(
            f"{path} {count}" for path, count in launch["compiled_variants"].items()))
    step = report["training_step"]
    lines.append("training step, [64, 1] float32, backward below the tuned crossover "
                 f"(native op); enabled() installs the {step['enabled_override']} override"
                 + (f" ({step['cpp_override_unavailable']})"
                    if step["cpp_override_unavailable"] else "") + ":")
    for name, us in step["us"].items():
        lines.append(f"  {name:<40} {us:8.2f} us  {step['ratio_to_stock'][name]:5.2f}x stock")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and batch sizes")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "host")
    parser.add_argument("--no-driver-stub", action="store_true",
                        help="skip the measurement through Triton's real dispatch")
    args = parser.parse_args(argv)
    report = measure(args.quick, driver_stub=not args.no_driver_stub)
    print(format_report(report))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "host_path.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
