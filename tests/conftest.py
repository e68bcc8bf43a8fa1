"""Shared fixtures, and markers for tests that need a device (skipped where there is none)."""

import dataclasses
import json
from typing import List, Tuple

import pytest
import torch

from mse_grad_triton import backends, cpp_override, tables


def _npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return torch.npu.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "npu: needs an Ascend NPU with torch_npu")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU")


def pytest_collection_modifyitems(config, items):
    skips = {
        "npu": (_npu_available(), "needs an Ascend NPU with torch_npu"),
        "cuda": (torch.cuda.is_available(), "needs a CUDA GPU"),
    }
    for item in items:
        for marker, (available, reason) in skips.items():
            if item.get_closest_marker(marker) and not available:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def fresh_tables(monkeypatch):
    """No tuned table in force, before and after the test (no $MSE_GRAD_TRITON_TUNE_DIR)."""
    monkeypatch.delenv(tables.TUNE_DIR_ENV, raising=False)
    tables.clear_cache()
    yield
    tables.clear_cache()


@pytest.fixture
def tuned_crossover(tmp_path, monkeypatch, fresh_tables):
    """``tuned_crossover({"float32": n, ...}, device="cpu")`` puts a table with these
    crossovers (the native op below n elements) in force for ``device``, as a tuned table
    would."""
    def put(native_below, device="cpu"):
        name = backends.backend_for(torch.device(device)).device_name
        folder = tmp_path / f"tables{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / f"{name}.json").write_text(json.dumps({
            "format": tables.FORMAT, "device": name, "entries": [],
            "native_below": native_below}))
        monkeypatch.setenv(tables.TUNE_DIR_ENV, str(folder))
        tables.clear_cache()

    return put


@pytest.fixture(params=["c++", "python"])
def override(request, monkeypatch):
    """Which override ``enable()`` installs in the test: the C++ one in front of the Python
    one (skipped, with the reason, where it cannot be built) or the Python one alone."""
    if request.param == "python":
        monkeypatch.setenv(cpp_override.ENABLE_ENV, "0")
    elif not cpp_override.available():
        pytest.skip(f"the C++ override is unavailable: {cpp_override.why_unavailable()}")
    return request.param


@dataclasses.dataclass(frozen=True)
class RecordingBackend(backends.InterpretedBackend):
    """The CPU backend, recording each launch's plan and operands; ``run=False`` skips the
    kernel itself."""

    launches: List[Tuple[object, tuple]] = dataclasses.field(default_factory=list,
                                                             compare=False)
    run: bool = True

    def launch(self, plan, operands):
        self.launches.append((plan, operands))
        if self.run:
            super().launch(plan, operands)


def _recording(run: bool):
    cpu = backends.backend_for(torch.device("cpu"))
    recorder = RecordingBackend(cpu.kind, cpu.device_name, cpu.num_units, cpu.supports_fp64,
                                run=run)
    return backends.overridden(torch.device("cpu"), recorder)


@pytest.fixture
def recorded_launches():
    """Every kernel launch on CPU tensors in the test, as (plan, operands); the kernel runs."""
    with _recording(run=True) as recorder:
        yield recorder.launches


@pytest.fixture
def stubbed_launches():
    """Every kernel launch on CPU tensors in the test, as (plan, operands); nothing runs."""
    with _recording(run=False) as recorder:
        yield recorder.launches
