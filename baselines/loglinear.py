"""Log-Linear Mamba-2 (Guo, Yang, Goel, Xing, Dao, Kim 2025, "Log-Linear Attention",
arXiv 2506.04761), the "loglinear" model: Mamba-2's block (baselines/mamba2.py: projections,
short convolution, dt and A, D skip, gated RMSNorm) with its first-order state replaced by
Fenwick-tree level states weighted per token, head and level:

    o_t = sum_{s <= t} lam[t, level(t, s)] exp(sum_{r=s+1..t} dt_r A) (C_t . B_s) dt_s x_s

(ops/log_linear.py). lam = softplus(W_lam u + b) with b = log(e - 1) and W_lam = 0 at the
start, so every lam starts at 1 and the model starts as Mamba-2 itself (our choice: the
paper's exact parameterisation of lam was not available to us). W_lam has one output per head
and level for up to `max_length` tokens (17 levels for 64K).

Backends: "fla" (fla's chunk_log_linear_attn on CUDA), "chunked" (the chunkwise form in plain
torch: the quadratic form inside chunks of `chunk_size` tokens, level states across them),
"reference" (the quadratic masked form in plain torch); "auto" takes fla on CUDA where fla-core
has the kernel, the head sizes are powers of two and, when training, the per-token-gated
backward is trusted on this GPU (the gate the other fla paths use), else the chunked form, and
says why. Decoding keeps level_count(max_len) states: O(log T) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.baselines.mamba2 import Mamba2
from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.mixer import MixerConfig, register_model
from bimix_bench.ops.fla_linear_recurrence import load_fla, per_token_backward_problem
from bimix_bench.ops.log_linear import (
    fenwick_prefill,
    fenwick_step,
    level_count,
    log_linear_chunked,
    log_linear_fla,
    log_linear_reference,
)

BACKENDS = ("auto", "fla", "chunked", "reference")


@dataclass
class LogLinearDecodeState:
    levels: torch.Tensor  # (B, L, H, N, P): per Fenwick level, the decayed B x^T sums
    conv: torch.Tensor  # (B, W - 1, C): the short convolution's input history
    position: torch.Tensor  # (1,) int64 on the device


def fla_log_linear_problem(device: torch.device, needs_grad: bool, head_dim: int, d_state: int
                           ) -> str | None:
    """Why fla's log-linear kernel cannot run here (or with these sizes), or None."""
    odd = {name: n for name, n in (("head_dim", head_dim), ("d_state", d_state)) if n & (n - 1)}
    if odd:
        sizes = ", ".join(f"{name} {n}" for name, n in odd.items())
        return f"fla's chunk_log_linear_attn needs power-of-two head sizes ({sizes})"
    if device.type != "cuda":
        return f"fla needs a CUDA device (tensors on {device.type})"
    fla, reason = load_fla()
    if fla is None:
        return reason
    try:
        import fla.ops.log_linear_attn  # noqa: F401
    except Exception as err:
        return f"fla-core has no log_linear_attn ({type(err).__name__}: {err})"
    return per_token_backward_problem(device) if needs_grad else None


@register_model(
    "loglinear",
    "Log-Linear Mamba-2: Fenwick-tree level states with per-token level weights",
    options={"backend": "auto", "chunk_size": 64, "expand": 2, "head_dim": 64, "d_state": 64,
             "conv_width": 4, "dt_min": 0.001, "dt_max": 0.1, "max_length": 65536},
)
class LogLinearMamba2(Mamba2):
    extra_backends: dict = {}

    def __init__(self, cfg: MixerConfig):
        choice = str(cfg.options.get("backend", "auto"))
        if choice not in BACKENDS:
            raise UsageError(f"models.loglinear.backend={choice!r}; valid: {', '.join(BACKENDS)}")
        super().__init__(MixerConfig(cfg.d_model, cfg.n_heads, cfg.layer_idx, cfg.n_layers,
                                     cfg.max_seq_len, {**cfg.options, "backend": "chunked"}))
        if choice == "fla" and (problem := self.fla_problem(torch.device("cuda"), False)):
            raise SkipCell(f"backend 'fla' unavailable: {problem}")
        if self.chunk_size & (self.chunk_size - 1):
            raise UsageError(f"models.loglinear.chunk_size={self.chunk_size}: the chunkwise form "
                             "needs a power of two")
        self.cfg = cfg
        self.requested_backend = choice
        self.n_levels = level_count(int(cfg.options.get("max_length", 65536)))
        self.level_proj = nn.Linear(cfg.d_model, self.n_ssm_heads * self.n_levels, bias=True)
        nn.init.zeros_(self.level_proj.weight)  # every lam exactly 1 at the start
        nn.init.constant_(self.level_proj.bias, math.log(math.e - 1.0))  # softplus -> 1
        self.backend, self.backend_reason = "torch-reference", "not run yet"

    @property
    def decode_backend(self) -> str:  # type: ignore[override]
        return "torch-step (Fenwick level states)"

    def level_scales(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, H, L)
        acc = torch.promote_types(x.dtype, torch.float32)
        return F.softplus(self.level_proj(x).to(acc)).unflatten(-1, (self.n_ssm_heads, self.n_levels))

    def fla_problem(self, device: torch.device, needs_grad: bool) -> str | None:
        return fla_log_linear_problem(device, needs_grad, self.head_dim, self.d_state)

    def _path(self, x: torch.Tensor):
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        problem = self.fla_problem(x.device, grad)
        if self.requested_backend == "fla" or (self.requested_backend == "auto" and problem is None):
            if problem:
                raise SkipCell(f"backend 'fla' unavailable: {problem}")
            self.backend, self.backend_reason = "fla", f"{load_fla()[1]}: chunk_log_linear_attn"
            return log_linear_fla
        if self.requested_backend == "reference":
            self.backend, self.backend_reason = "torch-reference", "reference requested"
            return log_linear_reference
        why = ("chunked requested" if self.requested_backend == "chunked"
               else f"plain-torch chunkwise form: {problem}")
        self.backend, self.backend_reason = "torch-chunked", why
        return partial(log_linear_chunked, chunk=self.chunk_size)

    def _inputs(self, x: torch.Tensor, state):
        rec = self.recurrence(x, state)
        e = rec.extras
        # Mamba-2's one group: C and B (B, T, N) shared by every head -> (B, T, 1, N).
        return rec, e["C"][:, :, None], e["B"][:, :, None], rec.v, rec.log_decay, self.level_scales(x)

    def _parallel(self, x: torch.Tensor, state=None) -> torch.Tensor:
        if x.shape[1] > 2 ** (self.n_levels - 1):
            raise ValueError(f"loglinear holds {self.n_levels} levels: at most "
                             f"{2 ** (self.n_levels - 1)} tokens (models.loglinear.max_length)")
        rec, q, k, v, g, lam = self._inputs(x, None)
        return self.finish(self._path(x)(q, k, v, g, lam, rec.scale), rec)

    # --- decoding ------------------------------------------------------------------------
    def init_decode_state(self, batch_size: int, max_len: int, device: torch.device,
                          dtype: torch.dtype) -> LogLinearDecodeState:
        acc = torch.promote_types(dtype, torch.float32)
        n = min(self.n_levels, level_count(max_len))
        levels = torch.zeros(batch_size, n, self.n_ssm_heads, self.d_state, self.head_dim,
                             device=device, dtype=acc)
        conv = self.short_conv.empty_history(batch_size, device, dtype)
        return LogLinearDecodeState(levels, conv, torch.zeros(1, device=device, dtype=torch.long))

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, LogLinearDecodeState]:
        state = self.init_decode_state(x.shape[0], max_len, x.device, x.dtype)
        rec, q, k, v, g, lam = self._inputs(x, state)  # from a zero history; leaves the prompt's
        y = self.finish(self._path(x)(q, k, v, g, lam, rec.scale), rec)
        state.levels.copy_(fenwick_prefill(k, v, g, state.levels.shape[1]))
        state.position.fill_(x.shape[1])
        return y, state

    def decode_step(self, x_t: torch.Tensor, state: LogLinearDecodeState) -> torch.Tensor:
        rec, q, k, v, g, lam = self._inputs(x_t[:, None], state)  # updates the conv history
        o_t = fenwick_step(state.levels, state.position, q[:, 0], k[:, 0], v[:, 0], g[:, 0],
                           lam[:, 0], rec.scale)
        state.position.add_(1)
        return self.finish(o_t[:, None], rec)[:, 0]
