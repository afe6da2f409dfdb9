"""Softmax attention: a plain-torch reference, the torch SDPA fast path, and a KV cache.

Shapes: q (B, H, Tq, Dh); k, v (B, H, Tk, Dh); output (B, H, Tq, Dh).
Causal masking is aligned to the *end* of the keys: query i sits at absolute position
Tk - Tq + i and sees keys 0 .. Tk - Tq + i. With Tq == Tk this is the usual lower-triangular
mask; with Tq == 1 (a decode step over a cache) the query sees every key.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REFERENCE_BACKEND = "torch-reference"


def causal_mask(t_query: int, t_key: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i may attend to key j (end-aligned, see module doc)."""
    if t_query > t_key:
        raise ValueError(f"causal attention needs Tq <= Tk, got Tq={t_query}, Tk={t_key}")
    rows = torch.arange(t_query, device=device)[:, None] + (t_key - t_query)
    return torch.arange(t_key, device=device)[None, :] <= rows


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) + mask) v, explicitly, in float32 (float64 stays float64)."""
    compute = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = q.to(compute), k.to(compute), v.to(compute)
    scores = qf @ kf.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device)  # (Tq, Tk)
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ vf).to(q.dtype)  # (B, H, Tq, Dh)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    t_query, t_key = q.shape[-2], k.shape[-2]
    if not causal or t_query == 1:  # a single last query sees every key: no mask at all
        return F.scaled_dot_product_attention(q, k, v)
    if t_query == t_key:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # SDPA's is_causal aligns to the top-left corner when Tq != Tk; pass the end-aligned mask.
    mask = causal_mask(t_query, t_key, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _mask_kind(q: torch.Tensor, k: torch.Tensor, causal: bool) -> str:
    if not causal or q.shape[-2] == 1:
        return "none"
    return "causal" if q.shape[-2] == k.shape[-2] else "explicit"


Kernel = tuple[str, SDPBackend]  # (name for the record, torch backend)


class SdpaKernelChooser:
    """Runs SDPA restricted to one kernel at a time, in order of preference, so the kernel
    that ran is known rather than guessed. The first kernel that accepts a kind of input
    (device, dtype, Dh, mask kind, grad) is remembered and used directly afterwards."""

    def __init__(self, preference: tuple[Kernel, ...], fallback: Kernel):
        self.preference = preference
        self.fallback = fallback
        self.choices: dict[tuple, Kernel] = {}

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
    ) -> tuple[torch.Tensor, str]:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        key = (q.device, q.dtype, q.shape[-1], _mask_kind(q, k, causal), needs_grad)
        chosen = self.choices.get(key)
        if chosen is not None:
            try:
                with sdpa_kernel(chosen[1]):
                    return _sdpa(q, k, v, causal), chosen[0]
            except torch.cuda.OutOfMemoryError:  # a real failure, not a refusal
                raise
            except RuntimeError:  # refused for a shape the key does not capture: choose again
                del self.choices[key]
        for kernel in self.preference:
            try:
                # A refused kernel raises before launching anything; its warning is noise here.
                with warnings.catch_warnings(), sdpa_kernel(kernel[1]):
                    warnings.simplefilter("ignore")
                    out = _sdpa(q, k, v, causal)
            except torch.cuda.OutOfMemoryError:  # a real failure, not a refusal
                raise
            except RuntimeError:
                continue
            self.choices[key] = kernel
            return out, kernel[0]
        self.choices[key] = self.fallback
        with sdpa_kernel(self.fallback[1]):
            return _sdpa(q, k, v, causal), self.fallback[0]


# Fused CUDA kernels in order of preference; the math kernel when none accepts the input.
_cuda_chooser = SdpaKernelChooser(
    preference=(
        ("sdpa-flash", SDPBackend.FLASH_ATTENTION),
        ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
        ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION),
    ),
    fallback=("sdpa-math", SDPBackend.MATH),
)


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
) -> tuple[torch.Tensor, str]:
    """The same function through torch.nn.functional.scaled_dot_product_attention.

    Returns (output (B, H, Tq, Dh), name of the kernel that ran). On CUDA the kernels are
    tried in the order flash, cuDNN, memory-efficient (SdpaKernelChooser); on other devices
    torch picks its own kernel and the name is "sdpa-<device>".
    """
    if q.device.type == "cuda":
        return _cuda_chooser(q, k, v, causal)
    return _sdpa(q, k, v, causal), f"sdpa-{q.device.type}"


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, use_sdpa: bool
) -> tuple[torch.Tensor, str]:
    """Dispatch to the SDPA path or the reference; returns (output, kernel name)."""
    if use_sdpa:
        return attention_sdpa(q, k, v, causal)
    return attention_reference(q, k, v, causal), REFERENCE_BACKEND


def attention_over_cache(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, use_sdpa: bool
) -> torch.Tensor:
    """One decode step over a cache of fixed size: q (B, H, 1, Dh) attends to the keys where
    `valid` (max_len,) bool is True; k, v (B, H, max_len, Dh). The shapes never change with
    the position, which is what lets a CUDA graph capture the step once."""
    if use_sdpa:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=valid[None, None, None, :])
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = q.to(compute) @ k.to(compute).transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~valid, float("-inf"))  # (B, H, 1, max_len)
    return (scores.softmax(dim=-1) @ v.to(compute)).to(q.dtype)


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, preallocated to max_len. Every decode
    step writes in place at the position held on the device (`length`), so the cache's tensors
    keep their shapes and addresses from step to step."""

    k: torch.Tensor  # (B, H, max_len, Dh)
    v: torch.Tensor  # (B, H, max_len, Dh)
    length: torch.Tensor  # (1,) int64 on the cache's device: positions filled = next position
    filled: int = 0  # the same count on the host, kept for the size check of eager steps

    @classmethod
    def empty(
        cls,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> "KVCache":
        shape = (batch_size, n_heads, max_len, head_dim)
        return cls(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(1, device=device, dtype=torch.long),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def fill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The prompt's keys and values, k, v: (B, H, T, Dh), at positions 0 .. T-1."""
        T = k.shape[2]
        if T > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {T} were asked for")
        self.k[:, :, :T] = k
        self.v[:, :, :T] = v
        self.length.fill_(T)
        self.filled = T

    def write(self, k_t: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
        """Store one token's k_t, v_t: (B, H, 1, Dh) at position `length`; returns the
        (max_len,) bool mask of the positions a query at that position sees. Call advance()
        after attending."""
        if self.filled >= self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {self.filled + 1} were asked for")
        self.k.index_copy_(2, self.length, k_t.to(self.k.dtype))
        self.v.index_copy_(2, self.length, v_t.to(self.v.dtype))
        return torch.arange(self.max_len, device=self.k.device) <= self.length

    def advance(self) -> None:
        self.length.add_(1)
        self.filled += 1
