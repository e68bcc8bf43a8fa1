"""Tuning on first use: the first call tunes and keeps its entry, later calls and processes
use it, concurrent processes tune it once, tracing and transforms are left alone, and a killed
tuner or a corrupt table breaks nothing (CPU interpreter: it exercises the machinery only)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import mse_grad_triton as mgt
from mse_grad_triton import autotune, launcher, tables, tune
from mse_grad_triton.testing import assert_ulp_close, make, reference

SHAPE = [4096]


@pytest.fixture
def first_use(tmp_path, monkeypatch):
    """Tuning on first use on, into a fresh user folder (returned)."""
    folder = tmp_path / "tuned"
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(folder))
    mgt.tune_on_first_use()
    launcher.clear_caches()
    yield folder
    mgt.tune_on_first_use(None)
    tables.clear_cache()
    launcher.clear_caches()


def _operands(seed=0, shape=SHAPE):
    return tuple(make(shape, torch.float32, seed + k) for k in range(3))


def _entries(folder):
    return json.loads((folder / "cpu.json").read_text())["entries"]


def test_the_first_call_tunes_and_keeps_its_entry(first_use, capsys):
    grad, self, target = _operands()
    result = mgt.mse_loss_backward(grad, self, target, "mean")
    assert_ulp_close(result, reference(grad, self, target, "mean"))
    entries = _entries(first_use)
    assert [(e["dtype"], e["path"], e["numel"]) for e in entries] == [("float32", "flat", 4096)]
    entry = entries[0]
    assert entry["tuned"]["how"] == "first use" and entry["tuned"]["candidates"] >= 2
    assert entry["seconds"] > 0 and all("seconds" in c or "failed" in c
                                        for c in entry["candidates"])
    table = json.loads((first_use / "cpu.json").read_text())
    assert {"torch", "triton", "date"} <= set(table["provenance"])
    assert "tuned float32 flat 4096 on cpu" in capsys.readouterr().err
    source = mgt.explain(grad, self, target, "mean").config_source
    assert "tuned on first use" in source and "candidates" in source

    before = (first_use / "cpu.json").stat().st_mtime_ns
    mgt.mse_loss_backward(*_operands(seed=5), "mean")       # same bucket: no tuning
    mgt.mse_loss_backward(*_operands(shape=[8000]), "sum")   # 2^12..2^14: the same bucket
    assert (first_use / "cpu.json").stat().st_mtime_ns == before
    assert "tuned" not in capsys.readouterr().err


def test_explain_tunes_nothing_and_the_call_after_it_tunes(first_use):
    operands = _operands()
    assert mgt.explain(*operands, "mean").config_source == "default"
    assert not (first_use / "cpu.json").exists()
    mgt.mse_loss_backward(*operands, "mean")
    assert "tuned on first use" in mgt.explain(*operands, "mean").config_source


def test_another_size_bucket_is_tuned_and_merged(first_use):
    mgt.mse_loss_backward(*_operands(), "mean")
    mgt.mse_loss_backward(*_operands(shape=[256]), "mean")
    assert sorted(e["numel"] for e in _entries(first_use)) == [256, 4096]


def test_off_by_default_and_when_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv(autotune.ENABLE_ENV, raising=False)
    monkeypatch.setenv(autotune.CACHE_DIR_ENV, str(tmp_path))
    tables.clear_cache()
    assert not autotune.enabled() and autotune.user_dir() is None
    monkeypatch.setenv(autotune.ENABLE_ENV, "1")
    assert autotune.enabled() and autotune.user_dir() == tmp_path / "tuned"
    mgt.tune_on_first_use(False)
    try:
        assert not autotune.enabled()
    finally:
        mgt.tune_on_first_use(None)
        tables.clear_cache()


def _script(folder, body: str) -> str:
    return textwrap.dedent(f"""
        import os, sys, torch
        os.environ["{tables.TUNE_DIR_ENV}"] = {str(folder)!r}
        os.environ["{autotune.ENABLE_ENV}"] = "1"
        import mse_grad_triton as mgt
        from mse_grad_triton.testing import make, max_ulp_error
        grad, self, target = (make({SHAPE}, torch.float32, k) for k in range(3))
    """) + textwrap.dedent(body)


def _python(script: str, **popen):
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


CALL = """
    out = mgt.mse_loss_backward(grad, self, target, "mean")
    assert max_ulp_error(out, grad, self, target, "mean") <= 4
    print(mgt.explain(grad, self, target, "mean").config_source)
"""


def test_a_later_process_uses_what_an_earlier_one_tuned(tmp_path):
    folder = tmp_path / "tuned"
    first = _python(_script(folder, CALL))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "tuned float32 flat 4096" in err
    second = _python(_script(folder, CALL))
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "tuned" not in err.replace("tuned on first use", "")
    assert "tuned on first use" in out


def test_four_processes_tune_one_entry_once(tmp_path):
    folder = tmp_path / "tuned"
    runs = [_python(_script(folder, CALL)) for _ in range(4)]
    results = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in results]
    tuned = sum(err.count("mse_grad_triton: tuned ") for _, err in results)
    assert tuned == 1, [err for _, err in results]
    assert all("tuned on first use" in out for out, _ in results)
    assert len(_entries(folder)) == 1


def test_a_killed_tuner_leaves_no_broken_table_and_frees_its_entry(tmp_path):
    folder = tmp_path / "tuned"
    # Tunes a 256-element entry and stores it, then hangs inside the 4096 entry's tuning.
    hang = _script(folder, """
        import time
        from mse_grad_triton import tune
        mgt.mse_loss_backward(*(make([256], torch.float32, k) for k in range(3)), "mean")
        def measure(*args, **kwargs):
            print("measuring", flush=True)
            time.sleep(600)
        tune._measure = measure
        mgt.mse_loss_backward(grad, self, target, "mean")
    """)
    victim = _python(hang)
    assert victim.stdout.readline().strip() == "measuring"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert [e["numel"] for e in _entries(folder)] == [256]   # whole, and only what was done
    survivor = _python(_script(folder, CALL))
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert "tuned float32 flat 4096" in err
    assert sorted(e["numel"] for e in _entries(folder)) == [256, 4096]


def test_a_process_waits_for_the_tuner_then_uses_the_default(first_use, monkeypatch):
    monkeypatch.setenv(autotune.WAIT_ENV, "0.3")
    grad, self, target = _operands()
    with autotune._entry_lock(first_use, "cpu", "float32", "flat", 4096) as mine:
        assert mine
        started = time.monotonic()
        with pytest.warns(UserWarning, match="waited 0.3 s for another process"):
            result = mgt.mse_loss_backward(grad, self, target, "mean")
        assert time.monotonic() - started < 30
    assert_ulp_close(result, reference(grad, self, target, "mean"))
    assert not (first_use / "cpu.json").exists()
    assert mgt.explain(grad, self, target, "mean").config_source == "default"


def test_a_corrupt_table_warns_once_is_moved_aside_and_replaced(first_use):
    first_use.mkdir(parents=True)
    (first_use / "cpu.json").write_text('{"format": 1, "device": "cpu", "entries": [')
    with pytest.warns(UserWarning) as caught:
        mgt.mse_loss_backward(*_operands(), "mean")
    messages = [str(w.message) for w in caught]
    assert sum("ignoring tuned table" in m for m in messages) == 1
    assert any("moved it to" in m for m in messages)
    assert (first_use / "cpu.json.corrupt").read_text().endswith("[")
    assert len(_entries(first_use)) == 1


def test_a_foreign_table_is_not_merged(first_use):
    first_use.mkdir(parents=True)
    (first_use / "cpu.json").write_text(json.dumps(
        {"format": 1, "device": "NVIDIA_H100", "entries": []}))
    with pytest.warns(UserWarning, match="not a tuned table for cpu"):
        mgt.mse_loss_backward(*_operands(), "mean")
    assert json.loads((first_use / "cpu.json").read_text())["device"] == "cpu"


@pytest.mark.parametrize("why", ["torch.compile", "torch.func"])
def test_nothing_is_tuned_while_tracing_or_under_a_transform(first_use, monkeypatch, why,
                                                             recorded_launches):
    grad, self, target = _operands()
    if why == "torch.compile":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    else:
        monkeypatch.setattr(torch._C._functorch, "peek_interpreter_stack", lambda: object())
    result = mgt.mse_loss_backward(grad, self, target, "mean")
    assert len(recorded_launches) == 1          # the call alone: no candidate was run
    assert_ulp_close(result, reference(grad, self, target, "mean"))
    assert not (first_use / "cpu.json").exists()
    monkeypatch.undo()                           # outside: the same geometry is tuned now
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(first_use))
    mgt.mse_loss_backward(grad, self, target, "mean")
    assert len(_entries(first_use)) == 1


def test_the_reasons_not_to_tune_are_seen_inside_a_real_transform():
    seen = []

    def body(x):
        seen.append(autotune.why_not_now(torch.device("cpu"), [x]))
        return x * 2

    torch.func.vmap(body)(torch.ones(2, 3))
    assert seen == ["a torch.func transform is active"]
    assert autotune.why_not_now(torch.device("cpu"), [torch.ones(1)]) is None


def test_size_buckets_are_powers_of_four():
    assert [autotune.size_bucket(n) for n in (1, 3, 4, 15, 16, 4096, 16383, 16384)] == \
        [0, 0, 1, 1, 2, 6, 6, 7]


def test_the_offline_tuner_writes_into_the_user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "user"
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(folder))
    tables.clear_cache()
    try:
        assert tune.main(["--device", "cpu", "--dtypes", "float32", "--paths", "flat",
                          "--sizes", "1024", "--no-progress", "--user-dir"],
                         timer=lambda fn: (fn(), 1e-6)[1],
                         end_to_end=lambda fn: (fn(), 1e-6)[1]) == 0
        first = _entries(folder)
        assert [(e["dtype"], e["numel"]) for e in first] == [("float32", 1024)]
        autotune.store(folder, "cpu", [dict(first[0], numel=4096)], {"date": "x"})
        assert sorted(e["numel"] for e in _entries(folder)) == [1024, 4096]  # merged
    finally:
        tables.clear_cache()
    assert os.listdir(folder / ".locks")
