"""Gated linear attention (Yang et al. 2023, "Gated Linear Attention Transformers with
Hardware-Efficient Training"), the "gla" baseline.

    q, k = W_q x, W_k x          (B, T, H, K), K = D / (2H)   (key width D/2, as the paper)
    v    = W_v x                 (B, T, H, V), V = D / H
    g    = logsigmoid(W_a2 W_a1 x + b) / 16      per-channel log decay, rank-16 projection;
                                                 the temperature 16 keeps decays near 1
    S_t  = diag(exp(g_t)) S_{t-1} + k_t v_t^T,   o_t = K^-1/2 q_t^T S_t
    y    = W_o (RMSNorm_head(o) * silu(W_r x))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.models.mixer import MixerConfig, register_model
from bimix_bench.ops.group_rmsnorm import GroupRMSNorm
from bimix_bench.ops.recurrent_mixer import Recurrence, RecurrentDecodeState, RecurrentMixer, half_width_keys


@register_model(
    "gla",
    "gated linear attention: data-dependent per-channel decay, swish output gate",
    options={
        "backend": "auto",
        "chunk_size": 64,
        "gate_rank": 16,  # rank of the decay projection
        "gate_temperature": 16.0,  # log decay = logsigmoid(.) / temperature
    },
)
class GatedLinearAttention(RecurrentMixer):
    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        D = cfg.d_model
        self.n_heads, self.key_dim, self.value_dim = half_width_keys(cfg)
        self.temperature = float(cfg.options.get("gate_temperature", 16.0))
        rank = int(cfg.options.get("gate_rank", 16))
        self.qkvr = nn.Linear(D, D // 2 + D // 2 + D + D, bias=False)  # q, k, v, output gate r
        self.decay_down = nn.Linear(D, rank, bias=False)
        self.decay_up = nn.Linear(rank, D // 2, bias=True)
        self.norm = GroupRMSNorm(D, self.value_dim, norm_before_gate=True)
        self.out = nn.Linear(D, D, bias=False)
        self.init_projections(self.qkvr, self.decay_down, self.decay_up)
        self.init_residual_output(self.out)

    def state_shape(self) -> tuple[int, int, int]:
        return self.n_heads, self.key_dim, self.value_dim

    def recurrence(self, x: torch.Tensor, state: RecurrentDecodeState | None) -> Recurrence:
        D, H = self.cfg.d_model, self.n_heads
        q, k, v, r = self.qkvr(x).split([D // 2, D // 2, D, D], dim=-1)
        def heads(t: torch.Tensor, width: int) -> torch.Tensor:  # (B,T,H*w) -> (B,T,H,w)
            return t.unflatten(-1, (H, width))

        acc = torch.promote_types(x.dtype, torch.float32)  # decays in fp32 at least
        log_decay = F.logsigmoid(self.decay_up(self.decay_down(x)).to(acc)) / self.temperature
        return Recurrence(
            heads(q, self.key_dim), heads(k, self.key_dim), heads(v, self.value_dim),
            heads(log_decay, self.key_dim), self.key_dim**-0.5, {"gate": r},
        )

    def finish(self, o: torch.Tensor, rec: Recurrence) -> torch.Tensor:
        return self.out(self.norm(o.flatten(-2), rec.extras["gate"]))  # (B,T,H,V) -> (B,T,D)
