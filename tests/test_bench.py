"""The benchmark harness end to end in --quick mode (CPU interpreter), and its checks."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import bench  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, str(BENCH / "bench.py"), "--quick", "--output",
                             str(output), "--no-progress"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return output, result.stdout


def test_quick_run_writes_every_output(quick_run):
    output, stdout = quick_run
    for name in ("results.json", "results.csv", "gbps.png", "speedup.png"):
        assert (output / name).stat().st_size > 0
    for name in ("gbps.png", "speedup.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "not kernel performance" in stdout
    assert "training step, [64, 1] float32" in stdout


def test_results_hold_every_field_and_every_row_is_correct(quick_run):
    output, _ = quick_run
    data = json.loads((output / "results.json").read_text())
    assert data["interpreter"] is True and data["device"] == "cpu"
    assert {"torch", "triton"} <= set(data["versions"]) and data["date"]
    assert data["copy_bandwidth_gbps"] > 0
    step = data["host_path"]["training_step"]
    assert set(step["us"]) == {"stock_MSELoss", "mgt_MSELoss", "stock_MSELoss_under_enabled",
                                "stock_MSELoss_under_enabled_python_only",
                                "stock_MSELoss_under_bare_override"}
    assert all(us > 0 for us in step["us"].values())
    assert step["enabled_override"] == ("python" if step["cpp_override_unavailable"] else "c++")
    rows = data["rows"]
    assert {r["provider"] for r in rows} == {"triton", "auto", "native"}
    assert {r["case"] for r in rows} == set(bench.CASES)
    assert {r["dtype"] for r in rows} == set(bench.DTYPES)
    for row in rows:
        assert row["correct"] is True
        assert row["device_us"] > 0 and row["end_to_end_us"] > 0 and row["gbps"] > 0
        assert row["device_us_p10"] <= row["device_us"] <= row["device_us_p90"]
        assert row["speedup_vs_native"] > 0
    with (output / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and {"device", "date", "gbps", "correct"} <= set(table[0])


def test_without_an_npu_the_ascend_figures_are_modelled_and_labelled(quick_run):
    from mse_grad_triton import triton_compat
    from mse_grad_triton.tools import bishengir

    output, stdout = quick_run
    data = json.loads((output / "results.json").read_text())
    kernel_rows = [r for r in data["rows"] if r["provider"] == "triton"]
    if triton_compat.FLAVOUR != "ascend" or bishengir.find_compiler() is None:
        assert data["modelled"].startswith("not modelled")
        assert not (output / "modelled.png").exists()
        assert all(r["modelled_us"] is None for r in kernel_rows)
        return
    assert data["modelled"].startswith("modelled for Ascend910B3 from the compiled HIVM - not "
                                       "measured")
    assert data["modelled"] in stdout
    for row in kernel_rows:
        assert row["modelled_target"] == "Ascend910B3" and row["modelled_us"] > 0
        assert row["aclnn_modelled_us"] > 0 and row["modelled_bottleneck"] in ("MTE", "V", "S")
        assert row["modelled_speedup_vs_aclnn"] == pytest.approx(
            row["aclnn_modelled_us"] / row["modelled_us"])
        assert "not measured" in row["model_note"]
    assert all(r["modelled_us"] is None for r in data["rows"] if r["provider"] != "triton")
    assert (output / "modelled.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (output / "results.csv").open() as handle:
        assert "modelled_us" in next(csv.reader(handle))


def test_a_wrong_provider_is_reported_wrong_and_not_timed():
    grad, self, target = bench.make_case("mean", torch.float16, 1024, torch.device("cpu"))
    timed = []

    def sampler(fn):
        timed.append(fn)
        return [1.0]

    def wrong(g, x, y, r):
        return torch.ops.aten.mse_loss_backward(g, x, y, r) * 1.01

    row = bench._measure("wrong", wrong, grad, self, target, 1, "mean", "float16", 1024,
                         sampler, lambda fn: 1.0, 100.0, None)
    assert not row.correct and row.device_us is None and "wrong" in row.note
    assert timed == []


def test_bytes_moved_counts_distinct_elements():
    grad, self, target = bench.make_case("broadcast", torch.float16, 1 << 12, torch.device("cpu"))
    out = torch.empty(self.shape, dtype=torch.float16)
    assert bench.bytes_moved(grad, self, target, out) == 2 * (1 + 4096 + 4 + 4096)


def test_host_path_reports_the_launch_path_or_why_not(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "host_path.py"), "--quick",
                             "--output", str(tmp_path)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "host_path.json").read_text())
    launch = report["launch_path"]
    import host_path
    reason = host_path.driver_stub_unavailable()
    if reason:
        assert launch == {"skipped": reason}
        return
    # Through upstream Triton's real JIT and C launcher: every launch reached the driver.
    assert launch["launches_counted"] == launch["launches_expected"] > 0
    assert set(launch["us"]) == {"aten_whole_call", "mse_loss_backward", "our_kernel_via_jit",
                                 "vector_add_via_jit"}
    assert all(ratio > 0 for ratio in launch["ratio_to_aten"].values())
    assert 1 <= launch["compiled_variants"]["flat"] <= 3
    assert "ATen's whole call" in result.stdout
