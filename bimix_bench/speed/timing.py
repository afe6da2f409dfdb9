"""Paired timing: every timed call of a workload comes right after a timed stretch of its
calibration of about the same length, in rounds over all workloads.

Why pairs and rounds: on a shared machine the speed available to this process drifts (other
processes, frequency scaling). A calibration timed next to the workload sees nearly the same
machine, so their ratio cancels most of that drift; going round-robin over the workloads spreads
each one's samples over the whole run, so one burst of load spoils one sample of many workloads
instead of all samples of one. Medians over rounds then drop the spoiled samples.

Why about the same length: a call is disturbed in proportion to how long it runs (each time
the scheduler hands the core to another process, caches are refilled afterwards). The
calibration is therefore repeated `calibration_calls` times in one timed stretch, chosen once
so that the stretch lasts about as long as one workload call; a sample's ratio divides by the
time per calibration call, so the figure does not depend on the repeat count.

Clocks: "wall" (perf_counter after synchronizing, or CUDA events on a GPU) is what a user
waits for. "cpu" (this process's CPU time; CPU devices only) counts only the time the process
actually ran, so being descheduled in favour of other processes -- the dominant noise on a
loaded shared machine, where a call of a few milliseconds either runs undisturbed or loses a
whole scheduler slice -- does not count at all. With one torch thread no CPU time is spent
spinning at thread barriers either, so CPU time then measures exactly the work done. The
calibration ratio still absorbs what CPU time does not (a lower clock, cache and memory
bandwidth taken by neighbours).

Heap: with the "cpu" clock, glibc's malloc is told to keep freed memory and to serve large
blocks from its heap (`retained_heap`) while measuring. Otherwise large temporaries are often
fresh mappings whose pages the kernel zeroes on first touch -- thousands of page faults per call
for some models, a cost counted as this process's CPU time that grows with memory traffic from
other processes and flips with the heap's state from one call to the next.

Test-only hook: BIMIX_BENCH_INJECT_SLOWDOWN="model=factor[,model=factor]" makes every timed
call of that model's workloads take `factor` times as long, by busy-waiting (factor - 1) x the
call's own measured time right after it, inside the timed interval. It exists so tests and the
CI gate can prove that `check` catches a slowdown; measurements made with it are labelled in
the speed document ("injected_slowdown").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from bimix_bench.engine.device import synchronize
from bimix_bench.timing import time_call
from bimix_bench.errors import UsageError

INJECT_ENV = "BIMIX_BENCH_INJECT_SLOWDOWN"


def injected_slowdowns(text: str | None = None) -> dict[str, float]:
    """Parse "model=factor,..." (default: the environment variable) into {model: factor}."""
    text = os.environ.get(INJECT_ENV, "") if text is None else text
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not sep or not name.strip() or not factor >= 1.0:
            raise UsageError(f"{INJECT_ENV} expects model=factor with factor >= 1, got {item!r}")
        out[name.strip()] = factor
    return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def busy_wait(seconds: float, clock: str = "wall") -> float:
    """Spin (no sleep: the core stays busy like real work) until `seconds` have passed on
    `clock`; returns the time spun on that clock."""
    now = CLOCKS[clock]
    start = now()
    while now() - start < seconds:
        pass
    return now() - start


@dataclass
class Timed:
    """One thing to time: `run` is timed, `setup` (untimed) runs before every timed call."""

    run: Callable[[], None]
    setup: Callable[[], None] | None = None
    slowdown: float = 1.0  # test-only injected factor (see module docstring)


@dataclass
class Pair:
    """A workload and the calibration it is divided by; `units` is what one workload call
    processes (tokens). A sample's ratio is units x (seconds per calibration call) / (seconds
    per workload call): tokens processed in the time of one calibration call."""

    workload: Timed
    calibration: Timed
    units: int
    calibration_calls: int = 1  # calibration calls per timed stretch
    workload_s: list[float] = field(default_factory=list)
    calibration_s: list[float] = field(default_factory=list)  # per stretch

    @property
    def ratios(self) -> list[float]:
        k = self.calibration_calls
        return [self.units * c / (k * w) for c, w in zip(self.calibration_s, self.workload_s)]

    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def median_rate(self) -> float:
        """Units per second of the workload alone (median over rounds)."""
        return self.units / statistics.median(self.workload_s)


class PairTimer:
    """Times calls on one device with one clock (see module docstring): "wall" is CUDA events
    on a GPU and perf_counter after synchronizing elsewhere; "cpu" is process CPU time."""

    def __init__(self, device: torch.device, clock: str = "wall"):
        if clock not in CLOCKS:
            raise UsageError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
        if clock == "cpu" and device.type != "cpu":
            raise UsageError("the cpu clock times CPU work only; use the wall clock on a GPU")
        self.device = device
        self.clock = clock

    def __call__(self, item: Timed, calls: int = 1) -> float:
        """Seconds `calls` back-to-back calls of `item` take (its setup runs untimed first)."""
        if item.setup is not None:
            item.setup()
            synchronize(self.device)

        def run() -> None:
            for _ in range(calls):
                item.run()

        if self.clock == "cpu":
            start = time.process_time()
            run()
            seconds = time.process_time() - start
        else:
            seconds = time_call(run, self.device, cuda_events=True)
        if item.slowdown > 1.0:
            seconds += busy_wait((item.slowdown - 1.0) * seconds, self.clock)
        return seconds

    def warm_up(self, item: Timed, calls: int) -> None:
        for _ in range(calls):
            if item.setup is not None:
                item.setup()
            item.run()
        synchronize(self.device)


def run_rounds(pairs: list[Pair], timer: PairTimer, warmup: int, rounds: int,
               on_round: Callable[[int], None] | None = None) -> None:
    """Warm every workload and calibration up, then `rounds` rounds; each round times, for
    every pair in order, its calibration stretch and then one workload call. Fills the pairs'
    samples."""
    seen: set[int] = set()
    for pair in pairs:
        for item in (pair.calibration, pair.workload):
            if id(item) not in seen:  # calibrations are shared between pairs
                seen.add(id(item))
                timer.warm_up(item, warmup)
    for r in range(rounds):
        for pair in pairs:
            pair.calibration_s.append(timer(pair.calibration, pair.calibration_calls))
            pair.workload_s.append(timer(pair.workload))
        if on_round is not None:
            on_round(r + 1)


def matched_calls(timer: PairTimer, workload: Timed, calibration_s: float, trials: int = 3) -> int:
    """Calibration calls whose total lasts about one workload call (the fastest of `trials`
    calls, the least disturbed one)."""
    fastest = min(timer(workload) for _ in range(trials))
    return max(1, round(fastest / max(calibration_s, 1e-9)))


def call_seconds(timer: PairTimer, item: Timed, trials: int = 5) -> float:
    """Median seconds of one call of `item`."""
    return statistics.median(timer(item) for _ in range(trials))


# glibc mallopt parameters and defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024
# Both are C ints; 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
_KEEP_TRIM, _KEEP_MMAP = 1 << 30, 32 * 1024 * 1024


@contextlib.contextmanager
def retained_heap() -> Iterator[bool]:
    """While active, glibc's malloc serves blocks up to 32 MiB from its heap and keeps freed
    memory instead of returning it to the kernel (see module docstring). Yields whether that
    took effect (False where the C library is not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        yield False
        return
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM))
    try:
        yield applied
    finally:
        mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
