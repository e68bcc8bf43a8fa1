"""The timers: the ecosystem's kernel timers on devices (stubbed here), wall clocks on the CPU."""

import types

import pytest
import torch
import triton.testing

from mse_grad_triton import timing


def test_cuda_device_time_is_triton_do_bench_in_seconds(monkeypatch):
    calls = []

    def do_bench(fn, return_mode="mean", **kwargs):
        calls.append(return_mode)
        fn()
        return [2.0, 1.0, 3.0]  # milliseconds, every run
    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    ran = []
    assert timing.device_sampler(torch.device("cuda"))(lambda: ran.append(1)) == [2e-3, 1e-3, 3e-3]
    assert calls == ["all"] and ran == [1]
    assert timing.device_timer(torch.device("cuda"))(lambda: None) == pytest.approx(2e-3)


def test_npu_device_time_is_do_bench_npu_in_seconds(monkeypatch):
    seen = {}

    def do_bench_npu(fn, warmup, active):
        seen.update(warmup=warmup, active=active)
        return 12.5  # microseconds, averaged by the profiler
    monkeypatch.setattr(triton.testing, "do_bench_npu", do_bench_npu, raising=False)
    npu = types.SimpleNamespace(type="npu")  # torch.device("npu") needs torch_npu
    samples = timing.device_sampler(npu, warmup=3, repeat=20)(lambda: None)
    assert samples == [pytest.approx(12.5e-6)] and seen == {"warmup": 3, "active": 20}


def test_cpu_time_is_a_wall_clock():
    samples = timing.device_sampler(torch.device("cpu"), repeat=4)(lambda: None)
    assert len(samples) == 4 and all(s >= 0 for s in samples)
    assert timing.host_timer(torch.device("cpu"), calls=5)(lambda: None) >= 0
