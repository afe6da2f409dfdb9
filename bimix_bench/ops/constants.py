"""Tensors that depend only on sizes, dtype and device (position tables, fixed bases, band
partitions), built once per argument tuple and reused by every forward.

Rebuilding them per call costs no FLOPs worth naming but one kernel launch per op: BiMix's
Chebyshev basis alone is a three-term recurrence of a few dozen small ops per layer and call.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def cached_constant(maxsize: int = 32) -> Callable[[F], F]:
    """Memoise a builder whose arguments are hashable sizes, dtypes and devices. The tensors it
    returns are shared: callers must not change them in place. They are built as ordinary
    tensors even when first asked for under inference_mode, or a later training step could not
    save them for backward."""

    def decorate(build: F) -> F:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args, **kwargs):
            with torch.inference_mode(False), torch.no_grad():
                return build(*args, **kwargs)

        return cached  # type: ignore[return-value]

    return decorate
