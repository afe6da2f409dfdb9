"""Extra metrics of long-code modelling, from one forward pass per evaluation window:

  bpb_pos_<lo>-<hi>     bits per byte of targets at window positions lo <= t < hi (t = tokens
                        of context before the target within the window); log-spaced buckets
                        [0, C/2^(n-1)), ..., [C/4, C/2), [C/2, C): does more context help?
  bpb_after_<kind>      bits per byte on the first K bytes after each structural boundary
                        (blank line, def/class/decorator line, file start; boundaries.py),
  bpb_boundary          ... after any of them, and bpb_elsewhere on every other target byte;
                        n_* give the byte counts behind them
  bpb_len<f>x           bits per byte on windows of f times the training context C,
  bpb_len<f>x_beyond    ... on their positions t >= C (never seen in training),
  bpb_len<f>x_delta     bpb_len<f>x minus the bits per byte of the same bytes read as f windows
                        of length C (negative: the longer context helped)

Windows are the evaluation's own: consecutive windows of C tokens from the start of the split,
at most eval.test_examples of them. A window of f*C covers the same bytes as f consecutive
evaluation windows, which gives the matched comparison for free.
Memory: windows of f*C are scored a few at a time (batch rows scaled by 1/f so a batch holds
the same number of tokens), but a mixer whose memory grows faster than linearly in length
(attention's reference path) still needs more; a length that runs out of memory or that a
mixer refuses is left out of the metrics, with a warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bimix_bench.config.sections import eval_config, train_config
from bimix_bench.engine.device import autocast_factory
from bimix_bench.metrics.token_losses import token_losses
from bimix_bench.task import StreamSplit, TaskData
from bimix_bench.tasks.long_code.boundaries import BOUNDARY_KINDS

LN2 = math.log(2.0)


@dataclass(frozen=True)
class CodeMetricSettings:
    position_buckets: int  # number of log-spaced position buckets
    extrapolation_factors: tuple[int, ...]  # window lengths as multiples of the context
    extrapolation_windows: int  # at most this many long windows per factor


def position_bucket_edges(context: int, n_buckets: int) -> list[int]:
    """[0, C/2^(n-1), ..., C/2, C]: n log-spaced buckets of window positions (duplicates from
    tiny contexts dropped)."""
    if n_buckets < 1:
        raise ValueError(f"need at least one position bucket, got {n_buckets}")
    inner = [context >> k for k in range(n_buckets - 1, 0, -1)]
    return sorted({0, *[e for e in inner if 0 < e < context], context})


class _Sums:
    """Running (nats, count) sums by name."""

    def __init__(self) -> None:
        self.nats: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, name: str, nll: torch.Tensor, mask: torch.Tensor) -> None:
        self.nats[name] = self.nats.get(name, 0.0) + float(nll[mask].sum())
        self.count[name] = self.count.get(name, 0) + int(mask.sum())

    def bpb(self, name: str) -> float | None:
        n = self.count.get(name, 0)
        return self.nats[name] / n / LN2 if n else None


def code_metrics(model, data: TaskData, split: str, device: torch.device, cfg: dict[str, Any],
                 masks: dict[str, np.ndarray], settings: CodeMetricSettings) -> dict[str, float]:
    """All metrics above for `split` (a StreamSplit); `masks` are its boundary masks."""
    stream: StreamSplit = getattr(data, split)
    context = data.context
    autocast = autocast_factory(device, train_config(cfg).precision)
    evaluation = eval_config(cfg)
    limit = evaluation.test_examples if split == "test" else evaluation.val_examples
    batch_size = evaluation.batch_size
    n_windows = min(limit, stream.n_windows(context))
    if n_windows == 0:
        return {}
    model.eval()

    edges = position_bucket_edges(context, settings.position_buckets)
    bucket_names = [f"pos_{lo}-{hi}" for lo, hi in zip(edges[:-1], edges[1:])]
    position = torch.arange(context, device=device)  # (C,)
    bucket_masks = [(position >= lo) & (position < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    region = {kind: torch.from_numpy(masks[kind]) for kind in BOUNDARY_KINDS}  # (N,) bool each
    any_region = torch.stack(list(region.values())).any(0)  # (N,)
    sums = _Sums()
    window_nats = np.zeros(n_windows)  # per window, for the matched long-window comparison

    for first in range(0, n_windows, batch_size):
        ws = list(range(first, min(n_windows, first + batch_size)))
        starts = [w * context for w in ws]
        batch = stream.batch(starts, context).to(device)
        nll, _ = token_losses(model, batch.tokens, batch.targets, autocast)  # (B, C)
        scored = batch.targets != -100  # (B, C)
        window_nats[ws] = nll.sum(1).double().cpu().numpy()
        sums.add("all", nll, scored)
        for name, m in zip(bucket_names, bucket_masks):
            sums.add(name, nll, scored & m[None, :])
        # Stream offset of every target: window start + 1 + position.
        target_at = (torch.tensor(starts)[:, None] + 1 + torch.arange(context)[None, :])  # (B, C)
        for kind, mask in region.items():
            sums.add(f"after_{kind}", nll, scored & mask[target_at].to(device))
        inside = any_region[target_at].to(device)
        sums.add("boundary", nll, scored & inside)
        sums.add("elsewhere", nll, scored & ~inside)

    out: dict[str, float] = {}
    for name in [*bucket_names, *[f"after_{k}" for k in BOUNDARY_KINDS], "boundary", "elsewhere"]:
        value = sums.bpb(name)
        if value is not None:
            out[f"bpb_{name}"] = value
    for name in [*[f"after_{k}" for k in BOUNDARY_KINDS], "boundary", "elsewhere"]:
        out[f"n_{name}"] = sums.count.get(name, 0)
    for factor in settings.extrapolation_factors:
        out.update(_extrapolation(model, stream, context, factor, n_windows, window_nats, settings,
                                  batch_size, device, autocast))
    return out


def _extrapolation(model, stream: StreamSplit, context: int, factor: int, n_windows: int,
                   window_nats: np.ndarray, settings: CodeMetricSettings, batch_size: int,
                   device: torch.device, autocast) -> dict[str, float]:
    length = factor * context
    n_long = min(settings.extrapolation_windows, n_windows // factor, stream.n_windows(length))
    if factor < 2 or n_long == 0:
        return {}
    rows = max(1, batch_size // factor)
    beyond = torch.arange(length, device=device) >= context  # (f*C,)
    sums = _Sums()
    try:
        for first in range(0, n_long, rows):
            starts = [j * length for j in range(first, min(n_long, first + rows))]
            batch = stream.batch(starts, length).to(device)
            nll, _ = token_losses(model, batch.tokens, batch.targets, autocast)  # (b, f*C)
            scored = batch.targets != -100
            sums.add("all", nll, scored)
            sums.add("beyond", nll, scored & beyond[None, :])
    except (torch.cuda.OutOfMemoryError, NotImplementedError, ValueError) as err:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        warnings.warn(f"length extrapolation at {factor}x the context ({length} tokens) left out: "
                      f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return {}
    long_bpb = sums.bpb("all")
    matched = window_nats[: n_long * factor].sum() / sums.count["all"] / LN2
    return {
        f"bpb_len{factor}x": long_bpb,
        f"bpb_len{factor}x_beyond": sums.bpb("beyond"),
        f"bpb_len{factor}x_delta": long_bpb - matched,
    }
