"""Recurrences over several past states ("multistate"): a gated linear-attention state that
reads several earlier states at the offsets of a pattern, after "Trading Complexity for
Expressivity Through Structured Generalized Linear Token Mixing" (Fagnou, Caillon, Delattre,
Allauzen; ICML 2026, arXiv 2605.31367). Only the abstract is public; the parameterisation below
is this project's (docs/multistate.md says what was chosen and why).

    q, k, v = conv4(W_qkv x) split       (B, T, H, K), K = D / (2H); (B, T, H, V), V = D / H
    gamma_t = exp(logsigmoid(w_g x_t + b_g) / tau)           (B, T, H) in (0, 1): total weight
    pi_t    = softmax_j(W_p x_t)                             (B, T, H, J): how it is spread
    beta    = gamma_t pi_t     (beta >= 0, sum_j beta_{t,j} = gamma_t < 1: stable)
    S_t     = sum_j beta_{t,j} S_{t - o_j} + k_t v_t^T,      o_t = K^-1/2 q_t^T S_t
    y       = W_o (RMSNorm_head(o) * silu(W_r x))

Offsets: pattern "pow2" (1, 2, 4, ...) or "sqrt" (1, 2, 5, 10, ...: j^2 + 1), every offset
below the training context (so J is about log2 T or sqrt T). Backends: "parallel" (the exact
structured-operator form at once, cubic in T), "chunked" (the same exactly, chunk by chunk,
linear in T), "reference" (the recurrence token by token); "auto" = whichever exact form a
work estimate, weighted by a per-device measurement, says is cheaper at each forward's context
(the chunked form on devices where the two were not timed; ops/multistate.py gives each path's
cost). Decoding keeps the states of the last o_max positions in a ring.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.errors import UsageError
from bimix_bench.models.mixer import MixerConfig, TokenMixer, register_model
from bimix_bench.ops.group_rmsnorm import GroupRMSNorm
from bimix_bench.ops.multistate import (
    PATTERNS,
    choose_exact_form,
    multistate_chunked,
    multistate_parallel,
    multistate_recurrent,
    multistate_step,
    pattern_offsets,
    ring_size,
)
from bimix_bench.ops.recurrent_mixer import INIT_STD, half_width_keys
from bimix_bench.ops.short_conv import ShortCausalConv

FORMS = {"chunked": multistate_chunked, "parallel": multistate_parallel,
         "reference": multistate_recurrent}
BACKENDS = ("auto", *FORMS)
_LABELS = {"chunked": "torch-chunked", "parallel": "torch-structured-operator",
           "reference": "torch-reference"}


@dataclass
class MultistateDecodeState:
    ring: torch.Tensor  # (B, R, H, K, V): S_s at slot s mod R, R = the largest offset
    conv: torch.Tensor  # (B, W - 1, C): the short convolution's input history
    position: torch.Tensor  # (1,) int64 on the device: tokens consumed so far


@register_model(
    "multistate",
    "linear attention over several past states at pow2 / sqrt offsets (structured mixing)",
    options={"backend": "auto", "pattern": "pow2", "gate_temperature": 8.0, "conv_width": 4,
             "chunk_size": 64},
)
class MultistateAttention(TokenMixer):
    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        D = cfg.d_model
        H, self.key_dim, self.value_dim = half_width_keys(cfg)
        self.n_heads = H
        opts = cfg.options
        choice, pattern = str(opts.get("backend", "auto")), str(opts.get("pattern", "pow2"))
        if choice not in BACKENDS:
            raise UsageError(f"models.multistate.backend={choice!r}; valid: {', '.join(BACKENDS)}")
        if pattern not in PATTERNS:
            raise UsageError(f"models.multistate.pattern={pattern!r}; valid: {', '.join(PATTERNS)}")
        self.chunk_size = int(opts.get("chunk_size", 64))
        self.requested_backend = choice
        if choice == "auto":
            self.backend = "unresolved"
            self.backend_reason = "chosen at each forward, from the device and context"
        else:
            self.backend, self.backend_reason = _LABELS[choice], f"backend={choice} requested"
        self.offsets = pattern_offsets(pattern, cfg.max_seq_len)
        self.pattern = pattern
        self.temperature = float(opts.get("gate_temperature", 8.0))
        J = len(self.offsets)
        self.qkv = nn.Linear(D, D // 2 + D // 2 + D, bias=False)
        self.short_conv = ShortCausalConv(2 * D, int(opts.get("conv_width", 4)))
        self.mixing = nn.Linear(D, H + H * J, bias=True)  # gamma logits (H), spread logits (H J)
        self.gate = nn.Linear(D, D, bias=False)
        self.norm = GroupRMSNorm(D, self.value_dim, norm_before_gate=True)
        self.out = nn.Linear(D, D, bias=False)
        for layer in (self.qkv, self.mixing, self.gate):
            nn.init.normal_(layer.weight, std=INIT_STD)
        nn.init.zeros_(self.mixing.bias)
        nn.init.normal_(self.out.weight, std=INIT_STD / (2 * cfg.n_layers) ** 0.5)

    @property
    def decode_backend(self) -> str:  # type: ignore[override]
        return f"torch-step (ring of {ring_size(self.offsets)} states)"

    def _inputs(self, x: torch.Tensor, history: torch.Tensor | None):
        """x (B, T, D) -> q, k (B, T, H, K), v (B, T, H, V), beta (B, T, H, J), output gate
        (B, T, D) and the convolution's new history."""
        D, H, J = self.cfg.d_model, self.n_heads, len(self.offsets)
        qkv, history = self.short_conv(self.qkv(x), history)
        q, k, v = qkv.split([D // 2, D // 2, D], dim=-1)
        acc = torch.promote_types(x.dtype, torch.float32)
        mix = self.mixing(x).to(acc)
        gamma = torch.exp(F.logsigmoid(mix[..., :H]) / self.temperature)  # (B, T, H) in (0, 1)
        spread = mix[..., H:].unflatten(-1, (H, J)).softmax(-1)  # (B, T, H, J)
        beta = gamma[..., None] * spread
        heads = lambda t, w: t.unflatten(-1, (H, w))  # noqa: E731  (B, T, H*w) -> (B, T, H, w)
        return (heads(q, self.key_dim), heads(k, self.key_dim), heads(v, self.value_dim), beta,
                self.gate(x), history)

    def _finish(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(o.flatten(-2), gate))  # (B, T, H, V) -> (B, T, D)

    def _form(self, device: torch.device, T: int):
        """The path to run for a forward at context T, recording its label and reason."""
        form = self.requested_backend
        if form == "auto":
            form, self.backend_reason = choose_exact_form(
                device.type, T, self.key_dim, self.value_dim, self.offsets, self.chunk_size)
        self.backend = _LABELS[form]
        if form == "chunked":
            return functools.partial(multistate_chunked, chunk=self.chunk_size)
        return FORMS[form]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v, beta, gate, _ = self._inputs(x, None)
        o = self._form(x.device, x.shape[1])(q, k, v, beta, self.offsets, self.key_dim**-0.5)
        return self._finish(o, gate)

    # --- decoding ------------------------------------------------------------------------
    def init_decode_state(self, batch_size: int, max_len: int, device: torch.device,
                          dtype: torch.dtype) -> MultistateDecodeState:
        acc = torch.promote_types(dtype, torch.float32)
        ring = torch.zeros(batch_size, ring_size(self.offsets), self.n_heads, self.key_dim,
                           self.value_dim, device=device, dtype=acc)
        conv = self.short_conv.empty_history(batch_size, device, dtype)
        return MultistateDecodeState(ring, conv, torch.zeros(1, device=device, dtype=torch.long))

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, MultistateDecodeState]:
        """The chunked forward (whatever the backend: it is the form that hands back states),
        whose last R states fill the ring at slots t mod R."""
        q, k, v, beta, gate, history = self._inputs(x, None)
        state = self.init_decode_state(x.shape[0], max_len, x.device, x.dtype)
        R, T = state.ring.shape[1], x.shape[1]
        o, last = multistate_chunked(q, k, v, beta, self.offsets, self.key_dim**-0.5,
                                     self.chunk_size, last_states=R)  # last: (B, min(R, T), H, K, V)
        positions = torch.arange(T - last.shape[1], T, device=x.device)
        state.ring.index_copy_(1, positions % R, last.to(state.ring.dtype))
        state.conv.copy_(history)
        state.position.fill_(T)
        return self._finish(o, gate), state

    def decode_step(self, x_t: torch.Tensor, state: MultistateDecodeState) -> torch.Tensor:
        q, k, v, beta, gate, history = self._inputs(x_t[:, None], state.conv)
        state.conv.copy_(history)
        o_t = multistate_step(state.ring, state.position, q[:, 0], k[:, 0], v[:, 0], beta[:, 0],
                              self.offsets, self.key_dim**-0.5)
        state.position.add_(1)
        return self._finish(o_t[:, None], gate)[:, 0]

