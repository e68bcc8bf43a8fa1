"""Tuned tables: lookup order, fallbacks with one warning naming the file, nearest bucket, the
shipped folder in a wheel install, and the launcher's backend switch."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mse_grad_triton import explain, mse_loss_backward, tables

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_tables")


def _table(device="cpu", block=256, numels=(1024, 65536), native_below=None):
    return {
        "format": tables.FORMAT, "device": device, "provenance": {},
        "native_below": native_below or {},
        "entries": [{"dtype": "float32", "path": "flat", "numel": n,
                     "config": {"block_size": block * (i + 1), "programs_per_unit": 1,
                                "num_warps": 4, "multibuffer": True}}
                    for i, n in enumerate(numels)],
    }


def _use(tmp_path, monkeypatch, content, name="cpu.json"):
    (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(tmp_path))


def test_nearest_size_bucket_in_log2():
    table = tables.parse_table(_write(_table(numels=(2**10, 2**16)), "cpu"), "cpu")
    assert table.config_for("float32", "flat", 2**12).block_size == 256   # nearer 2**10
    assert table.config_for("float32", "flat", 2**14).block_size == 512   # nearer 2**16
    assert table.config_for("float32", "flat", 2**30).block_size == 512
    assert table.config_for("float32", "flat", 1).block_size == 256
    assert table.config_for("float16", "flat", 2**12) is None
    assert table.config_for("float32", "strided", 2**12) is None


def _write(data, device, folder=None):
    import tempfile
    folder = Path(folder or tempfile.mkdtemp())
    path = folder / f"{device}.json"
    path.write_text(json.dumps(data))
    return path


def test_user_folder_table_is_used(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, _table())
    config = explain(*(torch.ones(2**10) for _ in range(3))).config
    assert config.block_size == 256 and str(tmp_path) in config.source


@pytest.mark.parametrize("content,message", [
    ("{not json", "ignoring tuned table"),
    (_table(device="NVIDIA_H100_80GB_HBM3"), "is for device 'NVIDIA_H100_80GB_HBM3'"),
    ({**_table(), "format": 99}, "not a format-1"),
    ({**_table(), "entries": [{"dtype": "float32", "path": "flat", "numel": 8,
                               "config": {"block_size": 100}}]}, "power of two"),
    ({**_table(), "entries": [{"dtype": "int8", "path": "flat", "numel": 8,
                               "config": {"block_size": 128}}]}, "unknown dtype"),
    ({"format": 1, "device": "cpu"}, "ignoring tuned table"),
], ids=["bad_json", "other_device", "format", "block", "dtype", "no_entries"])
def test_bad_table_warns_once_and_falls_back(tmp_path, monkeypatch, content, message):
    _use(tmp_path, monkeypatch, content)
    inputs = [torch.ones(2**10) for _ in range(3)]
    with pytest.warns(UserWarning, match=message) as caught:
        plan = explain(*inputs)
    assert str(tmp_path / "cpu.json") in str(caught[0].message)
    assert plan.config_source == "default"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # loaded once: no second warning
        mse_loss_backward(*inputs)


def test_empty_user_folder_warns_and_uses_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match="no tuned table .*cpu.json"):
        assert explain(*(torch.ones(8) for _ in range(3))).config_source == "default"


def test_defaults_without_any_table():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        plan = explain(*(torch.ones(2**10) for _ in range(3)))
    assert plan.config_source == "default" and plan.backend == "triton"
    assert plan.reason == "no tuned crossover for this device and dtype"


def test_shipped_tables_are_in_a_wheel_install(tmp_path):
    # Build a wheel from a copy of the sources with one table added, install it (not editable)
    # into a folder, and look the table up from there (and the C++ override's source, the
    # other file that is not Python).
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv*", ".git", "*.egg-info", "build", "__pycache__", ".pytest_cache"))
    (source / "tune_configs" / "Shipped_Test_Device.json").write_text(
        json.dumps(_table(device="Shipped_Test_Device")))
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True)
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    code = ("from mse_grad_triton import tables; t = tables.table_for('Shipped_Test_Device'); "
            "print(t.file); print(t.config_for('float32', 'flat', 1024).block_size); "
            "from mse_grad_triton import cpp_override; print(cpp_override.SOURCE.is_file())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    file, block, cpp_source = result.stdout.split()
    assert file.startswith(str(target)) and block == "256" and cpp_source == "True"


# --- backend= -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["gpu", "", None, "Triton", 1])
def test_bad_backend_value(backend):
    with pytest.raises(ValueError, match="backend"):
        mse_loss_backward(*(torch.ones(3) for _ in range(3)), backend=backend)


def test_native_backend_runs_aten_with_the_same_checks():
    grad, self, target = torch.tensor(2.0), torch.randn(5, 7), torch.randn(7)
    assert torch.equal(mse_loss_backward(grad, self, target, "sum", backend="native"),
                       torch.ops.aten.mse_loss_backward(grad, self, target, 2))
    out = torch.empty(5, 7)
    assert mse_loss_backward(grad, self, target, 1, out=out, backend="native") is out
    assert torch.equal(out, torch.ops.aten.mse_loss_backward(grad, self, target, 1))
    with pytest.raises(ValueError, match="reduction"):
        mse_loss_backward(grad, self, target, 3, backend="native")
    storage = torch.randn(40)
    with pytest.raises(ValueError, match="out partially overlaps self"):
        mse_loss_backward(grad, storage[:35].view(5, 7), target, "sum",
                          out=storage[1:36].view(5, 7), backend="native")


def test_auto_uses_the_table_crossover(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, _table(native_below={"float32": 1000}))
    assert explain(*(torch.ones(999) for _ in range(3))).backend == "native"
    assert explain(*(torch.ones(1000) for _ in range(3))).backend == "triton"
    # Another dtype has no crossover in the table: always the kernel.
    assert explain(*(torch.ones(10, dtype=torch.float16) for _ in range(3))).backend == "triton"


def _with_config(**fields):
    entry = {"dtype": "float32", "path": "flat", "numel": 8,
             "config": {"block_size": 128, "programs_per_unit": 1, "num_warps": 4,
                        "multibuffer": True, **fields}}
    return {**_table(), "entries": [entry]}


HOSTILE_TABLES = {
    "native_below_list": {**_table(), "native_below": [1, 2]},
    "native_below_string": {**_table(), "native_below": "float32"},
    "native_below_null": {**_table(), "native_below": None},
    "native_below_infinity": '{"format": 1, "device": "cpu", "entries": [], '
                             '"native_below": {"float32": Infinity}}',
    "native_below_negative": {**_table(), "native_below": {"float32": -1}},
    "native_below_huge": {**_table(), "native_below": {"float32": 1e300}},
    "native_below_bool": {**_table(), "native_below": {"float32": True}},
    "native_below_dict": {**_table(), "native_below": {"float32": {}}},
    "programs_string": _with_config(programs_per_unit="2"),
    "programs_null": _with_config(programs_per_unit=None),
    "programs_list": _with_config(programs_per_unit=[1]),
    "programs_fraction": _with_config(programs_per_unit=2.5),
    "programs_zero": _with_config(programs_per_unit=0),
    "programs_bool": _with_config(programs_per_unit=True),
    "warps_three": _with_config(num_warps=3),
    "warps_huge": _with_config(num_warps=1024),
    "multibuffer_string": _with_config(multibuffer="x"),
    "transpose_int": _with_config(transpose=0),
    "block_bool": _with_config(block_size=True),
    "numel_negative": {**_table(), "entries": [{"dtype": "float32", "path": "flat",
                                                "numel": -1, "config": {"block_size": 128}}]},
    "entries_dict": {**_table(), "entries": {}},
    "entry_string": {**_table(), "entries": ["x"]},
    "deep_json": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("content", HOSTILE_TABLES.values(), ids=HOSTILE_TABLES)
def test_no_table_content_breaks_a_call(content, tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, content)
    inputs = [torch.ones(2**10) for _ in range(3)]
    with pytest.warns(UserWarning, match="ignoring tuned table") as caught:
        explain(*inputs)
    assert len(caught) == 1 and str(tmp_path / "cpu.json") in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = mse_loss_backward(*inputs)  # defaults: the call works
    assert torch.equal(result, torch.zeros(2**10))


def test_a_device_file_or_fifo_as_table_neither_hangs_nor_reads(tmp_path, monkeypatch):
    import os
    import threading
    (tmp_path / "cpu.json").symlink_to("/dev/zero")
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match="not a regular file"):
        assert tables.table_for("cpu") is None
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "cpu.json")  # nobody ever writes: reading it would block forever
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(fifo_dir))
    tables.clear_cache()
    done = []

    def lookup():
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            done.append(tables.table_for("cpu"))
    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and done == [None]


def test_an_oversized_table_is_not_read(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, " " * (tables.MAX_TABLE_BYTES + 1))
    with pytest.warns(UserWarning, match="larger than"):
        assert tables.table_for("cpu") is None


def test_a_transposed_entry_and_a_table_without_the_field_both_load(tmp_path):
    entries = [{"dtype": "float32", "path": "transposed", "numel": 4096,
                "config": {"block_size": 1024, "transpose": False}},
               {"dtype": "float32", "path": "strided", "numel": 4096,
                "config": {"block_size": 1024}}]  # as tables written before the field
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({**_table(), "entries": entries}))
    table = tables.parse_table(path, "cpu")
    assert table.config_for("float32", "transposed", 4096).transpose is False
    assert table.config_for("float32", "strided", 4096).transpose is True
