"""The project's Triton kernel for the Chebyshev branch: window convolution over W lags for all
NB bands, fused with the per-token band gates, the sum over bands, and optionally the DCT
branch's result and the silu(z) output gate:

  out_t = silu(z_t) * ( dct_t + sum_{tau < W} M_t(tau) v_{t - tau} ),
  M_t(tau) = sum_b g_{t,b} kernel_b(tau).

One program owns BLOCK_T output rows of one (batch, head) and BLOCK_P channels. For every block
of BLOCK_S source positions that the window reaches it builds the gated Toeplitz tile
M[t, s] = sum_b g_{t,b} kernel_b(t - s) in registers and multiplies it with the value tile on the
tensor cores, so the per-band outputs never reach memory.

Backward (second and third kernels, no autograd graph through the forward):
  d_pre    = d_out * silu(z)            d_z = d_out * pre * silu'(z)       d_dct = d_pre
  d_v[s]   = sum_t M_t(t - s) d_pre[t]  the same kernel run backwards in time (REVERSE)
  R[t,tau] = <d_pre_t, v_{t - tau}>     banded Gram matrix, tensor-core tiles stored by lag
  d_g[t,b] = sum_tau R[t,tau] kernel_b(tau),   d_kernel_b(tau) = sum_t g_{t,b} R[t,tau]
R costs B*H*T*W fp32 numbers of transient memory; the last two contractions are torch matmuls.

On CPU the kernels run only under TRITON_INTERPRET=1 (tests at small shapes). They call only
Triton builtins (no @jit functions from triton.language.standard such as tl.zeros / tl.sigmoid), so
the interpreter can run them even when triton was imported before TRITON_INTERPRET was set.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _window_conv_kernel(
    x_ptr,  # (B, T, H, P) v (forward) or d_pre (REVERSE)
    kern_ptr,  # (H, NB, W) fp32 band kernels
    gate_ptr,  # (B, T, H, NB) band gates
    add_ptr,  # (B, T, H, P) added before the output gate (HAS_ADD)
    z_ptr,  # (B, T, H, P) output-gate pre-activation (HAS_GATE)
    pre_ptr,  # (B, T, H, P) result before the output gate (STORE_PRE)
    out_ptr,  # (B, T, H, P)
    T,
    H,
    P,
    W,
    NB: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_ADD: tl.constexpr,
    HAS_GATE: tl.constexpr,
    STORE_PRE: tl.constexpr,
    IEEE: tl.constexpr,  # fp32 inputs: full-precision products instead of TF32
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    N_S_TILES: tl.constexpr,  # source tiles a row tile reaches: cdiv(BLOCK_T + W - 1, BLOCK_S)
    BLOCK_P: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_p = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    t0 = pid_t * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_t = offs_t < T
    mask_p = offs_p < P
    row = H * P  # stride of one time step in (B, T, H, P)
    base = b.to(tl.int64) * T * row + h * P  # int64: B * T * D may pass 2^31
    gate_base = (b.to(tl.int64) * T * H + h) * NB
    kern_base = h * NB * W

    if REVERSE:  # outputs at s gather from t in [s, s + W)
        lo = t0
        hi = tl.minimum(T, t0 + BLOCK_T + W - 1)
    else:  # outputs at t gather from s in (t - W, t]
        lo = tl.maximum(0, t0 - W + 1)
        hi = tl.minimum(T, t0 + BLOCK_T)

    acc = tl.full((BLOCK_T, BLOCK_P), 0.0, tl.float32)
    for i in range(N_S_TILES):  # tiles past hi are masked out
        offs_s = lo + i * BLOCK_S + tl.arange(0, BLOCK_S)
        mask_s = offs_s < hi
        if REVERSE:
            lag = offs_s[None, :] - offs_t[:, None]
        else:
            lag = offs_t[:, None] - offs_s[None, :]
        valid = (lag >= 0) & (lag < W) & mask_t[:, None] & mask_s[None, :]
        mix = tl.full((BLOCK_T, BLOCK_S), 0.0, tl.float32)
        for n in tl.static_range(NB):
            k_n = tl.load(kern_ptr + kern_base + n * W + lag, mask=valid, other=0.0)
            if REVERSE:  # the gate belongs to the later position (the column here)
                g_n = tl.load(gate_ptr + gate_base + offs_s * (H * NB) + n, mask=mask_s, other=0.0)
                mix += k_n * g_n.to(tl.float32)[None, :]
            else:
                g_n = tl.load(gate_ptr + gate_base + offs_t * (H * NB) + n, mask=mask_t, other=0.0)
                mix += k_n * g_n.to(tl.float32)[:, None]
        x_tile = tl.load(
            x_ptr + base + offs_s[:, None] * row + offs_p[None, :],
            mask=mask_s[:, None] & mask_p[None, :],
            other=0.0,
        )
        if IEEE:
            acc += tl.dot(mix.to(x_tile.dtype), x_tile, input_precision="ieee")
        else:
            acc += tl.dot(mix.to(x_tile.dtype), x_tile)

    tile = base + offs_t[:, None] * row + offs_p[None, :]
    mask = mask_t[:, None] & mask_p[None, :]
    if HAS_ADD:
        acc += tl.load(add_ptr + tile, mask=mask, other=0.0).to(tl.float32)
    if STORE_PRE:
        tl.store(pre_ptr + tile, acc.to(pre_ptr.dtype.element_ty), mask=mask)
    if HAS_GATE:
        z = tl.load(z_ptr + tile, mask=mask, other=0.0).to(tl.float32)
        acc = acc * z / (1.0 + tl.exp(-z))
    tl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _window_gram_kernel(
    dy_ptr,  # (B, T, H, P)
    x_ptr,  # (B, T, H, P)
    r_ptr,  # (B * H, T, W) fp32, zero-initialised: R[t, tau] = <dy_t, x_{t - tau}>
    T,
    H,
    P,
    W,
    IEEE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    N_S_TILES: tl.constexpr,  # source tiles a row tile reaches: cdiv(BLOCK_T + W - 1, BLOCK_S)
    BLOCK_P: tl.constexpr,
    N_P_TILES: tl.constexpr,  # cdiv(P, BLOCK_P)
):
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    t0 = pid_t * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)
    mask_t = offs_t < T
    row = H * P
    base = b.to(tl.int64) * T * row + h * P
    r_base = pid_bh.to(tl.int64) * T * W
    lo = tl.maximum(0, t0 - W + 1)
    hi = tl.minimum(T, t0 + BLOCK_T)
    for i in range(N_S_TILES):  # tiles past hi are masked out
        offs_s = lo + i * BLOCK_S + tl.arange(0, BLOCK_S)
        mask_s = offs_s < hi
        gram = tl.full((BLOCK_T, BLOCK_S), 0.0, tl.float32)
        for j in range(N_P_TILES):
            offs_p = j * BLOCK_P + tl.arange(0, BLOCK_P)
            mask_p = offs_p < P
            dy_tile = tl.load(
                dy_ptr + base + offs_t[:, None] * row + offs_p[None, :],
                mask=mask_t[:, None] & mask_p[None, :],
                other=0.0,
            )
            x_tile = tl.load(
                x_ptr + base + offs_s[:, None] * row + offs_p[None, :],
                mask=mask_s[:, None] & mask_p[None, :],
                other=0.0,
            )
            if IEEE:
                gram += tl.dot(dy_tile, tl.trans(x_tile), input_precision="ieee")
            else:
                gram += tl.dot(dy_tile, tl.trans(x_tile))
        lag = offs_t[:, None] - offs_s[None, :]
        valid = (lag >= 0) & (lag < W) & mask_t[:, None] & mask_s[None, :]
        tl.store(r_ptr + r_base + offs_t[:, None] * W + lag, gram, mask=valid)


_INTERPRETED: dict[object, object] = {}


def _runnable(kernel, device: torch.device):
    """The kernel itself on CUDA; on CPU its interpreted twin, only under TRITON_INTERPRET=1.

    The interpreter is normally chosen when the module is imported; wrapping the kernel's Python
    function here lets tests switch the interpreter on regardless of import order."""
    if device.type == "cuda":
        return kernel
    if os.environ.get("TRITON_INTERPRET", "0") not in ("1", "true", "True"):
        raise RuntimeError("the Triton Chebyshev kernel needs CUDA, or TRITON_INTERPRET=1 on CPU")
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(kernel, InterpretedFunction):
        return kernel
    if kernel not in _INTERPRETED:
        _INTERPRETED[kernel] = InterpretedFunction(kernel.fn)
    return _INTERPRETED[kernel]


def _blocks(P: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_S, BLOCK_P). tl.dot needs every side >= 16; the interpreter is fastest
    with the smallest tiles."""
    block_p = min(64, max(16, triton.next_power_of_2(P)))
    if device.type != "cuda":
        return 16, 16, block_p
    return 64, 64, block_p


def _source_tiles(block_t: int, block_s: int, window: int) -> int:
    """How many BLOCK_S source tiles one BLOCK_T row tile reaches through a W-lag window.

    The kernels' loops run compile-time counts: a bound derived from the program id or from a
    runtime argument is a one-element array in the Triton interpreter, which some versions of
    it cannot iterate over (tests/test_bimix_triton.py, strict_index)."""
    return triton.cdiv(block_t + window - 1, block_s)


def _check_grid(batch_heads: int) -> None:
    # Time tiles go on grid axis 0 (neighbouring programs share window rows in L2); axis 1,
    # batch x heads, is limited to 65535 by CUDA.
    if batch_heads > 65535:
        raise ValueError(f"batch * heads = {batch_heads} exceeds the kernel's grid limit 65535")


def window_conv(
    x: torch.Tensor,
    kernels: torch.Tensor,
    gates: torch.Tensor,
    add: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    reverse: bool = False,
    store_pre: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the fused window convolution. x (B, T, H, P), kernels (H, NB, W), gates
    (B, T, H, NB), add / z (B, T, H, P) or None. Returns (out, pre or None). No autograd."""
    B, T, H, P = x.shape
    NB, W = kernels.shape[1:]
    x = x.contiguous()
    kernels = kernels.detach().float().contiguous()
    gates = gates.contiguous()
    out = torch.empty_like(x)
    pre = torch.empty_like(x) if store_pre else None
    dummy = x  # never read: the matching constexpr flag is off
    block_t, block_s, block_p = _blocks(P, x.device)
    _check_grid(B * H)
    grid = (triton.cdiv(T, block_t), B * H, triton.cdiv(P, block_p))
    _runnable(_window_conv_kernel, x.device)[grid](
        x,
        kernels,
        gates,
        add.contiguous() if add is not None else dummy,
        z.contiguous() if z is not None else dummy,
        pre if pre is not None else dummy,
        out,
        T,
        H,
        P,
        W,
        NB=NB,
        REVERSE=reverse,
        HAS_ADD=add is not None,
        HAS_GATE=z is not None,
        STORE_PRE=store_pre,
        IEEE=x.dtype in (torch.float32, torch.float64),
        BLOCK_T=block_t,
        BLOCK_S=block_s,
        N_S_TILES=_source_tiles(block_t, block_s, W),
        BLOCK_P=block_p,
    )
    return out, pre


def window_gram(dy: torch.Tensor, x: torch.Tensor, window: int) -> torch.Tensor:
    """R[b, h, t, tau] = <dy[b, t, h], x[b, t - tau, h]> for tau < window: (B, H, T, W) fp32."""
    B, T, H, P = x.shape
    gram = torch.zeros(B * H, T, window, device=x.device, dtype=torch.float32)
    block_t, block_s, block_p = _blocks(P, x.device)
    _check_grid(B * H)
    grid = (triton.cdiv(T, block_t), B * H)
    _runnable(_window_gram_kernel, x.device)[grid](
        dy.contiguous(),
        x.contiguous(),
        gram,
        T,
        H,
        P,
        window,
        IEEE=x.dtype in (torch.float32, torch.float64),
        BLOCK_T=block_t,
        BLOCK_S=block_s,
        N_S_TILES=_source_tiles(block_t, block_s, window),
        BLOCK_P=block_p,
        N_P_TILES=triton.cdiv(P, block_p),
    )
    return gram.view(B, H, T, window)


class _ChebWindowGated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, kernels, gates, add, z):  # type: ignore[override]
        needs_pre = z is not None and ctx.needs_input_grad[4]
        out, pre = window_conv(v, kernels, gates, add, z, store_pre=needs_pre)
        ctx.has_add = add is not None
        ctx.save_for_backward(v, kernels, gates, z, pre)
        return out

    @staticmethod
    def backward(ctx, d_out):  # type: ignore[override]
        v, kernels, gates, z, pre = ctx.saved_tensors
        d_z = None
        if z is not None:
            z32 = z.float()
            sig = torch.sigmoid(z32)
            d_pre32 = d_out.float() * z32 * sig
            if pre is not None:
                d_z = (d_out.float() * pre.float() * sig * (1 + z32 * (1 - sig))).to(z.dtype)
        else:
            d_pre32 = d_out.float()
        d_pre = d_pre32.to(v.dtype)
        d_add = d_pre if ctx.has_add and ctx.needs_input_grad[3] else None
        d_v = None
        if ctx.needs_input_grad[0]:
            d_v, _ = window_conv(d_pre, kernels, gates, reverse=True)
        d_kernels = d_gates = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gram = window_gram(d_pre, v, kernels.shape[-1])  # (B, H, T, W)
            if ctx.needs_input_grad[2]:
                d_gates = torch.einsum("bhtw,hnw->bthn", gram, kernels.float()).to(gates.dtype)
            if ctx.needs_input_grad[1]:
                d_kernels = torch.einsum("bhtw,bthn->hnw", gram, gates.float()).to(kernels.dtype)
        return d_v, d_kernels, d_gates, d_add, d_z


def cheb_window_gated(
    v: torch.Tensor,
    kernels: torch.Tensor,
    gates: torch.Tensor,
    add: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable fused Chebyshev branch.

    v (B, T, H, P); kernels (H, NB, W); gates (B|1, T|1, H, NB); add (B, T, H, P) or None (the
    DCT branch, added before the output gate); z (B, T, H, P) or None (output gate silu(z)).
    Returns silu(z) * (add + sum_b g_b (kernel_b * v)) (B, T, H, P) in v's dtype (terms that
    are None are left out)."""
    B, T, H, _ = v.shape
    gates = gates.expand(B, T, H, gates.shape[-1])
    if add is not None:
        add = add.to(v.dtype)
    if z is not None:
        z = z.to(v.dtype)
    return _ChebWindowGated.apply(v, kernels, gates, add, z)
