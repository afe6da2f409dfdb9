"""Index-space building blocks shared by every BiMix path: band partitions, DCT phases computed
from exact integers, and the Chebyshev basis over the window.

Angles are never formed as float(omega) * float(t): at t ~ 3e4 a float32 product loses ~3e-3 rad.
Instead the phase is reduced as an integer first (k * t mod the period), so the only rounding
is one multiply by pi / (2 N) on a number below 4 N.

What depends only on sizes (band partitions, the Chebyshev basis, the DCT features of positions
0..T-1) is built once per size, dtype and device (ops/constants.py), not in every forward.
"""

from __future__ import annotations

import math

import torch

from bimix_bench.ops.constants import cached_constant


@cached_constant()
def band_index(n_index: int, n_bands: int, device: torch.device | None = None) -> torch.Tensor:
    """Band of each index k in [0, n_index): contiguous bands of (nearly) equal size. (n_index,)"""
    if not 1 <= n_bands <= n_index:
        raise ValueError(f"need 1 <= n_bands ({n_bands}) <= n_index ({n_index})")
    return torch.arange(n_index, device=device) * n_bands // n_index


@cached_constant()
def band_one_hot(n_index: int, n_bands: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """(n_index, n_bands) 0/1 matrix; summing per-index terms into bands is a matmul with it."""
    # A comparison, not F.one_hot: one_hot reads the largest index back to the host to check
    # it, a wait for the GPU in every decode step (and a failure under CUDA graph capture).
    bands = torch.arange(n_bands, device=device)
    return (band_index(n_index, n_bands, device)[:, None] == bands[None, :]).to(dtype)


def _angle_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def dct_phases(
    positions: torch.Tensor, n_freq: int, horizon: int, half_shift: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Angles omega_k * t (+ omega_k / 2 when half_shift), omega_k = pi k / horizon, reduced
    mod 2 pi exactly. positions: (T,) int64 -> (T, n_freq) float (fp64 for fp64, else fp32).

    omega_k t + omega_k / 2 = pi (2 k t + k) / (2 horizon); the integer 2kt + k is reduced mod
    4 horizon (one full turn) before scaling.
    """
    m, k = _twice_k_t(positions, n_freq)
    return _angles(m + k if half_shift else m, horizon, dtype)


def _twice_k_t(positions: torch.Tensor, n_freq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integers 2 k t (T, n_freq) and k (1, n_freq), int64: the phases' numerators."""
    k = torch.arange(n_freq, device=positions.device, dtype=torch.int64)[None, :]
    return 2 * positions.to(torch.int64)[:, None] * k, k


def _angles(m: torch.Tensor, horizon: int, dtype: torch.dtype) -> torch.Tensor:
    """pi m / (2 horizon) with the integer m reduced mod 4 horizon (one turn) first."""
    return torch.remainder(m, 4 * horizon).to(_angle_dtype(dtype)) * (math.pi / (2 * horizon))


def dct_query_key_features(
    positions: torch.Tensor, n_freq: int, horizon: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-weighted linear-attention features of the DCT branch.

    q_t = [cos(w t + w/2), sin(w t + w/2)], k_s = [cos(w s), sin(w s)] (per frequency), so
    q_t . k_s = sum_k cos(w_k (t - s) + w_k / 2), the branch kernel at lag t - s.
    Returns (q, k), each (T, 2 * n_freq) in `dtype`. The same angles as dct_phases, with the
    integer products shared and q's and k's phases stacked, so that one cos and one sin serve
    both (a decode step computes these for one position: fewer, not smaller, operations).
    """
    m, k = _twice_k_t(positions, n_freq)  # (T, K), (1, K)
    phase = _angles(torch.stack([m + k, m]), horizon, dtype)  # (2, T, K): q's, k's
    features = torch.cat([phase.cos(), phase.sin()], dim=-1).to(dtype)  # (2, T, 2K)
    return features[0], features[1]


@cached_constant(maxsize=8)
def dct_features_from_zero(length: int, n_freq: int, horizon: int, dtype: torch.dtype,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """dct_query_key_features of positions 0 .. length - 1: (q, k), each (length, 2 * n_freq)."""
    return dct_query_key_features(torch.arange(length, device=device), n_freq, horizon, dtype)


@cached_constant()
def chebyshev_basis(n_poly: int, window: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """T_k(1 - 2 tau / (W - 1)) for k < n_poly, tau < W: (n_poly, W). The current token (tau = 0)
    sits at x = 1, where the polynomials resolve finest. Three-term recurrence, stable on [-1, 1]."""
    if window < 2:
        raise ValueError(f"the Chebyshev window needs at least 2 lags, got {window}")
    tau = torch.arange(window, device=device, dtype=torch.float64)
    x = 1.0 - 2.0 * tau / (window - 1)
    rows = [torch.ones_like(x), x]
    for _ in range(2, n_poly):
        rows.append(2.0 * x * rows[-1] - rows[-2])
    return torch.stack(rows[:n_poly]).to(dtype)
