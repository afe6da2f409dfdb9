"""Shared plumbing of the token mixers built on gated_linear_attention (linear attention, GLA,
Mamba-2): the `backend` option and its resolution, the parallel forward, prefill, and
step-by-step decoding with a constant-size state.

A subclass only says how inputs become the recurrence (`recurrence`) and how the recurrence's
output becomes the mixer's output (`finish`); forward, prefill and decode_step all go through
those two hooks, so the three paths cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.mixer import MixerConfig, TokenMixer
from bimix_bench.ops.fla_linear_recurrence import load_fla
from bimix_bench.ops.linear_recurrence import (
    BACKENDS,
    compute_dtype,
    decay_kind,
    gated_linear_attention,
    recurrent_step,
    resolve_backend,
)
from bimix_bench.ops.short_conv import ShortCausalConv

INIT_STD = 0.02  # projections; residual outputs also shrink with depth (as the backbone's MLP)


def half_width_keys(cfg: MixerConfig) -> tuple[int, int, int]:
    """(H, K, V) of a state with GLA's widths: keys D / 2H, values D / H per head."""
    D, H = cfg.d_model, cfg.n_heads
    if D % (2 * H):
        raise ValueError(f"d_model {D} is not divisible by 2 * n_heads = {2 * H}")
    return H, D // (2 * H), D // H


@dataclass
class Recurrence:
    """Inputs of S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t."""

    q: torch.Tensor  # (B, T, H, K)
    k: torch.Tensor  # (B, T, H, K)
    v: torch.Tensor  # (B, T, H, V)
    log_decay: torch.Tensor | None  # None, (H,), (B, T, H) or (B, T, H, K)
    scale: float
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # what finish() needs


@dataclass
class RecurrentDecodeState:
    """Constant-size decode state, updated in place (its tensors keep their addresses)."""

    ssm: torch.Tensor  # (B, H, K, V), fp32 (fp64 for an fp64 model)
    conv: torch.Tensor | None = None  # (B, W-1, C): short-conv input history, if any


class RecurrentMixer(TokenMixer):
    # Model-specific fast paths tried before the shared op under "auto":
    # name -> (device -> why it cannot run there, or None).
    extra_backends: dict[str, Callable[[torch.device], str | None]] = {}
    # A subclass with a short conv in front of the recurrence registers it as `short_conv`
    # (a ShortCausalConv); its input history then joins the decode state.

    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        self.requested_backend = str(cfg.options.get("backend", "auto"))
        self.chunk_size = int(cfg.options.get("chunk_size", 64))
        self._check_requested_backend()

    # --- hooks for subclasses --------------------------------------------------------------
    def recurrence(self, x: torch.Tensor, state: RecurrentDecodeState | None) -> Recurrence:
        """x (B, T, D) -> the recurrence's inputs. With a state, continue from it (and update
        its conv history in place: `state.conv.copy_(...)`, never a new tensor)."""
        raise NotImplementedError

    def finish(self, o: torch.Tensor, rec: Recurrence) -> torch.Tensor:
        """o (B, T, H, V) -> mixer output (B, T, D)."""
        raise NotImplementedError

    def state_shape(self) -> tuple[int, int, int]:
        """(H, K, V) of the recurrent state."""
        raise NotImplementedError

    def run_recurrence(
        self, rec: Recurrence, backend: str, h0: torch.Tensor | None, want_state: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(o (B, T, H, V), final state (B, H, K, V) or None). Overridden for extra backends."""
        return gated_linear_attention(
            rec.q, rec.k, rec.v, rec.log_decay, scale=rec.scale, initial_state=h0,
            output_final_state=want_state, backend=backend, chunk_size=self.chunk_size,
        )

    # --- TokenMixer ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self._parallel(x, None)

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, RecurrentDecodeState]:
        state = self.init_decode_state(x.shape[0], max_len, x.device, x.dtype)
        return self._parallel(x, state), state

    def init_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> RecurrentDecodeState:
        H, K, V = self.state_shape()  # constant size: max_len does not matter
        ssm = torch.zeros(batch_size, H, K, V, device=device, dtype=compute_dtype(dtype))
        conv = None
        short_conv: ShortCausalConv | None = getattr(self, "short_conv", None)
        if short_conv is not None:
            conv = short_conv.empty_history(batch_size, device, dtype)
        return RecurrentDecodeState(ssm, conv)

    def decode_step(self, x_t: torch.Tensor, state: RecurrentDecodeState) -> torch.Tensor:
        rec = self.recurrence(x_t[:, None], state)  # T = 1
        g = rec.log_decay
        g_t = g if g is None or g.dim() == 1 else g[:, 0]  # (H,), (B, H) or (B, H, K)
        o_t, ssm = recurrent_step(state.ssm, rec.q[:, 0], rec.k[:, 0], rec.v[:, 0], g_t, rec.scale)
        state.ssm.copy_(ssm)  # in place: the state keeps its address (CUDA graphs)
        return self.finish(o_t[:, None], rec)[:, 0]  # (B, D)

    def _parallel(self, x: torch.Tensor, state: RecurrentDecodeState | None) -> torch.Tensor:
        rec = self.recurrence(x, state)
        backend = self.select_backend(decay_kind(rec.log_decay, rec.q), x)
        h0 = None if state is None else state.ssm
        o, final = self.run_recurrence(rec, backend, h0, want_state=state is not None)
        if state is not None:
            state.ssm.copy_(final)
        return self.finish(o, rec)

    # --- backends --------------------------------------------------------------------------
    def valid_backends(self) -> tuple[str, ...]:
        return BACKENDS + tuple(self.extra_backends)

    def _check_requested_backend(self) -> None:
        """Fail early (SkipCell) when a forced fast path cannot exist on this machine."""
        requested = self.requested_backend
        if requested not in self.valid_backends():
            raise UsageError(f"unknown backend {requested!r}; valid: {self.valid_backends()}")
        if requested in self.extra_backends:
            problem = self.extra_backends[requested](torch.device("cuda"))
        elif requested == "fla":
            problem = None if torch.cuda.is_available() else "fla needs a CUDA device"
            problem = problem or (None if load_fla()[0] is not None else load_fla()[1])
        else:
            problem = None
        if problem:
            raise SkipCell(f"backend {requested!r} unavailable: {problem}")

    def select_backend(self, kind: str, x: torch.Tensor) -> str:
        """Pick the backend for this call and record it (and why) on the mixer."""
        requested = self.requested_backend
        skipped = []
        for name, problem_of in self.extra_backends.items():
            if requested not in ("auto", name):
                continue
            problem = problem_of(x.device)
            if problem is None:
                why = "requested" if requested == name else f"the model's fast path on {x.device}"
                self.backend, self.backend_reason = name, f"{name}: {why}"
                return name
            if requested == name:
                raise SkipCell(f"backend {name!r} unavailable: {problem}")
            skipped.append(f"{name}: {problem}")
        grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        _, K, V = self.state_shape()
        name, reason = resolve_backend(requested, decay_kind=kind, device=x.device, needs_grad=grad,
                                       head_dims=(K, V), length=x.shape[1])
        self.backend, self.backend_reason = name, "; ".join(skipped + [reason])
        return name

    # --- initialization --------------------------------------------------------------------
    def init_projections(self, *layers: nn.Linear) -> None:
        for layer in layers:
            nn.init.normal_(layer.weight, std=INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def init_residual_output(self, layer: nn.Linear) -> None:
        """Output projection into the residual stream: GPT-2 style depth scaling."""
        nn.init.normal_(layer.weight, std=INIT_STD / math.sqrt(2 * self.cfg.n_layers))
