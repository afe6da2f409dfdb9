"""How this project times a call: run records (engine/throughput.py), `speed` and `check`
(speed/timing.py) and the GPU benchmark scripts all time through these functions.

A call is bracketed by device synchronisation and timed with perf_counter, or on a GPU, when
asked, with CUDA events (the GPU's own clock: no host-side launch gap before the first kernel
counts). A figure is the median over `repeats` calls after `warmup` untimed ones; `setup`, when
given, runs untimed before every call (e.g. putting a decode state back).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from bimix_bench.engine.device import synchronize


def time_call(fn: Callable[[], Any], device: torch.device, cuda_events: bool = False) -> float:
    """Seconds one call of `fn` takes, device work included."""
    if cuda_events and device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    synchronize(device)
    start_s = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start_s


def timed_samples(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                  setup: Callable[[], Any] | None = None, cuda_events: bool = False) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        samples.append(time_call(fn, device, cuda_events))
    return samples


def timed_median(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                 setup: Callable[[], Any] | None = None) -> float:
    """Median seconds of `fn` over `repeats` synchronized calls after warm-up."""
    return statistics.median(timed_samples(fn, device, warmup, repeats, setup))
