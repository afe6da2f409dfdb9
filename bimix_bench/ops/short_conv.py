"""Short causal depthwise convolution over time (Mamba-2's width-4 conv), with SiLU.

One code path serves the parallel forward, prefill and decoding: the input is prefixed with
the last W-1 inputs seen before it (zeros at the start of a sequence), convolved without
padding, and the last W-1 inputs of the concatenation are the history for the next call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ShortCausalConv(nn.Module):
    def __init__(self, channels: int, width: int = 4, activation: bool = True):
        super().__init__()
        self.channels, self.width, self.activation = channels, width, activation
        self.weight = nn.Parameter(torch.empty(channels, width))  # (C, W); tap W-1 = current token
        self.bias = nn.Parameter(torch.empty(channels))
        bound = 1.0 / math.sqrt(width)  # nn.Conv1d's default for a depthwise kernel
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def empty_history(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch, self.width - 1, self.channels, device=device, dtype=dtype)

    def forward(
        self, x: torch.Tensor, history: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), history (B, W-1, C) or None (sequence start)
        -> y (B, T, C), new history (B, W-1, C)."""
        B, T, C = x.shape
        if history is None:
            history = self.empty_history(B, x.device, x.dtype)
        full = torch.cat([history.to(x.dtype), x], dim=1)  # (B, W-1+T, C)
        y = F.conv1d(full.transpose(1, 2), self.weight[:, None, :], self.bias, groups=C)
        y = y.transpose(1, 2)  # (B, T, C)
        return (F.silu(y) if self.activation else y), full[:, T:]
