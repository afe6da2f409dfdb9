"""Device and precision choices shared by training, evaluation and throughput timing."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        from bimix_bench.errors import UsageError

        raise UsageError("--device cuda requested but no CUDA device is available")
    return device


def resolved_precision(device: torch.device, precision: str) -> str:
    """`auto`: bf16 autocast on CUDA, fp32 on CPU; `bf16` / `fp32` force it."""
    if precision not in ("auto", "bf16", "fp32"):
        from bimix_bench.errors import UsageError

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
