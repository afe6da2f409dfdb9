"""Constant-memory step-by-step decoding of the BiMix mixer core.

State per layer: the DCT branch's linear-attention state S (B, H, 2 K_d, P) with
S <- rho S + k_t v_t^T and y = q_t^T S (q_t carries the band gates), a ring buffer of the last W
values for the Chebyshev window, the short convolution's input history, and the position
(for the DCT phases), held on the device. Memory and time per token do not grow with the
sequence, and a step updates the state in place with the same shapes every time: no position
passes through the host, so a CUDA graph can capture the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bimix_bench.bimix.kernels.basis import dct_features_from_zero, dct_query_key_features
from bimix_bench.bimix.kernels.chunked import gated_dct_queries_keys
from bimix_bench.bimix.kernels.dispatch import SpectralBranches
from bimix_bench.bimix.kernels.reference import compute_dtype


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


def empty_state(
    spec: SpectralBranches,
    conv_history: torch.Tensor,
    batch: int,
    head_dim: int,
    dtype: torch.dtype,
) -> BiMixDecodeState:
    device = conv_history.device
    cd = compute_dtype(dtype)
    dct_state = ring = None
    if "dct" in spec.branches:
        H, K = spec.dct_amplitude.shape
        dct_state = torch.zeros(batch, H, 2 * K, head_dim, device=device, dtype=cd)
    if "cheb" in spec.branches:
        H = spec.cheb_amplitude.shape[0]
        ring = torch.zeros(batch, spec.window, H, head_dim, device=device, dtype=cd)
    position = torch.zeros(1, device=device, dtype=torch.long)
    with torch.no_grad():
        kernels = spec.cheb_kernels().to(cd) if ring is not None else None
        log_rho = spec.log_rho.detach().clone() if dct_state is not None else None
    return BiMixDecodeState(conv_history, dct_state, ring, position, kernels, log_rho)


def state_after_prefix(
    spec: SpectralBranches, conv_history: torch.Tensor, v: torch.Tensor
) -> BiMixDecodeState:
    """The decode state after consuming v (B, T, H, P), computed in one parallel pass."""
    B, T, H, P = v.shape
    state = empty_state(spec, conv_history, B, P, v.dtype)
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
        g = spec.branch_gates(gates, "dct")[:, None]  # (B|1, 1, H, NB)
        features = dct_query_key_features(pos, spec.dct_amplitude.shape[1], spec.horizon, cd)
        q, k = gated_dct_queries_keys(features, g, spec.dct_amplitude, cd)
        q_t = q[:, 0].expand(B, H, q.shape[-1])
        k_t = k.expand(B, H, k.shape[-1])
        y, dct_state = recurrent_step(state.dct_state, q_t, k_t, v32, state.log_rho, 1.0)
        state.dct_state.copy_(dct_state)
        out = y
    if state.ring is not None:
        W = spec.window
        state.ring.index_copy_(1, pos % W, v32[:, None])
        slots = (pos - torch.arange(W, device=v_t.device)) % W  # lag tau -> slot
        window = state.ring[:, slots]  # (B, W, H, P), zeros where no token was ever written
        kernels = state.cheb_kernels  # (H, NB, W)
        g = spec.branch_gates(gates, "cheb").to(cd)  # (B|1, H, NB)
        effective = torch.einsum("bhn,hnw->bhw", g, kernels)
        cheb = torch.einsum("bhw,bwhp->bhp", effective, window)
        out = cheb if out is None else out + cheb
    state.position.add_(1)
    return out.to(v_t.dtype)
