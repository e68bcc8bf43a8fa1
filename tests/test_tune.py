"""The tuner on the CPU interpreter (tiny sizes, injected timers), the table it writes, and the
launcher picking that table up."""

import json

import pytest
import torch

from mse_grad_triton import (
    explain,
    kernels,
    launcher,
    layout,
    mse_loss_backward,
    planning,
    tables,
    tune,
)
from mse_grad_triton.testing import assert_ulp_close, make, reference

pytestmark = pytest.mark.usefixtures("fresh_tables")


class FakeClock:
    """Timers that run the call once and answer from the config it launched with: block 256 is
    fastest (1 s), other configs 5 s, the native op 2 s. End to end the native op takes 0.5 s
    at 1024 elements and 2 s above, the kernel 1 s: the crossover is between them."""

    def __init__(self, monkeypatch):
        self.launched = []
        real_launch = launcher.launch

        def recording_launch(grad, self_, target, out, code, backend, config=None, **kwargs):
            plan = real_launch(grad, self_, target, out, code, backend, config, **kwargs)
            self.launched.append((plan.config, out.numel()))
            return plan
        monkeypatch.setattr(launcher, "launch", recording_launch)
        self.numel = None

    def device(self, fn):
        self.launched.clear()
        fn()
        if not self.launched:
            return 2.0
        config, self.numel = self.launched[-1]
        return 1.0 if config.block_size == 256 else 5.0

    def end_to_end(self, fn):
        self.launched.clear()
        fn()
        if self.launched:
            return 1.0
        return 0.5 if self.numel <= 1024 else 2.0


@pytest.fixture
def tuned_dir(tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch)
    code = tune.main(["--device", "cpu", "--dtypes", "float32", "--paths", "flat,strided",
                      "--sizes", "2^10,2^12", "--output", str(tmp_path), "--no-progress"],
                     timer=clock.device, end_to_end=clock.end_to_end)
    assert code == 0
    return tmp_path


def test_tuner_writes_a_valid_table(tuned_dir):
    path = tuned_dir / "cpu.json"
    table = tables.parse_table(path, "cpu")
    assert table.native_below == {"float32": 4096}
    data = json.loads(path.read_text())
    assert data["format"] == tables.FORMAT and data["device"] == "cpu"
    assert {"date", "torch", "triton", "timer", "parallel_units"} <= set(data["provenance"])
    for entry in data["entries"]:
        assert entry["config"]["block_size"] == 256          # the fastest candidate won
        assert entry["default_seconds"] == 5.0 and entry["native_seconds"] == 2.0
        assert entry["gbps"] > 0
        assert all("seconds" in c or "failed" in c for c in entry["candidates"])
    assert {(e["path"], e["numel"]) for e in data["entries"]} == {
        ("flat", 1024), ("flat", 4096), ("strided", 1024), ("strided", 4096)}


def test_a_following_call_uses_the_table(tuned_dir, monkeypatch):
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(tuned_dir))
    tables.clear_cache()
    grad, self, target = make([], torch.float32, 1), make([4096], torch.float32, 2), \
        make([4096], torch.float32, 3)
    # flat_scalar_grad was not tuned: defaults; the tensor-grad flat path was.
    untuned = explain(grad, self, target)
    assert untuned.path == "flat_scalar_grad" and untuned.config_source == "default"
    grad_full = make([4096], torch.float32, 4)
    tuned = explain(grad_full, self, target)
    assert tuned.config.block_size == 256
    assert str(tuned_dir / "cpu.json") in tuned.config_source
    assert_ulp_close(mse_loss_backward(grad_full, self, target),
                     reference(grad_full, self, target, "mean"))


def test_auto_routes_below_the_crossover_to_the_native_op(tuned_dir, monkeypatch):
    monkeypatch.setenv(tables.TUNE_DIR_ENV, str(tuned_dir))
    tables.clear_cache()
    small = [make([1024], torch.float32, i) for i in range(3)]
    large = [make([4096], torch.float32, i) for i in range(3)]
    assert explain(*small).backend == "native" and "4096" in explain(*small).reason
    assert explain(*large).backend == "triton"
    assert explain(*small, backend="triton").backend == "triton"
    launches = []
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: launches.append(a))
    result = mse_loss_backward(*small)
    assert launches == []  # the native op ran
    assert torch.equal(result, torch.ops.aten.mse_loss_backward(*small, 1))


def test_candidates_that_fail_are_recorded_and_never_win(tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch)  # block 256 would be the fastest
    real_launch = launcher.launch

    def broken_for_256(grad, self_, target, out, code, backend, config=None, **kwargs):
        if config is not None and config.block_size == 256:
            raise RuntimeError("simulated compile failure")
        return real_launch(grad, self_, target, out, code, backend, config, **kwargs)
    monkeypatch.setattr(launcher, "launch", broken_for_256)
    table = tune.tune(torch.device("cpu"), ["float16"], ["flat"], [2048],
                      timer=clock.device, end_to_end=clock.end_to_end, show_progress=False)
    entry = table["entries"][0]
    assert entry["config"]["block_size"] != 256
    failed = [c for c in entry["candidates"] if "failed" in c]
    assert failed and "simulated compile failure" in failed[0]["failed"]


def test_wrong_results_never_win(monkeypatch):
    clock = FakeClock(monkeypatch)  # block 256 would be the fastest
    real_launch = launcher.launch

    def wrong_for_256(grad, self_, target, out, code, backend, config=None, **kwargs):
        plan = real_launch(grad, self_, target, out, code, backend, config, **kwargs)
        if config is not None and config.block_size == 256:
            out.add_(1.0)
        return plan
    monkeypatch.setattr(launcher, "launch", wrong_for_256)
    table = tune.tune(torch.device("cpu"), ["float32"], ["flat"], [2048],
                      timer=clock.device, end_to_end=clock.end_to_end, show_progress=False)
    entry = table["entries"][0]
    assert entry["config"]["block_size"] != 256
    assert any("wrong result" in c.get("failed", "") for c in entry["candidates"])


def test_summary_names_best_config_and_speedups(tuned_dir):
    table = json.loads((tuned_dir / "cpu.json").read_text())
    summary = tune.format_summary(table)
    assert "256 x1" in summary and "5.00x" in summary and "float32 4096" in summary


def test_the_transposed_path_tries_the_strided_form_and_a_failing_one_never_wins(
        tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch)
    real_launch = launcher.launch

    def turn_fails(grad, self_, target, out, code, backend, config=None, **kwargs):
        plan = real_launch(grad, self_, target, out, code, backend, config, **kwargs)
        turned = (kernels.TRANSPOSED.value, kernels.DENSE_TRANSPOSED.value)
        if plan.constexprs.get("SELF_MODE") in turned or \
                plan.constexprs.get("TARGET_MODE") in turned:
            raise RuntimeError("on-chip transpose does not build here")
        return plan
    monkeypatch.setattr(launcher, "launch", turn_fails)
    code = tune.main(["--device", "cpu", "--dtypes", "float32", "--paths", "transposed",
                      "--sizes", "2^12", "--output", str(tmp_path), "--no-progress"],
                     timer=clock.device, end_to_end=clock.end_to_end)
    assert code == 0
    (entry,) = json.loads((tmp_path / "cpu.json").read_text())["entries"]
    assert entry["path"] == "transposed" and entry["config"]["transpose"] is False
    tried = [c["config"]["transpose"] for c in entry["candidates"]]
    assert True in tried and False in tried
    assert all("failed" in c for c in entry["candidates"] if c["config"]["transpose"])
    table = tables.parse_table(tmp_path / "cpu.json", "cpu")
    assert table.config_for("float32", "transposed", 4096).transpose is False


def test_on_npu_a_candidate_the_compiler_does_not_plan_cleanly_is_recorded_not_runnable():
    from mse_grad_triton import backends, configs

    npu = backends.DeviceBackend("npu", "Ascend910B3", 40, False)
    shape = [1 << 20]
    operands = (torch.empty([], device="meta"), torch.empty(shape, device="meta"),
                torch.empty(shape, device="meta"), torch.empty(shape, device="meta"))
    candidates, unrunnable = tune._candidates(operands, npu)
    kind = planning.tile_kind(layout.of_tensors(operands), (*operands, None), 1,
                              chip=npu.chip)
    for config in candidates:
        assert config.block_size <= configs.largest_clean_block(kind, config.multibuffer)[0]
    assert unrunnable and all("not runnable: bishengir-compile" in r["failed"]
                              for r in unrunnable)
    assert {r["config"]["block_size"] for r in unrunnable} >= {16384}


def test_model_ranks_the_candidates_and_only_the_best_are_measured(monkeypatch):
    from mse_grad_triton import triton_compat
    from mse_grad_triton.tools import bishengir

    if triton_compat.FLAVOUR != "ascend" or bishengir.find_compiler() is None:
        pytest.skip("needs triton-ascend and bishengir-compile for the model")
    clock = FakeClock(monkeypatch)
    table = tune.tune(torch.device("cpu"), ["float32"], ["flat"], [4096], timer=clock.device,
                      end_to_end=clock.end_to_end, show_progress=False,
                      ranking=tune.ModelRanking(best=1))
    entry = table["entries"][0]
    records = [r for r in entry["candidates"] if "not runnable" not in r.get("failed", "")]
    assert all("modelled_us" in r for r in records)
    measured = [r for r in records if "seconds" in r]
    skipped = [r for r in records if "not measured: ranked" in r.get("failed", "")]
    assert len(measured) == 1 and len(skipped) == len(records) - 1
    fastest_modelled = min(records, key=lambda r: r["modelled_us"])
    assert fastest_modelled is measured[0]
