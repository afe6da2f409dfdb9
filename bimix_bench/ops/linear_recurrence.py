"""Gated linear attention: one recurrence behind linear attention, GLA, Mamba-2's SSD and
BiMix's DCT branch.

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T        S: (K, V) per batch row and head
    o_t = scale * q_t^T S_t

Layout (fla's "head_first=False"): q, k (B, T, H, K); v (B, T, H, V); state (B, H, K, V).
The log decay g comes in one of four kinds:
  None          "none"     no decay (plain causal linear attention)
  (H,)          "fixed"    one constant per head (RetNet-style; fla's g_gamma)
  (B, T, H)     "token"    a per-token scalar per head (Mamba-2, simple GLA)
  (B, T, H, K)  "channel"  per token and key channel (GLA)
Log decays must be finite and <= 0.

Backends:
  "recurrent"  token-by-token loop in fp32 (fp64 for fp64 inputs): the ground truth.
  "chunked"    plain-torch chunked form, differentiable, CPU or GPU. Every exponent it takes
               is a difference of cumulative log decays that is <= 0, so nothing overflows
               however strong the decay.
  "fla"        fla-core Triton kernels (CUDA only), see fla_linear_recurrence.
  "auto"       "fla" where importable and safe for this call, else "chunked".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.ops.fla_linear_recurrence import (
    PER_TOKEN_DECAY_KINDS,
    fla_gated_linear_attention,
    load_fla,
    per_token_backward_problem,
)

BACKENDS = ("auto", "chunked", "recurrent", "fla")
# Sub-chunk length of the per-channel intra-chunk computation: pairwise decays are
# materialized only inside sub-chunks of this size (memory ~ T * SUB_CHUNK * K per head).
SUB_CHUNK = 16


# --- decay kinds and backend choice ------------------------------------------------------
def decay_kind(log_decay: torch.Tensor | None, q: torch.Tensor) -> str:
    """Classify (and validate) a log decay against q (B, T, H, K)."""
    if log_decay is None:
        return "none"
    B, T, H, K = q.shape
    shape = tuple(log_decay.shape)
    for kind, expected in (("fixed", (H,)), ("token", (B, T, H)), ("channel", (B, T, H, K))):
        if shape == expected:
            return kind
    raise ValueError(
        f"log_decay shape {shape} fits none of (H,)={(H,)}, (B, T, H)={(B, T, H)}, "
        f"(B, T, H, K)={(B, T, H, K)}"
    )


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will want a backward through a call on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# fla's chunked kernels multiply key and value tiles with tl.dot, which needs at least 16 along
# each side: with GLA's 8-wide keys (width 32, two heads) they faulted with "misaligned address"
# on an H100, and the fault poisons the CUDA context for everything after it.
FLA_MIN_HEAD_DIM = 16

# fla's per-channel (GLA) chunk kernel, chunk_gla_fwd_kernel_o, faulted with "misaligned
# address" on an H100 in a plain parallel forward of 24 tokens (keys 32, values 64, float32; a
# fresh process, nothing before it) and ran at 64 tokens (docs/perf.md). Shorter sequences take
# the plain-torch chunked form, which computes the same recurrence; the other decay kinds ran
# fla at 24 tokens.
FLA_CHANNEL_MIN_LENGTH = 64


def resolve_backend(
    requested: str, *, decay_kind: str, device: torch.device, needs_grad: bool,
    head_dims: tuple[int, int] | None = None,  # (K, V) per head, when known
    length: int | None = None,  # tokens in the call (T), when known
) -> tuple[str, str]:
    """(backend, reason) for one call. A forced backend that cannot run here raises SkipCell
    with the reason; "auto" falls back to "chunked" and says why."""
    if requested not in BACKENDS:
        raise UsageError(f"unknown linear-recurrence backend {requested!r}; valid: {BACKENDS}")
    if requested in ("chunked", "recurrent"):
        return requested, f"{requested} requested"
    problem = _fla_problem(decay_kind, torch.device(device), needs_grad, head_dims, length)
    if requested == "fla":
        if problem:
            raise SkipCell(f"backend 'fla' unavailable: {problem}")
        return "fla", f"fla requested ({load_fla()[1]})"
    if problem:
        return "chunked", f"plain-torch chunked form: {problem}"
    return "fla", f"{load_fla()[1]} on CUDA"


def _fla_problem(kind: str, device: torch.device, grad: bool,
                 head_dims: tuple[int, int] | None = None, length: int | None = None) -> str | None:
    if device.type != "cuda":
        return f"fla needs a CUDA device (tensors on {device.type})"
    if head_dims is not None and min(head_dims) < FLA_MIN_HEAD_DIM:
        return (f"fla's kernels need key and value widths of at least {FLA_MIN_HEAD_DIM} per "
                f"head; these are {head_dims[0]} and {head_dims[1]}")
    if kind == "channel" and length is not None and length < FLA_CHANNEL_MIN_LENGTH:
        return (f"fla's per-channel kernel faulted below {FLA_CHANNEL_MIN_LENGTH} tokens on an "
                f"H100; this call has {length}")
    fla, reason = load_fla()
    if fla is None:
        return reason
    if grad and kind in PER_TOKEN_DECAY_KINDS:
        return per_token_backward_problem(device)
    return None


# --- the op ----------------------------------------------------------------------------
def gated_linear_attention(
    q: torch.Tensor,  # (B, T, H, K)
    k: torch.Tensor,  # (B, T, H, K)
    v: torch.Tensor,  # (B, T, H, V)
    log_decay: torch.Tensor | None = None,  # None, (H,), (B, T, H) or (B, T, H, K)
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,  # (B, H, K, V)
    output_final_state: bool = False,
    backend: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """o (B, T, H, V) in v's dtype, and the final state (B, H, K, V) in fp32 (fp64 for fp64
    inputs) if output_final_state. fla picks its own chunk size; chunk_size is the chunked
    backend's."""
    kind = decay_kind(log_decay, q)
    B, T, H, K = q.shape
    if k.shape != q.shape or v.shape[:3] != (B, T, H):
        shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        raise ValueError(f"shape mismatch: {shapes}")
    if initial_state is not None and initial_state.shape != (B, H, K, v.shape[-1]):
        raise ValueError(f"initial_state {tuple(initial_state.shape)} != {(B, H, K, v.shape[-1])}")
    grad = needs_grad(q, k, v, log_decay, initial_state)
    name, _ = resolve_backend(backend, decay_kind=kind, device=q.device, needs_grad=grad,
                              head_dims=(K, v.shape[-1]), length=T)
    if name == "fla":
        return fla_gated_linear_attention(
            q, k, v, log_decay, kind, scale, initial_state, output_final_state
        )
    cd = compute_dtype(v.dtype)
    # (B, T, H, X) -> (B, H, T, X): time next to the feature axis for batched matmuls.
    qh, kh, vh = (t.to(cd).transpose(1, 2) for t in (q, k, v))
    g = _decay_bhtg(log_decay, kind, T, H, cd)
    h0 = None if initial_state is None else initial_state.to(cd)
    if name == "recurrent":
        o, state = _recurrent(qh, kh, vh, g, scale, h0)
    else:
        o, state = _chunked(qh, kh, vh, g, scale, h0, chunk_size)
    return o.transpose(1, 2).to(v.dtype), (state if output_final_state else None)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reference paths accumulate in fp32, or fp64 when given fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _decay_bhtg(
    log_decay: torch.Tensor | None, kind: str, T: int, H: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """Any decay kind as (B or 1, H, T, G), G = 1 (scalar per head) or K (per channel)."""
    if kind == "none":
        return None
    g = log_decay.to(dtype)
    if kind == "fixed":
        return g.view(1, H, 1, 1).expand(1, H, T, 1)
    if kind == "token":
        return g.transpose(1, 2).unsqueeze(-1)
    return g.transpose(1, 2)


# --- recurrent (ground truth and decoding) ------------------------------------------------
def recurrent_step(
    state: torch.Tensor,  # (B, H, K, V)
    q_t: torch.Tensor,  # (B, H, K)
    k_t: torch.Tensor,  # (B, H, K)
    v_t: torch.Tensor,  # (B, H, V)
    log_decay_t: torch.Tensor | None,  # None, (H,), (B, H) or (B, H, K)
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: returns o_t (B, H, V) in v_t's dtype and the new state (state's dtype)."""
    dt = state.dtype
    q_t, k_t, v32 = q_t.to(dt), k_t.to(dt), v_t.to(dt)
    if log_decay_t is not None:
        a = log_decay_t.to(dt).exp()
        if a.dim() == 1:  # (H,) -> (1, H, 1)
            a = a[None, :, None]
        elif a.dim() == 2:  # (B, H) -> (B, H, 1)
            a = a[..., None]
        state = state * a[..., None]  # decay acts on the key rows of S
    state = state + k_t[..., :, None] * v32[..., None, :]
    o_t = scale * torch.einsum("bhk,bhkv->bhv", q_t, state)
    return o_t.to(v_t.dtype), state


def _recurrent(
    q: torch.Tensor,  # (B, H, T, K)
    k: torch.Tensor,
    v: torch.Tensor,  # (B, H, T, V)
    g: torch.Tensor | None,  # (B|1, H, T, G)
    scale: float,
    h0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # (B, H, T, V), (B, H, K, V)
    B, H, T, K = q.shape
    state = h0 if h0 is not None else q.new_zeros(B, H, K, v.shape[-1])
    outs = []
    for t in range(T):
        g_t = None if g is None else g[:, :, t]  # (B|1, H, G): broadcasts like (B, H, K)
        o_t, state = recurrent_step(state, q[:, :, t], k[:, :, t], v[:, :, t], g_t, scale)
        outs.append(o_t)
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(B, H, 0, v.shape[-1])
    return out, state


# --- chunked (parallel within chunks, recurrent across them) -------------------------------
def _chunked(
    q: torch.Tensor,  # (B, H, T, K)
    k: torch.Tensor,
    v: torch.Tensor,  # (B, H, T, V)
    g: torch.Tensor | None,  # (B|1, H, T, G)
    scale: float,
    h0: torch.Tensor | None,  # (B, H, K, V)
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # (B, H, T, V), (B, H, K, V)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, H, T, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    N = max(1, math.ceil(T / C))
    pad = N * C - T
    # Zero padding is inert: k = 0 adds nothing to the state and g = 0 does not decay it.
    qc, kc, vc = (F.pad(t, (0, 0, 0, pad)).unflatten(2, (N, C)) for t in (q, k, v))  # (B,H,N,C,X)
    if h0 is None:
        h0 = q.new_zeros(B, H, K, V)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()

    if g is None:
        scores = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B,H,N,C,C)
        o_intra = scores @ vc
        updates = kc.transpose(-1, -2) @ vc  # (B,H,N,K,V): each chunk's sum of k v^T
        # State entering chunk n = h0 + sum of the updates of chunks < n.
        before = torch.cat([torch.zeros_like(updates[:, :, :1]), updates[:, :, :-1]], dim=2)
        states_in = h0[:, :, None] + before.cumsum(dim=2)  # (B,H,N,K,V)
        final = states_in[:, :, -1] + updates[:, :, -1]
        o_inter = qc @ states_in
    else:
        b = F.pad(g, (0, 0, 0, pad)).unflatten(2, (N, C)).cumsum(dim=-2)  # (B|1,H,N,C,G) <= 0
        b_last = b[..., -1:, :]  # (B|1,H,N,1,G): log decay across the whole chunk
        updates = (kc * (b_last - b).exp()).transpose(-1, -2) @ vc  # (B,H,N,K,V)
        chunk_decay = b_last.squeeze(-2).exp()  # (B|1,H,N,G)
        state, states = h0, []
        for n in range(N):
            states.append(state)
            state = chunk_decay[:, :, n, :, None] * state + updates[:, :, n]
        final = state
        states_in = torch.stack(states, dim=2)  # (B,H,N,K,V)
        o_inter = (qc * b.exp()) @ states_in
        if g.shape[-1] == 1:
            o_intra = _intra_chunk_scalar(qc, kc, vc, b, causal)
        else:
            o_intra = _intra_chunk_channel(qc, kc, vc, b)
    o = scale * (o_inter + o_intra)  # (B,H,N,C,V)
    return o.flatten(2, 3)[:, :, :T], final


def _intra_chunk_scalar(
    qc: torch.Tensor,  # (B,H,N,C,K)
    kc: torch.Tensor,
    vc: torch.Tensor,  # (B,H,N,C,V)
    b: torch.Tensor,  # (B|1,H,N,C,1) cumulative log decay within the chunk
    causal: torch.Tensor,  # (C, C) bool
) -> torch.Tensor:  # (B,H,N,C,V)
    # decay from s to t = exp(b_t - b_s) <= 1 for s <= t; masked before exp (b_t - b_s > 0 above).
    log_ratio = (b - b.transpose(-1, -2)).masked_fill(~causal, float("-inf"))  # (…,C,C)
    return ((qc @ kc.transpose(-1, -2)) * log_ratio.exp()) @ vc


def _intra_chunk_channel(
    qc: torch.Tensor,  # (B,H,N,C,K)
    kc: torch.Tensor,
    vc: torch.Tensor,  # (B,H,N,C,V)
    b: torch.Tensor,  # (B,H,N,C,K) cumulative log decay within the chunk
) -> torch.Tensor:  # (B,H,N,C,V)
    """Per-channel decays cannot be factored out of q·k stably over a whole chunk, so split it
    into M sub-chunks of length c. Within a sub-chunk the pairwise decays are materialized
    (c, c, K). Across sub-chunks, query sub-chunk i uses the reference point r_i = b at the end
    of sub-chunk i-1: q_t exp(b_t - r_i) and k_s exp(r_i - b_s) both have exponents <= 0."""
    C = qc.shape[-2]
    c = SUB_CHUNK if C % SUB_CHUNK == 0 else C
    M = C // c
    q5, k5, b5 = (t.unflatten(-2, (M, c)) for t in (qc, kc, b))  # (…,M,c,K)
    tril = torch.ones(c, c, dtype=torch.bool, device=qc.device).tril()

    # Diagonal blocks: A[t, s] = sum_k q_tk k_sk exp(b_tk - b_sk), s <= t.
    log_ratio = (b5[..., :, None, :] - b5[..., None, :, :]).masked_fill(
        ~tril[..., None], float("-inf")
    )  # (…,M,c,c,K)
    a_diag = (q5[..., :, None, :] * k5[..., None, :, :] * log_ratio.exp()).sum(-1)  # (…,M,c,c)

    # Off-diagonal blocks: keys strictly before each query sub-chunk.
    ref = torch.cat([torch.zeros_like(b5[..., :1, -1, :]), b5[..., :-1, -1, :]], dim=-2)  # (…,M,K)
    q_off = q5 * (b5 - ref[..., None, :]).exp()  # (…,M,c,K)
    starts = torch.arange(M, device=qc.device) * c  # first position of each query sub-chunk
    before = torch.arange(C, device=qc.device)[None, :] < starts[:, None]  # (M, C)
    k_log = (ref[..., :, None, :] - b[..., None, :, :]).masked_fill(
        ~before[..., None], float("-inf")
    )  # (…,M,C,K)
    k_off = kc[..., None, :, :] * k_log.exp()  # (…,M,C,K)
    a_off = q_off @ k_off.transpose(-1, -2)  # (…,M,c,C)

    eye = torch.eye(M, dtype=qc.dtype, device=qc.device)
    a_blockdiag = a_diag.unsqueeze(-2) * eye[:, None, :, None]  # (…,M,c,M,c)
    scores = a_off.unflatten(-1, (M, c)) + a_blockdiag
    return scores.flatten(-4, -3).flatten(-2, -1) @ vc
