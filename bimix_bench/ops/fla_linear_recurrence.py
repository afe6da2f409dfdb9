"""fla-core kernels for gated linear attention, behind the semantics of
bimix_bench.ops.linear_recurrence.gated_linear_attention.

fla-core is optional and GPU-only; nothing here imports it at module import time.
Layout is fla's "head_first=False": q, k (B, T, H, K); v (B, T, H, V); state (B, H, K, V).

Kernel per decay kind (all with the scale given explicitly, since fla defaults to K**-0.5):
  none     chunk_linear_attn(normalize=False)  — its default normalize=True divides by q·Σk,
           which is not the plain recurrence
  fixed    chunk_simple_gla(g_gamma=(H,))
  token    chunk_simple_gla(g=(B, T, H))
  channel  chunk_gla(g=(B, T, H, K))
fla returns no gradient for g_gamma; a learnable fixed decay (BiMix's per-head window) gets
its exact gradient from two identity functions around the kernel (see the end of this file).
"""

from __future__ import annotations

import functools
import re
from types import ModuleType

import torch

# The backward of fla's per-token-gated kernels (chunk_simple_gla with g, chunk_gla) is
# refused on Hopper with 3.4.0 <= triton < 3.7.1: those triton versions miscompile it into
# wrong gradients (fla issue 640). Forward-only use is fine.
_UNSAFE_TRITON_RANGE = ((3, 4, 0), (3, 7, 1))
PER_TOKEN_DECAY_KINDS = ("token", "channel")


@functools.lru_cache(maxsize=1)
def load_fla() -> tuple[ModuleType | None, str]:
    """(fla module or None, why not). Cached: a failed import is not retried."""
    try:
        import fla  # noqa: F401
        import fla.ops.gla
        import fla.ops.linear_attn
        import fla.ops.simple_gla
    except Exception as err:  # ImportError, or a kernel module failing at import on this host
        return None, f"fla-core not importable ({type(err).__name__}: {err})"
    return fla, f"fla-core {getattr(fla, '__version__', '?')}"


def _version_tuple(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def per_token_backward_problem(device: torch.device) -> str | None:
    """Why fla's per-token-gated backward cannot be trusted on `device`, or None if it can."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    import triton

    major, _ = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    hopper = major == 9 or "NVIDIA H" in name
    low, high = _UNSAFE_TRITON_RANGE
    if hopper and low <= _version_tuple(triton.__version__) < high:
        return (
            f"fla's per-token-gated backward is wrong/refused on Hopper ({name}) with "
            f"triton {triton.__version__} < 3.7.1 (fla issue 640)"
        )
    return None


def fla_gated_linear_attention(
    q: torch.Tensor,  # (B, T, H, K)
    k: torch.Tensor,  # (B, T, H, K)
    v: torch.Tensor,  # (B, T, H, V)
    log_decay: torch.Tensor | None,  # None, (H,), (B, T, H) or (B, T, H, K)
    decay_kind: str,
    scale: float,
    initial_state: torch.Tensor | None,  # (B, H, K, V)
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (B, T, H, V), (B, H, K, V) fp32
    fla, reason = load_fla()
    if fla is None:
        raise RuntimeError(reason)
    from fla.ops.gla import chunk_gla
    from fla.ops.linear_attn import chunk_linear_attn
    from fla.ops.simple_gla import chunk_simple_gla

    dtype = q.dtype
    k, v = k.to(dtype), v.to(dtype)
    # fla's g_gamma gets no gradient; when it is learnable, supply it around the kernel.
    track_gamma = decay_kind == "fixed" and torch.is_grad_enabled() and log_decay.requires_grad
    T = q.shape[1]
    if track_gamma:
        log_decay_leaf = log_decay
        q, k = FixedDecayGradFromQK.apply(q, k, log_decay)
        if initial_state is not None:
            initial_state = FixedDecayGradFromState.apply(initial_state, log_decay, _centre(T))
        log_decay = log_decay.detach()
    # fla keeps recurrent states in fp32 (chunk_gla asserts it).
    h0 = None if initial_state is None else initial_state.float()
    common = dict(scale=scale, initial_state=h0, output_final_state=output_final_state)
    if decay_kind == "none":
        o, ht = chunk_linear_attn(q, k, v, normalize=False, **common)
    elif decay_kind == "fixed":
        o, ht = chunk_simple_gla(q, k, v, g_gamma=log_decay.float(), **common)
    elif decay_kind == "token":
        o, ht = chunk_simple_gla(q, k, v, g=log_decay.float(), **common)
    elif decay_kind == "channel":
        o, ht = chunk_gla(q, k, v, g=log_decay.float(), **common)
    else:
        raise ValueError(f"unknown decay kind {decay_kind!r}")
    if not output_final_state:
        return o.to(v.dtype), None
    if track_gamma:
        ht = FixedDecayGradFromState.apply(ht, log_decay_leaf, T - _centre(T))
    return o.to(v.dtype), ht


# --- the gradient of a fixed per-head decay ------------------------------------------------
# With b_t = sum_{r<=t} g_r, the outputs depend on b only through q_t e^{b_t}, k_s e^{-b_s}
# and the factor e^{b_T} of the final state, so
#     dL/db_t = D_t = q_t·dq_t - k_t·dk_t  (+ <dS_T, S_T> at t = T),
# where dq, dk, dS_T are the total gradients of q, k and the final state. With g_t = gamma
# for every token, b_t = (t+1) gamma, hence dL/dgamma = sum_t (t+1) D_t + T <dS_T, S_T>.
# Scaling q by e^a, k and the initial state S_0 by e^-a changes no output and scales S_T by
# e^-a, so sum_t D_t = <dS_0, S_0> - <dS_T, S_T>; for any centre c therefore
#     dL/dgamma = sum_t (t+1-c) D_t + (T-c) <dS_T, S_T> + c <dS_0, S_0>.
# The centre c = (T+1)/2 makes the position weights small and of both signs: the two large
# sums of q·dq and k·dk, which nearly cancel, then lose less to the kernel's rounding (with
# per-element errors of 1e-3 in dq and dk, the relative error of dgamma through BiMix's DCT
# branch at T = 256 falls from 2.5% to 0.9%). Identity functions on the kernel's q and k inputs
# and on its initial and final states see those gradients pass and add their
# terms to gamma's gradient.
def _centre(T: int) -> float:
    return (T + 1) / 2


class FixedDecayGradFromQK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, gamma: torch.Tensor):  # q, k (B,T,H,K); gamma (H,)
        ctx.save_for_backward(q, k)
        ctx.gamma_dtype = gamma.dtype
        return q.view_as(q), k.view_as(k)

    @staticmethod
    def backward(ctx, dq: torch.Tensor | None, dk: torch.Tensor | None):
        q, k = ctx.saved_tensors
        T = q.shape[1]
        acc = torch.promote_types(q.dtype, torch.float32)  # sums of many terms: >= fp32
        per_token = q.new_zeros(T, q.shape[2], dtype=acc)  # (T, H): D_t
        if dq is not None:
            per_token = per_token + (q.to(acc) * dq.to(acc)).sum((0, 3))
        if dk is not None:
            per_token = per_token - (k.to(acc) * dk.to(acc)).sum((0, 3))
        weights = torch.arange(1, T + 1, device=q.device, dtype=acc) - _centre(T)
        dgamma = (weights[:, None] * per_token).sum(0)
        return dq, dk, dgamma.to(ctx.gamma_dtype)


class FixedDecayGradFromState(torch.autograd.Function):
    """On the kernel's initial state (weight c) or its final state (weight T - c)."""

    @staticmethod
    def forward(ctx, state: torch.Tensor, gamma: torch.Tensor, weight: float):  # state (B,H,K,V)
        ctx.save_for_backward(state)
        ctx.weight, ctx.gamma_dtype = weight, gamma.dtype
        return state.view_as(state)

    @staticmethod
    def backward(ctx, dstate: torch.Tensor):
        (state,) = ctx.saved_tensors
        acc = torch.promote_types(state.dtype, torch.float32)
        dgamma = ctx.weight * (dstate.to(acc) * state.to(acc)).sum((0, 2, 3))  # (H,)
        return dstate, dgamma.to(ctx.gamma_dtype), None
