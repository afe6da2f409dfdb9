"""Rotary position embeddings (RoPE), rotate-half layout.

Layout: a head vector x of size Dh is split into halves x1 = x[:Dh/2], x2 = x[Dh/2:], and
pair (x1[i], x2[i]) is rotated by the angle pos * base^(-2i/Dh):
    out1 = x1 * cos - x2 * sin
    out2 = x2 * cos + x1 * sin
(the GPT-NeoX / LLaMA "rotate-half" pairing, not the interleaved (2i, 2i+1) one). Because a
rotation by pos_q on q and by pos_k on k leaves <q, k> depending on pos_q - pos_k only, the
attention scores see relative positions.

The angle tables are shared by every layer and every model that uses the same head size: they
are computed once per (length bucket, head_dim, base, device, dtype) and sliced afterwards, so a
decode step costs a slice, not a fresh trigonometry kernel per layer.
"""

from __future__ import annotations

import torch

from bimix_bench.ops.constants import cached_constant

DEFAULT_ROPE_BASE = 10000.0
_MIN_TABLE_LENGTH = 256


def rope_inverse_frequencies(head_dim: int, base: float, device: torch.device) -> torch.Tensor:
    """(Dh/2,) float64: base^(-2i/Dh) for i = 0 .. Dh/2 - 1."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    return base ** (-exponents)


def _table_dtype(dtype: torch.dtype) -> torch.dtype:
    # Rotations are applied in at least float32 whatever the activation dtype (bf16 angles
    # would lose the position information at a few hundred tokens).
    return torch.promote_types(dtype, torch.float32)


@cached_constant()
def _rope_table(
    length: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: (length, Dh/2) in `dtype`, for positions 0 .. length - 1."""
    # Angles in float64 so that large positions keep their exact phase (MPS has no float64).
    angle_dtype = torch.float32 if device.type == "mps" else torch.float64
    positions = torch.arange(length, dtype=angle_dtype, device=device)  # (length,)
    inv_freq = rope_inverse_frequencies(head_dim, base, device).to(angle_dtype)  # (Dh/2,)
    angles = positions[:, None] * inv_freq[None, :]  # (length, Dh/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_cos_sin(
    start: int,
    length: int,
    head_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    base: float = DEFAULT_ROPE_BASE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for absolute positions start .. start + length - 1: each (length, Dh/2).

    `dtype` is the activation dtype; the tables come back in float32 (float64 for float64).
    """
    end = start + length
    bucket = max(_MIN_TABLE_LENGTH, 1 << max(0, end - 1).bit_length())  # power of two >= end
    cos, sin = _rope_table(bucket, head_dim, float(base), torch.device(device), _table_dtype(dtype))
    return cos[start:end], sin[start:end]


def rope_at(
    position: torch.Tensor,
    max_len: int,
    head_dim: int,
    dtype: torch.dtype,
    base: float = DEFAULT_ROPE_BASE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (1, Dh/2) for the position held on the device, position (1,) int64 < max_len:
    read from the table by index, so no position value passes through the host."""
    bucket = max(_MIN_TABLE_LENGTH, 1 << max(0, max_len - 1).bit_length())
    cos, sin = _rope_table(bucket, head_dim, float(base), position.device, _table_dtype(dtype))
    return cos.index_select(0, position), sin.index_select(0, position)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x: (..., T, Dh) by cos, sin: (T, Dh/2). Computed in the tables' precision,
    returned in x's dtype."""
    half = x.shape[-1] // 2
    xf = x.to(cos.dtype)
    x1, x2 = xf[..., :half], xf[..., half:]  # (..., T, Dh/2) each
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (..., T, Dh)
    return rotated.to(x.dtype)
