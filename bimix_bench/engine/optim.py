"""The one optimizer and schedule every model gets: AdamW, linear warmup, cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW; no weight decay on vectors/scalars (norms, biases) or parameters a mixer marked
    with bimix_bench.models.mixer.no_weight_decay (decays); parameters marked own_update (BiMix's
    static gates) are left to their module."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad or getattr(param, "_own_update", False):
            continue  # frozen, or stepped by its own module (models.mixer.own_update)
        if param.ndim < 2 or getattr(param, "_no_weight_decay", False):
            no_decay.append(param)
        else:
            decay.append(param)
    if train_cfg.get("optimizer", "adamw") != "adamw":
        raise ValueError(f"unsupported optimizer {train_cfg['optimizer']!r} (only adamw)")
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(train_cfg["weight_decay"])},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(train_cfg["lr"]),
        betas=tuple(train_cfg.get("betas", (0.9, 0.95))),
    )


def lr_at(step: int, total_steps: int, train_cfg: dict[str, Any]) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup then cosine decay."""
    peak = float(train_cfg["lr"])
    warmup = max(1, int(round(train_cfg.get("warmup_frac", 0.0) * total_steps)))
    floor = peak * float(train_cfg.get("min_lr_frac", 0.0))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
