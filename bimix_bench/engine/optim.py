"""The one optimizer and schedule every model gets: AdamW, linear warmup, cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from bimix_bench.config.sections import TrainConfig


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
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
    if train.optimizer != "adamw":
        raise ValueError(f"unsupported optimizer {train.optimizer!r} (only adamw)")
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=train.betas,
    )


def lr_at(step: int, total_steps: int, train: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup then cosine decay."""
    peak = train.lr
    warmup = max(1, int(round(train.warmup_frac * total_steps)))
    floor = peak * train.min_lr_frac
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
