"""The Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs"), the "mamba2" baseline.

    z, xBC, dt_raw = in_proj(u)                  widths d_inner, d_inner + 2N, n_heads
    x, B, C = silu(conv4(xBC))                   width-4 causal depthwise conv
    dt = softplus(dt_raw + dt_bias),  A = -exp(A_log)            per head
    S_t = exp(dt_t A) S_{t-1} + dt_t B_t x_t^T,  y_t = C_t^T S_t + D x_t
    out = out_proj(RMSNorm(y * silu(z)))         gate before the norm, one group (ngroups = 1)

The SSD core is gated_linear_attention with q = C, k = B, v = dt x and the per-token scalar
log decay dt A, so every backend of the shared op applies; mamba_ssm's Triton kernel
(mamba_chunk_scan_combined) is preferred on CUDA when importable.

Sizes: expand = 2 (d_inner = 2 d_model). Head dim P = 64, or, where 64 does not divide
d_inner, the largest divisor of d_inner below 64 (d_inner is a multiple of 4 since d_model is
a multiple of 2 n_heads, so P >= 4). d_state N = 64, capped at d_model so that tiny models do
not carry a state wider than themselves. The head count only sizes the small dt projection,
so the parameter count stays a smooth function of d_model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.models.mixer import MixerConfig, no_weight_decay, register_model
from bimix_bench.ops.group_rmsnorm import GroupRMSNorm
from bimix_bench.ops.mamba_ssd import mamba_problem, mamba_ssd
from bimix_bench.ops.recurrent_mixer import Recurrence, RecurrentDecodeState, RecurrentMixer
from bimix_bench.ops.short_conv import ShortCausalConv


def largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


@register_model(
    "mamba2",
    "Mamba-2 block: SSD with per-head scalar decay, short conv, gated RMSNorm",
    options={
        "backend": "auto",  # auto | mamba_ssm | fla | chunked | recurrent
        "chunk_size": 64,
        "expand": 2,
        "head_dim": 64,
        "d_state": 64,
        "conv_width": 4,
        "dt_min": 0.001,
        "dt_max": 0.1,
    },
)
class Mamba2(RecurrentMixer):
    extra_backends = {"mamba_ssm": mamba_problem}

    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        opts = cfg.options
        D = cfg.d_model
        self.d_inner = int(opts.get("expand", 2)) * D
        self.head_dim = largest_divisor_at_most(self.d_inner, int(opts.get("head_dim", 64)))
        self.n_ssm_heads = self.d_inner // self.head_dim
        self.d_state = min(int(opts.get("d_state", 64)), D)
        di, N, H = self.d_inner, self.d_state, self.n_ssm_heads
        self.in_proj = nn.Linear(D, 2 * di + 2 * N + H, bias=False)  # z, xBC, dt
        self.short_conv = ShortCausalConv(di + 2 * N, int(opts.get("conv_width", 4)))
        # dt starts log-uniform in [dt_min, dt_max]; dt_bias is its inverse softplus.
        lo, hi = math.log(float(opts.get("dt_min", 0.001))), math.log(float(opts.get("dt_max", 0.1)))
        dt0 = torch.exp(torch.rand(H) * (hi - lo) + lo).clamp(min=1e-4)
        self.dt_bias = no_weight_decay(nn.Parameter(dt0 + torch.log(-torch.expm1(-dt0))))
        self.A_log = no_weight_decay(nn.Parameter(torch.empty(H).uniform_(1, 16).log()))
        self.D = no_weight_decay(nn.Parameter(torch.ones(H)))
        self.norm = GroupRMSNorm(di, di, norm_before_gate=False)
        self.out = nn.Linear(di, D, bias=False)
        self.init_projections(self.in_proj)
        self.init_residual_output(self.out)

    def state_shape(self) -> tuple[int, int, int]:
        return self.n_ssm_heads, self.d_state, self.head_dim

    def recurrence(self, x: torch.Tensor, state: RecurrentDecodeState | None) -> Recurrence:
        di, N, H, P = self.d_inner, self.d_state, self.n_ssm_heads, self.head_dim
        z, xbc, dt_raw = self.in_proj(x).split([di, di + 2 * N, H], dim=-1)
        xbc, history = self.short_conv(xbc, None if state is None else state.conv)
        if state is not None:
            state.conv.copy_(history)
        xs, b, c = xbc.split([di, N, N], dim=-1)  # (B,T,di), (B,T,N), (B,T,N)
        xs = xs.unflatten(-1, (H, P))  # (B, T, H, P)
        acc = torch.promote_types(x.dtype, torch.float32)  # decays in fp32 at least
        dt = F.softplus(dt_raw.to(acc) + self.dt_bias.to(acc))  # (B, T, H)
        A = -self.A_log.to(acc).exp()  # (H,)
        Bsz, T = x.shape[:2]
        return Recurrence(
            q=c[:, :, None, :].expand(Bsz, T, H, N),  # one group: every head shares C and B
            k=b[:, :, None, :].expand(Bsz, T, H, N),
            v=xs * dt[..., None].to(xs.dtype),  # (B, T, H, P)
            log_decay=dt * A,  # (B, T, H)
            scale=1.0,
            extras={"x": xs, "z": z, "dt": dt, "A": A, "B": b, "C": c},
        )

    def run_recurrence(
        self, rec: Recurrence, backend: str, h0: torch.Tensor | None, want_state: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if backend != "mamba_ssm":
            return super().run_recurrence(rec, backend, h0, want_state)
        e = rec.extras
        return mamba_ssd(
            e["x"], e["dt"], e["A"], e["B"][:, :, None], e["C"][:, :, None], h0, want_state
        )

    def finish(self, o: torch.Tensor, rec: Recurrence) -> torch.Tensor:
        y = o + rec.extras["x"] * self.D[:, None].to(o.dtype)  # D skip: (B, T, H, P)
        return self.out(self.norm(y.flatten(-2), rec.extras["z"]))  # (B, T, D)
