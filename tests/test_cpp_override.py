"""The C++ override (``cpp_override``, ``csrc/cpp_override.cpp``): it builds where a compiler
is; below the crossover it runs PyTorch's kernel with no Python at all, above it hands the call
to the Python override; its cached crossovers follow the tables in force; where it cannot be
built, ``enable()`` warns and installs the Python override alone."""

import json
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


def test_the_cached_crossover_survives_the_epoch_tags_wrap(cpp, recorded_launches,
                                                          tuned_crossover):
    # A crossover cached in one epoch must not be trusted 2^20 epochs later, when the epoch's
    # 20-bit tag comes round again.
    grad, x, y = torch.tensor(1.0), make([4, 5], torch.float32, 1), make([4, 5], torch.float32, 2)
    tuned_crossover({"float32": 100})
    with mgt.enabled(devices=("cpu",)):
        torch.ops.aten.mse_loss_backward(grad, x, y, 1)  # cached: native below 100
        assert len(recorded_launches) == 0
        tuned_crossover({"float32": 10})  # one epoch on: 20 elements are above it now
        cached_in = cpp_override.crossover_epoch() - 1
        for _ in range(cached_in + (1 << 20) - cpp_override.crossover_epoch()):
            cpp_override.forget_crossovers()
        assert cpp_override.crossover_epoch() == cached_in + (1 << 20)
        torch.ops.aten.mse_loss_backward(grad, x, y, 1)
        assert len(recorded_launches) == 1


# --- building the override: locks, read-only and corrupt caches ------------------------------

# Run in a fresh process: enable() on the CPU, then what it warned and which override it has.
# Compiling is replaced by copying the library this test session built (argv[1]): the cache's
# locking, checking and publishing are what run; argv[2] "refuse" makes any build an error.
_ENABLE_SCRIPT = """
import json, shutil, sys, threading, time, warnings
from pathlib import Path
import torch
import mse_grad_triton as mgt
from mse_grad_triton import cpp_override

prebuilt, mode = Path(sys.argv[1]), sys.argv[2]

def compile_from_prebuilt(scratch):
    if mode == "refuse":
        raise RuntimeError("a build was attempted")
    library = scratch / prebuilt.name
    shutil.copy(prebuilt, library)
    torch.ops.load_library(str(library))
    return library

cpp_override.compile_library = compile_from_prebuilt
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if mode == "probe":  # while enable() waits on a build, enabled_override() answers at once
        worker = threading.Thread(target=mgt.enable, kwargs=dict(devices=("cpu",)))
        worker.start()
        time.sleep(0.5)
        start = time.monotonic()
        report["probe"] = [mgt.enabled_override("cpu"), time.monotonic() - start,
                           worker.is_alive()]
        worker.join()
    else:
        mgt.enable(devices=("cpu",))
report["override"] = mgt.enabled_override("cpu")
report["warnings"] = [str(w.message) for w in caught]
x = torch.ones(3, requires_grad=True)
torch.nn.MSELoss()(x, torch.zeros(3)).backward()
report["grad"] = x.grad.tolist()
print(json.dumps(report))
"""


@pytest.fixture
def prebuilt(cpp):
    """The library this test session built (or loaded), to publish into other caches."""
    library = cpp_override.complete_library(cpp_override.build_directory(), quiet=True)
    if library is None:
        pytest.skip("this session's C++ override is not in a writable cache")
    return library


def _enable_in_a_fresh_process(cache, prebuilt, mode="copy", wait=None):
    env = dict(os.environ, **{cpp_override.CACHE_DIR_ENV: str(cache)})
    env.pop(cpp_override.ENABLE_ENV, None)
    if wait is not None:
        env[cpp_override.BUILD_WAIT_ENV] = str(wait)
    run = subprocess.run([sys.executable, "-c", _ENABLE_SCRIPT, str(prebuilt), mode], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # nothing printed: warnings are recorded, the builder is quiet
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["grad"] == [torch.tensor(2 / 3).item()] * 3
    return report


def _cache_folder(cache):
    """The build folder ``cpp_override`` uses under the cache root ``cache``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cpp_override.CACHE_DIR_ENV, str(cache))
        return cpp_override.build_directory()


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def test_a_fresh_cache_is_built_once_and_then_loaded_as_it_is(tmp_path, prebuilt):
    first = _enable_in_a_fresh_process(tmp_path, prebuilt)
    assert first["override"] == "c++" and first["warnings"] == []
    folder = _cache_folder(tmp_path)
    assert (folder / cpp_override.COMPLETE).is_file()
    assert not list(folder.glob("build-*"))  # the scratch folder is gone
    before = _snapshot(folder)
    again = _enable_in_a_fresh_process(tmp_path, prebuilt, mode="refuse")
    assert again["override"] == "c++" and again["warnings"] == []
    assert _snapshot(folder) == before


def test_a_read_only_complete_cache_is_loaded_without_writing(tmp_path, prebuilt):
    _enable_in_a_fresh_process(tmp_path, prebuilt)
    folder = _cache_folder(tmp_path)
    before = _snapshot(folder)
    for path in [*folder.rglob("*"), folder]:
        path.chmod(path.stat().st_mode & 0o555)
    try:
        report = _enable_in_a_fresh_process(tmp_path, prebuilt, mode="refuse")
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert report["override"] == "c++" and report["warnings"] == []
    assert _snapshot(folder) == before  # no lock file, nothing touched (also as root)


def test_an_unwritable_cache_builds_elsewhere_with_a_warning(tmp_path, prebuilt):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    report = _enable_in_a_fresh_process(blocker / "cache", prebuilt)
    assert report["override"] == "c++"
    assert len(report["warnings"]) == 1 and "not writable" in report["warnings"][0]
    assert str(blocker) in report["warnings"][0]


@pytest.mark.parametrize("damage", ["record", "library"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning_naming_the_file(tmp_path, prebuilt, damage):
    _enable_in_a_fresh_process(tmp_path, prebuilt)
    folder = _cache_folder(tmp_path)
    record = folder / cpp_override.COMPLETE
    (folder / "build.ninja").write_bytes(b"\xff\xfe garbage")  # an old build's: never read
    if damage == "record":
        damaged = record
        record.write_bytes(b"\xff\xfe\x00 not json")
    else:
        damaged = folder / json.loads(record.read_text())["library"]
        damaged.write_bytes(b"\x7fELF truncated")
    report = _enable_in_a_fresh_process(tmp_path, prebuilt)
    assert report["override"] == "c++"
    assert len(report["warnings"]) == 1 and str(damaged) in report["warnings"][0]
    assert "corrupt" in report["warnings"][0]
    assert _enable_in_a_fresh_process(tmp_path, prebuilt, mode="refuse")["warnings"] == []


def test_a_killed_build_leaves_a_lock_that_is_taken_over(tmp_path, prebuilt):
    folder = _cache_folder(tmp_path)
    folder.mkdir(parents=True)
    # A build killed while it held the lock: the system released it, its note stays.
    killed = subprocess.run([sys.executable, "-c", (
        "import fcntl, os, signal, sys\n"
        "handle = open(sys.argv[1], 'a+')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "handle.write(f'pid {os.getpid()}'); handle.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"), str(folder / cpp_override.LOCK)])
    assert killed.returncode == -9
    report = _enable_in_a_fresh_process(tmp_path, prebuilt)
    assert report["override"] == "c++"
    assert len(report["warnings"]) == 1 and "interrupted" in report["warnings"][0]
    assert str(folder / cpp_override.LOCK) in report["warnings"][0]
    assert (folder / cpp_override.LOCK).read_text() == ""  # released: nobody is building


def test_a_lock_held_too_long_is_given_up_on(tmp_path, prebuilt):
    import fcntl

    folder = _cache_folder(tmp_path)
    folder.mkdir(parents=True)
    with open(folder / cpp_override.LOCK, "a+") as held:  # a build that never ends
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 1, since forever")
        held.flush()
        report = _enable_in_a_fresh_process(tmp_path, prebuilt, mode="probe", wait=2)
    assert report["override"] == "c++"
    assert len(report["warnings"]) == 1 and "waited 2 s" in report["warnings"][0]
    assert str(folder / cpp_override.LOCK) in report["warnings"][0]
    # enable() in another thread was still waiting; enabled_override() did not wait with it.
    answer, seconds, still_waiting = report["probe"]
    assert answer is None and seconds < 0.5 and still_waiting


def test_the_build_uses_the_public_accessor_where_the_headers_declare_it(tmp_path):
    header = tmp_path / "ATen" / "core" / "boxing" / "KernelFunction.h"
    header.parent.mkdir(parents=True)
    body = ("class SafeKernelFunction;\nclass Before {\n};\n"  # a forward declaration first
            "class SafeKernelFunction {\n public:\n  %s\n private:\n  KernelFunction kernel_;\n};"
            "\nclass Other {\n  const KernelFunction& kernelFunction() const;\n};\n")
    header.write_text(body % "void callBoxed() const;")
    assert not cpp_override.declares_kernel_function([tmp_path])  # only another class has it
    header.write_text(body % "const KernelFunction& kernelFunction() const { return kernel_; }")
    assert cpp_override.declares_kernel_function([tmp_path / "nowhere", tmp_path])
    from torch.utils.cpp_extension import include_paths
    public = cpp_override.declares_kernel_function(include_paths())
    assert public == (tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 14))
