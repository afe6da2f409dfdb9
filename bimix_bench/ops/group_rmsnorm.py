"""RMSNorm over groups of channels (per head, or over a whole inner width), optionally gated
by SiLU(gate) either after the norm (GLA, fla's FusedRMSNormGated) or before it (Mamba-2's
RMSNormGated with norm_before_gate=False)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupRMSNorm(nn.Module):
    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, norm_before_gate: bool = True):
        super().__init__()
        if dim % group_size:
            raise ValueError(f"dim {dim} is not a multiple of group_size {group_size}")
        self.group_size, self.eps, self.norm_before_gate = group_size, eps, norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """x, gate: (..., dim) -> (..., dim) in x's dtype; statistics in fp32 (or fp64)."""
        dtype = x.dtype
        acc = torch.promote_types(dtype, torch.float32)
        x = x.to(acc)
        if gate is not None and not self.norm_before_gate:
            x = x * F.silu(gate.to(acc))
        groups = x.unflatten(-1, (-1, self.group_size))  # (..., dim / group, group)
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        x = groups.flatten(-2) * self.weight.to(acc)
        if gate is not None and self.norm_before_gate:
            x = x * F.silu(gate.to(acc))
        return x.to(dtype)
