"""Reference path: build the band kernels explicitly and convolve causally (ground truth).

Band kernels of one layer, branch beta and band b (lag tau >= 0):
  dct : sum_{k in b} a_{h,k} rho_h^tau cos(w_k tau + w_k / 2),   w_k = pi k / N_d
  cheb: sum_{k in b} b_{h,k} T_k(1 - 2 tau / (W - 1))  for tau < W, else 0
u^{beta,b}_t = sum_tau kernel(tau) v_{t - tau};  y_t = sum_{beta,b} g_{t,beta,b} u^{beta,b}_t.
Everything here runs in fp64 for fp64 inputs and fp32 otherwise, with autocast off.
"""

from __future__ import annotations

import torch

from bimix_bench.bimix.kernels.basis import band_one_hot, chebyshev_basis, dct_phases

DIRECT_MAX_T = 256  # above this the O(T^2) Toeplitz product loses to the FFT


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def dct_band_kernels(
    amplitude: torch.Tensor, log_rho: torch.Tensor, horizon: int, n_bands: int, length: int
) -> torch.Tensor:
    """amplitude (H, K_d), log_rho (H,) -> (H, NB, length) DCT band kernels."""
    H, K = amplitude.shape
    dtype = compute_dtype(amplitude.dtype)
    tau = torch.arange(length, device=amplitude.device)
    with torch.autocast(amplitude.device.type, enabled=False):
        cosines = dct_phases(tau, K, horizon, True, dtype).cos().to(dtype)  # (L, K)
        one_hot = band_one_hot(K, n_bands, dtype, tau.device)
        per_band = torch.einsum("hk,lk,kn->hnl", amplitude.to(dtype), cosines, one_hot)
        decay = torch.exp(log_rho.to(dtype)[:, None] * tau.to(dtype)[None, :])  # (H, L)
        return per_band * decay[:, None, :]


def cheb_band_kernels(amplitude: torch.Tensor, window: int, n_bands: int) -> torch.Tensor:
    """amplitude (H, K_c) -> (H, NB, W) Chebyshev band kernels (amplitude's dtype, no autocast:
    the kernels are tiny and every path wants them exact)."""
    H, K = amplitude.shape
    dtype, device = amplitude.dtype, amplitude.device
    with torch.autocast(device.type, enabled=False):
        basis = chebyshev_basis(K, window, dtype, device)  # (K, W)
        one_hot = band_one_hot(K, n_bands, dtype, device)
        return torch.einsum("hk,kw,kn->hnw", amplitude, basis, one_hot)


def stack_branch_kernels(kernels: list[torch.Tensor], length: int) -> torch.Tensor:
    """Per-branch (H, NB, L_beta) kernels -> (H, n_branch, NB, length), cut or zero-padded."""
    out = []
    for kern in kernels:
        kern = kern[..., :length]
        out.append(torch.nn.functional.pad(kern, (0, length - kern.shape[-1])))
    return torch.stack(out, dim=1)


def causal_conv_direct(v: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Toeplitz product. v (B, T, H, P), kernels (H, R, NB, T) -> u (B, T, H, R, NB, P)."""
    T = v.shape[1]
    lag = torch.arange(T, device=v.device)[:, None] - torch.arange(T, device=v.device)[None, :]
    toeplitz = kernels[..., lag.clamp(min=0)] * (lag >= 0)  # (H, R, NB, T, T)
    return torch.einsum("hrnts,bshp->bthrnp", toeplitz, v)


def causal_conv_fft(v: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """causal_conv_direct via zero-padded FFTs (linear, not circular, convolution); kernels
    (H, R, NB, T)."""
    T = v.shape[1]
    n_fft = 2 * T
    v_f = torch.fft.rfft(v, n=n_fft, dim=1)  # (B, F, H, P)
    k_f = torch.fft.rfft(kernels, n=n_fft, dim=-1)  # (H, R, NB, F)
    u_f = v_f[:, :, :, None, None, :] * k_f.permute(3, 0, 1, 2)[None, ..., None]
    return torch.fft.irfft(u_f, n=n_fft, dim=1)[:, :T]  # (B, T, H, R, NB, P)


def reference_mix(
    v: torch.Tensor, kernels: torch.Tensor, gates: torch.Tensor, method: str = "auto"
) -> torch.Tensor:
    """sum_{beta,b} g_{t,beta,b} (kernel_{beta,b} * v)_t.

    v: (B, T, H, P); kernels: (H, R, NB, L) (lags >= L are zero); gates: (B|1, T|1, H, R, NB)
    -> (B, T, H, P) in v's dtype. method: "direct", "fft" or "auto" (direct up to DIRECT_MAX_T
    tokens).
    """
    T = v.shape[1]
    kernels = torch.nn.functional.pad(kernels[..., :T], (0, max(0, T - kernels.shape[-1])))
    if method == "auto":
        method = "direct" if v.shape[1] <= DIRECT_MAX_T else "fft"
    conv = {"direct": causal_conv_direct, "fft": causal_conv_fft}[method]
    dtype = compute_dtype(v.dtype)
    with torch.autocast(v.device.type, enabled=False):
        u = conv(v.to(dtype), kernels.to(dtype))  # (B, T, H, R, NB, P)
        y = (u * gates.to(dtype)[..., None]).sum(dim=(3, 4))
    return y.to(v.dtype)


def peak_gain(kernels: torch.Tensor) -> torch.Tensor:
    """max over frequency of |sum_tau kernel(tau) e^{-i w tau}| for causal kernels (..., L),
    sampled on a 4x zero-padded FFT grid, in fp64: (...)."""
    L = kernels.shape[-1]
    n_fft = 1 << (4 * L - 1).bit_length()
    return torch.fft.rfft(kernels.to(torch.float64), n=n_fft, dim=-1).abs().amax(dim=-1)
