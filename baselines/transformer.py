"""The Transformer baseline: causal multi-head softmax self-attention with rotary positions.

One fused q/k/v projection (no bias), RoPE (rotate-half layout, base 10000 by default, on the
full head dimension; see bimix_bench.ops.rotary), attention, output projection.
Head dim = d_model / n_heads.

Two paths with the same math (option `models.transformer.backend`):
  "auto" / "sdpa"  torch scaled_dot_product_attention: flash / cuDNN / memory-efficient kernels
                   on CUDA (the one that ran is recorded), torch's own choice on CPU
  "reference"      explicit softmax(QK^T / sqrt(Dh) + mask) V in float32
Generation keeps a KV cache preallocated to max_len (bimix_bench.ops.attention.KVCache).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bimix_bench.errors import UsageError
from bimix_bench.models.mixer import MixerConfig, TokenMixer, register_model
from bimix_bench.ops.attention import REFERENCE_BACKEND, KVCache, attention, attention_over_cache
from bimix_bench.ops.rotary import DEFAULT_ROPE_BASE, apply_rope, rope_at, rope_cos_sin

BACKEND_CHOICES = ("auto", "sdpa", "reference")

_CHOICE_REASONS = {
    "auto": "backend=auto: torch SDPA (fused attention kernels, always available)",
    "sdpa": "backend=sdpa requested",
    "reference": "backend=reference requested: explicit float32 softmax attention",
}


def _kernel_note(kernel: str, dtype: torch.dtype, head_dim: int) -> str:
    """Why this SDPA kernel ran, for backend_reason."""
    inputs = f"{str(dtype).removeprefix('torch.')} inputs with head_dim {head_dim}"
    if kernel in ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient"):
        return f"{kernel} is the first of flash, cuDNN, memory-efficient to accept {inputs}"
    if kernel == "sdpa-math":
        return f"no fused CUDA kernel accepted {inputs}: torch math kernel"
    return f"{kernel}: torch picks the kernel itself on this device"


@register_model(
    "transformer",
    "Causal softmax self-attention with RoPE (torch SDPA fast path, KV-cache decoding)",
    options={"backend": "auto", "rope_base": DEFAULT_ROPE_BASE},
)
class CausalSelfAttention(TokenMixer):
    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        choice = str(cfg.options.get("backend", "auto"))
        if choice not in BACKEND_CHOICES:
            raise UsageError(
                f"models.transformer.backend={choice!r}; valid: {', '.join(BACKEND_CHOICES)}"
            )
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise UsageError(
                f"transformer needs d_model ({cfg.d_model}) = n_heads ({cfg.n_heads}) x an even "
                "head dimension (RoPE rotates pairs)"
            )
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.rope_base = float(cfg.options.get("rope_base", DEFAULT_ROPE_BASE))
        self.use_sdpa = choice != "reference"
        self._choice_reason = _CHOICE_REASONS[choice]
        self.backend = "sdpa" if self.use_sdpa else "torch-reference"
        self.backend_reason = self._choice_reason
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qkv.weight, std=0.02)
        # Residual-branch output scaled down with depth, like the backbone's MLP output.
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layers))

    def _project(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, ...]:
        """x: (B, T, D) -> q, k, v: (B, H, T, Dh), q and k rotated by `rotation` (cos, sin:
        (T, Dh/2)), by default that of positions 0 .. T-1."""
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh)
        cos, sin = rotation or rope_cos_sin(0, T, self.head_dim, x.device, x.dtype, self.rope_base)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _merge_heads(self, y: torch.Tensor) -> torch.Tensor:  # (B, H, T, Dh) -> (B, T, D)
        B, _, T, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, self.cfg.d_model))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of q (B, H, Tq, Dh) over k, v (B, H, Tk, Dh); records the kernel."""
        y, kernel = attention(q, k, v, causal=True, use_sdpa=self.use_sdpa)
        self.backend = kernel
        if self.use_sdpa:
            note = _kernel_note(kernel, q.dtype, self.head_dim)
            self.backend_reason = f"{self._choice_reason}; {note}"
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v = self._project(x)
        return self._merge_heads(self._attend(q, k, v))

    # --- step-by-step generation -------------------------------------------------------
    def init_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        return KVCache.empty(batch_size, self.n_heads, max_len, self.head_dim, device, dtype)

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, KVCache]:
        """One parallel pass over the prompt x: (B, T, D) that also fills the cache."""
        q, k, v = self._project(x)
        state = self.init_decode_state(x.shape[0], max_len, x.device, x.dtype)
        state.fill(k, v)
        return self._merge_heads(self._attend(q, k, v)), state

    @property
    def decode_backend(self) -> str:  # type: ignore[override]
        return f"static-kv-cache+{'sdpa' if self.use_sdpa else REFERENCE_BACKEND}"

    def decode_step(self, x_t: torch.Tensor, state: KVCache) -> torch.Tensor:  # (B, D) -> (B, D)
        """One token at the cache's position: shapes and addresses never change (attention
        reads the whole cache under a mask), so a CUDA graph can capture the step."""
        rotation = rope_at(state.length, state.max_len, self.head_dim, x_t.dtype, self.rope_base)
        q, k, v = self._project(x_t[:, None], rotation)  # each (B, H, 1, Dh)
        valid = state.write(k, v)  # (max_len,)
        y = attention_over_cache(q, state.k, state.v, valid, self.use_sdpa)
        state.advance()
        return self._merge_heads(y)[:, 0]
