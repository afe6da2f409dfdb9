"""Device and precision choices shared by training, evaluation and throughput timing."""

from __future__ import annotations

import contextlib
import re
from typing import Callable, ContextManager

import torch

from bimix_bench.errors import UsageError

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device for a --device value: auto (CUDA if present), cpu, cuda or cuda:N.
    Anything else, or CUDA where there is none (or no device N), is a UsageError."""
    if not isinstance(requested, str) or not _DEVICE.fullmatch(requested):
        raise UsageError(f"--device {requested!r} is not a device; valid: auto, cpu, cuda, cuda:N")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested} requested but no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {requested}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


def resolved_precision(device: torch.device, precision: str) -> str:
    """`auto`: bf16 autocast on CUDA, fp32 on CPU; `bf16` / `fp32` force it."""
    if precision not in ("auto", "bf16", "fp32"):
        raise UsageError(f"train.precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_factory(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    if resolved_precision(device, precision) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated CUDA memory since the last reset; None on CPU (not tracked there)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
