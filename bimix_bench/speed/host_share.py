"""How much of a call the host spends issuing it: kernel launches, host seconds, device seconds.

A call whose host time (Python plus launching its kernels) approaches its device time is
launch-bound: the GPU waits for the CPU, so the call's speed follows the host (its clock, other
processes on it) rather than the GPU. Such a model's figures spread from one process or machine
to the next while device-bound models stay put, and its speed would gain from fewer, larger
kernels or CUDA graphs rather than from faster kernels.

Per call:
  launches  GPU kernels the call runs (torch.profiler, CUDA activity); on a CPU, the top-level
            aten operators it dispatches (each would be at least one launch on a GPU)
  host_s    seconds from the call to its return, started on an idle device: the time the host
            needs to issue the work (a full launch queue or a synchronizing operation makes the
            host wait for the GPU, and then this includes device time; `synchronizes` says which)
  elapsed_s seconds from the call's start to the end of its last kernel (CUDA events); this
            includes the GPU's idle gaps while it waits for the host
  busy_s    seconds the GPU spent running the call's kernels (their summed profiled durations);
            elapsed_s on a CPU. host_s / busy_s near or above 1: launch-bound
  synchronizes  the call made the host wait for the GPU (torch's sync debug mode saw it)
  sync_sites    where: "file:line" of each Python line whose torch call synchronized (a
            D2H read such as .item(), or a blocking H2D copy such as torch.tensor(..., device))
"""

from __future__ import annotations

import statistics
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from bimix_bench.engine.device import synchronize


@dataclass(frozen=True)
class HostShare:
    launches: int
    host_s: float  # median over repeats
    elapsed_s: float  # median over repeats
    busy_s: float  # one profiled call
    synchronizes: bool
    sync_sites: tuple[str, ...] = ()

    @property
    def host_over_busy(self) -> float:
        """Near or above 1: the host, not the GPU, sets the pace."""
        return self.host_s / self.busy_s if self.busy_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "host_over_busy": self.host_over_busy}


def profile_call(fn: Callable[[], None], device: torch.device) -> tuple[int, float | None]:
    """(launches, kernel seconds) of one call of `fn`: kernels and their summed durations on a
    GPU; top-level aten operators and None on a CPU (no kernels to time apart from the call)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        return len(kernels), sum(e.time_range.elapsed_us() for e in kernels) / 1e6
    top_level = [e for e in events if e.name.startswith("aten::")
                 and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return len(top_level), None


def waits_for_device(fn: Callable[[], None], device: torch.device) -> bool:
    """Whether a call of `fn` makes the host wait for the GPU (False on a CPU)."""
    return bool(sync_sites(fn, device))


ANCHORS = ("site-packages", "bimix_bench", "tasks", "baselines", "scripts", "tests")


def short_site(filename: str, lineno: int) -> str:
    """A source location without the machine's own prefix: from the innermost package or repo
    folder on (the repo's own folder may carry any name, even one of these)."""
    parts = Path(filename).parts
    found = [i for i, part in enumerate(parts) if part in ANCHORS]
    if not found:
        return f"{Path(filename).name}:{lineno}"
    start = found[-1] + (1 if parts[found[-1]] == "site-packages" else 0)
    return f"{'/'.join(parts[start:])}:{lineno}"


def _in_torch(filename: str) -> bool:
    return "torch" in Path(filename).parts


def _is_plumbing(frame: traceback.FrameSummary) -> bool:
    """Frames that only carry the warning to us: the warnings module and this module's own
    recorder. The harness's other frames stay, so a wait raised by the harness itself (around
    the call it measures) is named as such instead of being charged to its caller."""
    if Path(frame.filename).name == "warnings.py" and "torch" not in Path(frame.filename).parts:
        return True
    return frame.filename == __file__ and frame.name in {"record", "_site_of_current_stack"}


def _site_of_current_stack() -> str:
    """The innermost line outside torch on the current Python stack, with the torch line it
    went through when that was where the wait was raised."""
    return _site_of_frames([f for f in traceback.extract_stack() if not _is_plumbing(f)])


def _site_of_frames(frames: list[traceback.FrameSummary]) -> str:
    """The innermost of `frames` (outermost first) outside torch, "(via the torch line)" when a
    torch frame lies inside it."""
    torch_frame = None
    for frame in reversed(frames):
        if _in_torch(frame.filename):
            torch_frame = torch_frame or frame
            continue
        site = short_site(frame.filename, frame.lineno)
        if torch_frame is not None:
            site += f" (via {short_site(torch_frame.filename, torch_frame.lineno)})"
        return site
    return "unknown"


def _site_of_error(fn: Callable[[], None]) -> str | None:
    """Where `fn` first makes the host wait, found by torch's sync debug mode "error": the
    synchronizing op raises at once, so its traceback holds the line even where the "warn"
    mode's warning reaches Python only later (at the harness's own next call into torch).
    None when `fn` runs through without a wait."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        try:
            fn()
        finally:
            _restore_sync_debug_mode(previous)
    except RuntimeError as error:
        if "synchroniz" not in str(error):
            raise
        return _site_of_frames(traceback.extract_tb(error.__traceback__))
    return None


# A wait whose warning reached Python only when the harness restored the debug mode after the
# call, so that the stack no longer holds the line inside the call that waited.
DEFERRED = "a wait inside the call, reported only after it"
# A warning that surfaced while the harness switched the mode to "warn", before the call ran
# (seen on an H100 with torch 2.11, once per process): not placed by the stack either.
AT_ENTRY = "a wait reported as the harness entered the warn mode, before the call"


def _enter_warn_mode() -> None:
    torch.cuda.set_sync_debug_mode("warn")


def _restore_sync_debug_mode(mode: int) -> None:
    torch.cuda.set_sync_debug_mode(mode)


def _surfaced_in(function_name: str) -> bool:
    return any(f.filename == __file__ and f.name == function_name
               for f in traceback.extract_stack())


def sync_sites(fn: Callable[[], None], device: torch.device) -> tuple[str, ...]:
    """The distinct sites, in call order, at which a call of `fn` made the host wait for the GPU;
    () on a CPU. torch's sync debug mode warns from inside the op, while the Python stack still
    holds the line that called it: a replaced showwarning reads that stack. A warning that
    surfaces only after the call is placed by a second call in the "error" mode."""
    if device.type != "cuda":
        return ()
    sites: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        if _surfaced_in("_enter_warn_mode"):
            sites.append(AT_ENTRY)
        elif _surfaced_in("_restore_sync_debug_mode"):
            sites.append(DEFERRED)
        else:
            sites.append(_site_of_current_stack())

    synchronize(device)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record  # restored by catch_warnings
        _enter_warn_mode()
        try:
            fn()
        finally:
            _restore_sync_debug_mode(previous)
    synchronize(device)
    unplaced = {DEFERRED, AT_ENTRY}
    if unplaced & set(sites):
        found = _site_of_error(fn)
        if found is not None:
            sites = [f"{found} (found in error mode)" if site in unplaced else site
                     for site in sites]
        else:  # the "error" mode saw no wait: a warning from before the call is not the call's
            sites = [site for site in sites if site != AT_ENTRY]
    return tuple(dict.fromkeys(sites))


def measure(fn: Callable[[], None], device: torch.device, repeats: int = 10,
            warmup: int = 2, setup: Callable[[], None] | None = None) -> HostShare:
    """Host, elapsed and kernel seconds per call of `fn` (warm-up calls first, so nothing is
    compiled or autotuned inside the measurement)."""
    setup = setup or (lambda: None)  # untimed, before every call (decode restores its state)
    for _ in range(warmup):
        setup()
        fn()
    host, elapsed = [], []
    for _ in range(repeats):
        setup()
        synchronize(device)  # idle device: the host's time is its own, not a queue's backlog
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t0)
        if device.type == "cuda":
            end.record()
            end.synchronize()
            elapsed.append(start.elapsed_time(end) / 1e3)
        else:
            elapsed.append(host[-1])
    setup()
    launches, busy = profile_call(fn, device)
    setup()
    sites = sync_sites(fn, device)
    elapsed_s = statistics.median(elapsed)
    return HostShare(launches, statistics.median(host), elapsed_s,
                     elapsed_s if busy is None else busy, bool(sites), sites)


# --- several processes' documents as one table ---------------------------------------------
def _span(values: list[float], fmt: str) -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def markdown_table(documents: list[dict[str, Any]]) -> str:
    """The `host_share` figures of several processes (scripts/host_share.py's JSON documents)
    as one markdown row per model: kernels per call, median kernel milliseconds, and the range
    over processes of host ÷ kernel time and of the share of the call the GPU sat idle."""
    kinds = ("forward", "train", "decode")
    decode_tokens = "/".join(map(str, sorted({d["settings"]["decode_tokens"] for d in documents})))
    header = [
        "model",
        f"kernels per call: forward / train / decode ({decode_tokens} tokens)",
        "kernel ms: forward / train (median)",
        "host ÷ kernel time: forward / train",
        "GPU idle within the call: forward / train / decode",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in documents[0]["models"]:
        rows = {k: [doc["models"][model][k] for doc in documents] for k in kinds}
        launches = " / ".join(_span([r["launches"] for r in rows[k]], "{:,.0f}") for k in kinds)
        kernel_ms = " / ".join(f"{statistics.median(r['busy_s'] for r in rows[k]) * 1e3:.1f}"
                               for k in kinds[:2])
        ratio = " / ".join(_span([r["host_over_busy"] for r in rows[k]], "{:.2f}")
                           for k in kinds[:2])
        idle = " / ".join(_span([100 * (1 - r["busy_s"] / r["elapsed_s"]) for r in rows[k]],
                                "{:.0f}") + "%" for k in kinds)
        lines.append(f"| {model} | {launches} | {kernel_ms} | {ratio} | {idle} |")
    return "\n".join(lines)
