"""Chunked plain-torch paths (CPU and GPU): the forms the fast kernels compute.

DCT branch as gated linear attention with a fixed per-head decay. Because
  cos(w (t - s) + w/2) = cos(w t + w/2) cos(w s) + sin(w t + w/2) sin(w s),
the branch output  sum_s sum_k g_{t,band(k)} a_k rho^(t-s) cos(w_k (t - s) + w_k/2) v_s  equals
  o_t = q_t^T S_t,  S_t = rho S_{t-1} + k_t v_t^T,
with q_t = [g a cos(w t + w/2), g a sin(w t + w/2)]_k and k_s = [cos w s, sin w s]_k: the
per-token band gates fold into q for free. The recurrence itself is the shared op
bimix_bench.ops.linear_recurrence (its "chunked" torch form, "fla" on CUDA, "recurrent").

Chebyshev branch as block-Toeplitz products: with chunk C >= W every output chunk only sees its
own chunk and the previous one, u_chunk = T0 v_chunk + T1 v_prev, done per band as one
(C x 2C) matrix product over [v_prev; v_chunk]; the per-token gates weight the bands after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bimix_bench.bimix.kernels.basis import band_index, dct_features_from_zero
from bimix_bench.ops.constants import cached_constant


def gated_dct_queries_keys(
    features: tuple[torch.Tensor, torch.Tensor],
    gates: torch.Tensor,
    amplitude: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """features (q_basis, k_basis) of T positions, each (T, 2 K_d) (basis.py), gates
    (B|1, T|1, H, NB), amplitude (H, K_d) -> q (B|1, T, H, 2 K_d) carrying g_{t,band(k)} a_{h,k},
    k (T, 2 K_d)."""
    H, K = amplitude.shape
    q_basis, k_basis = features
    gate_per_freq = gates[..., band_index(K, gates.shape[-1], gates.device)]  # (B|1, T|1, H, K)
    weight = (gate_per_freq * amplitude).repeat(1, 1, 1, 2)  # cos and sin halves share it
    return weight.to(dtype) * q_basis[None, :, None, :], k_basis


def dct_branch_linear_attention(
    v: torch.Tensor,
    gates: torch.Tensor,
    amplitude: torch.Tensor,
    log_rho: torch.Tensor,
    horizon: int,
    backend: str = "chunked",
    chunk_size: int = 64,
) -> torch.Tensor:
    """v (B, T, H, P), gates (B|1, T|1, H, NB), amplitude (H, K_d), log_rho (H,) -> (B, T, H, P).

    On the "fla" backend log_rho's gradient, which fla's kernel does not return for a fixed
    decay, is supplied by the shared op around the kernel (ops/fla_linear_recurrence.py)."""
    from bimix_bench.ops.linear_recurrence import gated_linear_attention

    B, T, H, _ = v.shape
    features = dct_features_from_zero(T, amplitude.shape[1], horizon, v.dtype, v.device)
    q, k = gated_dct_queries_keys(features, gates, amplitude, v.dtype)
    k = k[None, :, None, :]  # (1, T, 1, 2K)
    q = q.expand(B, T, H, q.shape[-1])
    k = k.expand(B, T, H, k.shape[-1])
    out, _ = gated_linear_attention(
        q, k, v, log_rho, scale=1.0, backend=backend, chunk_size=chunk_size
    )
    return out


def block_toeplitz_band_matrices(kernels: torch.Tensor, chunk: int) -> torch.Tensor:
    """kernels (H, NB, W), W <= chunk -> (H, NB, C, 2C): row i of a chunk against the 2C
    positions [previous chunk; this chunk]; entry = kernel at lag i + C - column (0 if outside
    [0, W))."""
    W = kernels.shape[-1]
    if W > chunk:
        raise ValueError(f"chunk {chunk} must be >= window {W}")
    lag, valid = _toeplitz_lags(chunk, W, kernels.device)
    return kernels[..., lag] * valid


@cached_constant()
def _toeplitz_lags(chunk: int, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 2C) lag of each [previous chunk; this chunk] column from each row, clamped into the
    window, and whether it lies in [0, window)."""
    rows = torch.arange(chunk, device=device)[:, None]
    cols = torch.arange(2 * chunk, device=device)[None, :]
    lag = rows + chunk - cols
    return lag.clamp(0, window - 1), (lag >= 0) & (lag < window)


def cheb_branch_block_toeplitz(
    v: torch.Tensor, kernels: torch.Tensor, gates: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """v (B, T, H, P), kernels (H, NB, W), gates (B|1, T|1, H, NB) -> (B, T, H, P).

    chunk defaults to W (the smallest valid C, the least wasted work)."""
    B, T, H, P = v.shape
    NB, W = kernels.shape[1:]
    C = chunk or W
    n = -(-T // C)
    pad = n * C - T
    v_chunks = F.pad(v, (0, 0, 0, 0, 0, pad)).view(B, n, C, H, P)
    v_prev = F.pad(v_chunks, (0, 0, 0, 0, 0, 0, 1, 0))[:, :n]  # chunk c-1 (zeros before 0)
    v_pair = torch.cat([v_prev, v_chunks], dim=2)  # (B, n, 2C, H, P)
    if gates.shape[1] != 1:
        gates = F.pad(gates, (0, 0, 0, 0, 0, pad))
    gates = gates.reshape(gates.shape[0], -1, 1 if gates.shape[1] == 1 else C, H, NB)
    matrices = block_toeplitz_band_matrices(kernels, C).to(v.dtype)  # (H, NB, C, 2C)
    per_band = torch.einsum("hkij,bnjhp->bnihkp", matrices, v_pair)  # (B, n, C, H, NB, P)
    out = torch.einsum("bnihk,bnihkp->bnihp", gates.to(v.dtype), per_band)  # gate-weighted sum
    return out.reshape(B, n * C, H, P)[:, :T]
