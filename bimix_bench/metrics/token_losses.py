"""Per-position losses and hits from one forward pass, so that several metrics (bits per byte
by position, near structural boundaries, answer accuracy) come from the same logits."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F


@torch.no_grad()
def token_losses(model, tokens: torch.Tensor, targets: torch.Tensor,
                 autocast: Callable[[], ContextManager] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens, targets: (B, T) on the model's device, targets -100 where not scored.
    Returns nll (B, T) float32 in nats (0 where not scored) and hit (B, T) bool (argmax equals
    the target; False where not scored)."""
    with (autocast or nullcontext)():
        logits = model(tokens)  # (B, T, V)
    logits = logits.float()
    scored = targets != -100
    safe = targets.clamp(min=0)  # -100 would index out of range; masked below
    nll = F.cross_entropy(logits.transpose(1, 2), safe, reduction="none")  # (B, T)
    nll = torch.where(scored, nll, torch.zeros_like(nll))
    hit = (logits.argmax(-1) == targets) & scored
    return nll, hit
