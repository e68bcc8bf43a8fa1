"""Shared fixtures, and markers for tests that need a device (skipped where there is none)."""

import pytest
import torch

from mse_grad_triton import tables


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
