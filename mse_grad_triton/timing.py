"""Timers shared by the tuner and the benchmark.

- device time: the ecosystem's kernel timers — ``triton.testing.do_bench`` on CUDA (events
  around each call, L2 flushed before each, warm-up discarded) and triton-ascend's
  ``triton.testing.do_bench_npu`` on NPU (the profiler's kernel time, without the launch noise
  that per-call events carry for a ~10 us kernel; it reports one average) — median kept;
- host (end-to-end) time: a synchronised wall clock over many back-to-back calls, which is what
  a training step pays for a small tensor (host launch overhead dominates on Ascend);
- on the CPU both are wall clocks, and interpreter timings say nothing about kernel speed.
"""

import statistics
import time
from typing import Callable, List

import torch

Timer = Callable[[Callable[[], object]], float]  # fn -> median seconds per call


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type in ("cuda", "npu"):
        getattr(torch, device.type).synchronize(device)


def device_sampler(device: torch.device, warmup: int = 5,
                   repeat: int = 25) -> Callable[[Callable[[], object]], List[float]]:
    """Per-call device seconds: on CUDA every run of ``triton.testing.do_bench`` (its own
    warm-up and repetition times); on NPU ``do_bench_npu``'s average over ``repeat`` profiled
    runs after ``warmup`` (one sample); synchronised wall clock on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: [ms / 1e3 for ms in do_bench(fn, return_mode="all")]
    if device.type == "npu":
        from triton.testing import do_bench_npu  # triton-ascend's; microseconds

        return lambda fn: [do_bench_npu(fn, warmup=warmup, active=repeat) / 1e6]
    return lambda fn: wall_samples(fn, device, warmup=min(warmup, 1), repeat=repeat)


def device_timer(device: torch.device, warmup: int = 5, repeat: int = 25) -> Timer:
    """Median device seconds per call (see ``device_sampler``; fewer runs on the CPU, where
    the interpreter is slow)."""
    if device.type not in ("cuda", "npu"):
        repeat = max(3, repeat // 5)
    sample = device_sampler(device, warmup, repeat)
    return lambda fn: statistics.median(sample(fn))


def wall_samples(fn: Callable[[], object], device: torch.device, warmup: int = 1,
                 repeat: int = 5) -> List[float]:
    """Synchronised wall-clock seconds of ``repeat`` single calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return samples


def wall_time(fn: Callable[[], object], device: torch.device, warmup: int = 1,
              repeat: int = 5) -> float:
    """Median synchronised wall-clock seconds of one call."""
    return statistics.median(wall_samples(fn, device, warmup, repeat))


def host_timer(device: torch.device, calls: int = 100, repeat: int = 3) -> Timer:
    """Median end-to-end seconds per call over ``calls`` back-to-back calls, synchronised once
    at the end: host overhead and device time together, as a training step sees them."""
    def measure(fn):
        fn()
        samples = []
        for _ in range(repeat):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            samples.append((time.perf_counter() - start) / calls)
        return statistics.median(samples)

    return measure
