"""Causal linear attention (Katharopoulos et al. 2020), the "linear_attn" baseline.

    q, k = elu(W_q x) + 1, elu(W_k x) + 1       per head, K = D / H channels
    S_t = S_{t-1} + k_t v_t^T,  o_t = K^-1/2 q_t^T S_t
    y = W_o RMSNorm_head(o) [* silu(W_g x) with the optional output gate]

Feature map: elu + 1 keeps q·k positive, as in the paper, so every token's contribution
adds with the same sign.
Normalization: a per-head RMSNorm of the output instead of the paper's division by
q_t^T sum_s k_s (as fla's LinearAttention layer and TransNormer do). The division makes the
output a ratio of two sums that both grow with t, which is fragile in bf16 over long
contexts and gives unbounded gradients when the denominator is small; the norm removes the
scale just as well, keeps the op a pure linear recurrence (so fla's chunk_linear_attn with
normalize=False computes exactly this), and keeps the decode state to S alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.models.mixer import MixerConfig, register_model
from bimix_bench.ops.group_rmsnorm import GroupRMSNorm
from bimix_bench.ops.recurrent_mixer import Recurrence, RecurrentDecodeState, RecurrentMixer


@register_model(
    "linear_attn",
    "causal linear attention (elu+1 features, per-head RMSNorm output)",
    options={"backend": "auto", "output_gate": False, "chunk_size": 64},
)
class LinearAttention(RecurrentMixer):
    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        D, H = cfg.d_model, cfg.n_heads
        if D % H:
            raise ValueError(f"d_model {D} is not divisible by n_heads {H}")
        self.n_heads, self.head_dim = H, D // H
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.gate = nn.Linear(D, D, bias=False) if cfg.options.get("output_gate", False) else None
        self.norm = GroupRMSNorm(D, self.head_dim, norm_before_gate=True)
        self.out = nn.Linear(D, D, bias=False)
        self.init_projections(self.qkv, *([self.gate] if self.gate is not None else []))
        self.init_residual_output(self.out)

    def state_shape(self) -> tuple[int, int, int]:
        return self.n_heads, self.head_dim, self.head_dim

    def recurrence(self, x: torch.Tensor, state: RecurrentDecodeState | None) -> Recurrence:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.n_heads, self.head_dim)).unbind(2)  # (B,T,H,Dh)
        extras = {} if self.gate is None else {"gate": self.gate(x)}  # (B, T, D)
        return Recurrence(F.elu(q) + 1, F.elu(k) + 1, v, None, self.head_dim**-0.5, extras)

    def finish(self, o: torch.Tensor, rec: Recurrence) -> torch.Tensor:
        return self.out(self.norm(o.flatten(-2), rec.extras.get("gate")))  # (B,T,H,Dh) -> (B,T,D)
