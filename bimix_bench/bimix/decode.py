"""Constant-memory step-by-step decoding of the BiMix mixer core.

State per layer: the DCT branch's linear-attention state S (B, H, 2 K_d, P) with
S <- rho S + k_t v_t^T and y = q_t^T S (q_t carries the band gates), a ring buffer of the last W
values for the Chebyshev window, the short convolution's input history, and the position
(for the DCT phases), held on the device. Memory and time per token do not grow with the
sequence, and a step updates the state in place with the same shapes every time: no position
passes through the host, so a CUDA graph can capture the step.

What depends on the weights or the sizes alone is computed when the state is made, not in
every step: the Chebyshev band kernels, the DCT decay, the DCT amplitudes laid out per band,
and the DCT features of every position up to max_len (one table, shared by the layers), so a
step reads its position's features with one gather. Every launch saved is one per layer and
token (docs/perf.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bimix_bench.bimix.kernels.basis import (
    band_one_hot,
    dct_features_from_zero,
    dct_query_key_features,
)
from bimix_bench.bimix.kernels.dispatch import SpectralBranches
from bimix_bench.bimix.kernels.reference import compute_dtype
from bimix_bench.ops.constants import cached_constant


@dataclass
class BiMixDecodeState:
    conv_history: torch.Tensor  # (B, conv_width - 1, D) inputs of the short convolution
    dct_state: torch.Tensor | None  # (B, H, 2 K_d, P), fp32 (fp64 for fp64)
    ring: torch.Tensor | None  # (B, W, H, P) values v; position s lives in slot s % W
    position: torch.Tensor  # (1,) int64 on the device: tokens consumed so far
    # Functions of the weights alone, computed once per decode state instead of in every step
    # (the Chebyshev window's band kernels take most of a step's operations otherwise).
    cheb_kernels: torch.Tensor | None = None  # (H, NB, W) in the compute dtype
    log_rho: torch.Tensor | None = None  # (H,) the DCT branch's per-head log decay
    band_amplitude: torch.Tensor | None = None  # (H, NB, 2 K_d): a_{h,k} [band(k) = n], cos|sin
    dct_table: torch.Tensor | None = None  # (max_len, 2, 2 K_d): q's and k's features per position
    lags: torch.Tensor | None = None  # (W,) int64: 0 .. W - 1


@cached_constant(maxsize=8)
def dct_feature_table(length: int, n_freq: int, horizon: int, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """(length, 2, 2 n_freq): row t holds the DCT branch's (q, k) features of position t, the
    same values as the parallel forward's (dct_features_from_zero), built without filling that
    cache with a second copy of max_len rows."""
    positions = torch.arange(length, device=device)
    return torch.stack(dct_query_key_features(positions, n_freq, horizon, dtype), dim=1)


@cached_constant()
def _lags(window: int, device: torch.device) -> torch.Tensor:
    return torch.arange(window, device=device)


def band_amplitudes(amplitude: torch.Tensor, n_bands: int) -> torch.Tensor:
    """amplitude (H, K) -> (H, NB, 2K) in its dtype: entry (h, n, j) = a_{h, j mod K} where
    frequency j mod K lies in band n, else 0. Gates (..., H, NB) times it give g_{band(k)} a_k
    for the cos and the sin halves alike: each sum has one non-zero term, so the value is the
    product itself (the parallel paths index the gates by band instead: chunked.py)."""
    K = amplitude.shape[1]
    one_hot = band_one_hot(K, n_bands, amplitude.dtype, amplitude.device)  # (K, NB)
    return (one_hot.t()[None] * amplitude[:, None, :]).repeat(1, 1, 2)


def gated_dct_weights(gates: torch.Tensor, per_band: torch.Tensor) -> torch.Tensor:
    """gates (..., H, NB), per_band (H, NB, 2K) from band_amplitudes -> (..., H, 2K) in
    per_band's dtype: g_{band(k)} a_k, computed without autocast (the gates may be bf16)."""
    with torch.autocast(gates.device.type, enabled=False):
        return torch.einsum("...hn,hnj->...hj", gates.to(per_band.dtype), per_band)


def empty_state(
    spec: SpectralBranches,
    conv_history: torch.Tensor,
    batch: int,
    head_dim: int,
    dtype: torch.dtype,
    max_len: int,
) -> BiMixDecodeState:
    """A state for up to max_len tokens (prefix and decoded ones together)."""
    device = conv_history.device
    cd = compute_dtype(dtype)
    position = torch.zeros(1, device=device, dtype=torch.long)
    state = BiMixDecodeState(conv_history, None, None, position)
    with torch.no_grad():
        if "dct" in spec.branches:
            H, K = spec.dct_amplitude.shape
            state.dct_state = torch.zeros(batch, H, 2 * K, head_dim, device=device, dtype=cd)
            state.log_rho = spec.log_rho.detach().clone()
            state.band_amplitude = band_amplitudes(spec.dct_amplitude.detach().to(cd), spec.n_bands)
            state.dct_table = dct_feature_table(max_len, K, spec.horizon, cd, device)
        if "cheb" in spec.branches:
            H = spec.cheb_amplitude.shape[0]
            state.ring = torch.zeros(batch, spec.window, H, head_dim, device=device, dtype=cd)
            state.cheb_kernels = spec.cheb_kernels().to(cd)
            state.lags = _lags(spec.window, device)
    return state


def state_after_prefix(
    spec: SpectralBranches, conv_history: torch.Tensor, v: torch.Tensor, max_len: int
) -> BiMixDecodeState:
    """The decode state after consuming v (B, T, H, P), computed in one parallel pass."""
    B, T, H, P = v.shape
    state = empty_state(spec, conv_history, B, P, v.dtype, max(max_len, T))
    cd = compute_dtype(v.dtype)
    v32 = v.to(cd)
    positions = torch.arange(T, device=v.device)
    if state.dct_state is not None:
        _, k = dct_features_from_zero(T, spec.dct_amplitude.shape[1], spec.horizon, cd, v.device)
        age = (T - 1 - positions).to(cd)  # decays rho^(T-1-s) to the last position
        weight = torch.exp(spec.log_rho.to(cd)[:, None] * age[None, :])  # (H, T)
        state.dct_state.copy_(torch.einsum("hs,sk,bshp->bhkp", weight, k, v32))
    if state.ring is not None:
        keep = positions[max(0, T - spec.window):]
        state.ring[:, keep % spec.window] = v32[:, keep]
    state.position.fill_(T)
    return state


def decode_core(
    spec: SpectralBranches, gates: torch.Tensor, v_t: torch.Tensor, state: BiMixDecodeState
) -> torch.Tensor:
    """One token of sum_{beta,b} g_{beta,b} u^{beta,b}: gates (B|1, H, R, NB), v_t (B, H, P)
    -> (B, H, P); advances `state`."""
    from bimix_bench.ops.linear_recurrence import recurrent_step

    B, H, P = v_t.shape
    cd = compute_dtype(v_t.dtype)
    v32 = v_t.to(cd)
    out = None  # (B, H, P): the sum of the branches' outputs
    pos = state.position  # (1,), on the device: no host copy, no wait for the GPU
    if state.dct_state is not None:
        g = spec.branch_gates(gates, "dct")  # (B|1, H, NB)
        features = state.dct_table.index_select(0, pos)  # (1, 2, 2K): q's and k's rows
        weight = gated_dct_weights(g, state.band_amplitude)  # (B|1, H, 2K): g_{band(k)} a_k
        q_t = (weight * features[:, 0, None]).expand(B, H, -1)  # (B, H, 2K)
        k_t = features[:, 1, None].expand(B, H, -1)
        y, dct_state = recurrent_step(state.dct_state, q_t, k_t, v32, state.log_rho, 1.0)
        state.dct_state.copy_(dct_state)
        out = y
    if state.ring is not None:
        W = spec.window
        slots = (pos - state.lags) % W  # lag tau -> slot; slots[0] = pos % W, this token's
        state.ring.index_copy_(1, slots[:1], v32[:, None])
        window = state.ring[:, slots]  # (B, W, H, P), zeros where no token was ever written
        kernels = state.cheb_kernels  # (H, NB, W)
        g = spec.branch_gates(gates, "cheb").to(cd)  # (B|1, H, NB)
        effective = torch.einsum("bhn,hnw->bhw", g, kernels)
        cheb = torch.einsum("bhw,bwhp->bhp", effective, window)
        out = cheb if out is None else out + cheb
    state.position.add_(1)
    return out.to(v_t.dtype)
