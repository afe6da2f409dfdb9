"""The Mamba-2 baseline: against an independent token-by-token implementation of the block's
equations, the mixer contract, backends, sizing; and (on CUDA) mamba_ssm's Triton kernel
against the shared op."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bimix_bench.baselines.mamba2 import Mamba2, largest_divisor_at_most
from bimix_bench.errors import SkipCell
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.ops.linear_recurrence import gated_linear_attention
from bimix_bench.ops.mamba_ssd import load_mamba_chunk_scan, mamba_ssd
from bimix_bench.registry import MODELS
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
    relative_error,
)
from tests.test_baselines_linear import build_mixer, inputs, tiny_arch, with_backend


def mamba2_by_the_equations(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """u (B, T, D) -> (B, T, D), one token at a time, straight from the block's definition."""
    B, T, _ = u.shape
    di, N, H, P = m.d_inner, m.d_state, m.n_ssm_heads, m.head_dim
    z, xbc, dt_raw = (u @ m.in_proj.weight.T).split([di, di + 2 * N, H], dim=-1)
    W = m.short_conv.width
    conv = m.short_conv.bias.expand(B, T, -1).clone()
    for t in range(T):
        for j in range(W):  # tap j sees token t - (W - 1) + j
            if t - (W - 1) + j >= 0:
                conv[:, t] += m.short_conv.weight[:, j] * xbc[:, t - (W - 1) + j]
    x, Bm, Cm = F.silu(conv).split([di, N, N], dim=-1)
    x = x.unflatten(-1, (H, P))
    dt = F.softplus(dt_raw + m.dt_bias)  # (B, T, H)
    A = -m.A_log.exp()
    S = torch.zeros(B, H, P, N, dtype=u.dtype)
    ys = []
    for t in range(T):
        decay = (dt[:, t] * A).exp()[..., None, None]  # (B, H, 1, 1)
        S = decay * S + dt[:, t, :, None, None] * x[:, t, :, :, None] * Bm[:, t, None, None, :]
        ys.append((S * Cm[:, t, None, None, :]).sum(-1) + m.D[:, None] * x[:, t])  # (B, H, P)
    y = torch.stack(ys, dim=1).flatten(-2) * F.silu(z)  # gate, then one-group RMSNorm
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + m.norm.eps) * m.norm.weight
    return y @ m.out.weight.T


@pytest.mark.parametrize("backend", ["chunked", "recurrent"])
def test_matches_the_equations(backend):
    m = build_mixer("mamba2", backend=backend)
    x = inputs(T=29)
    with torch.no_grad():
        torch.testing.assert_close(m(x), mamba2_by_the_equations(m, x), atol=1e-10, rtol=1e-10)


def test_causal():
    assert_causal(build_mixer("mamba2"), inputs(), cut=19, atol=1e-10)


@pytest.mark.parametrize("n_prompt", [1, 3, 20])  # 1 and 3: shorter than the conv history
def test_decode_matches_forward(n_prompt):
    assert_decode_matches_forward(build_mixer("mamba2"), inputs(), n_prompt, atol=1e-10, rtol=1e-10)


def test_prefill_state_holds_conv_history_and_ssm_state():
    m = build_mixer("mamba2")
    x = inputs(T=10)
    with torch.no_grad():
        _, state = m.prefill(x, max_len=16)
        xbc = m.in_proj(x)[..., m.d_inner : 2 * m.d_inner + 2 * m.d_state]
    torch.testing.assert_close(state.conv, xbc[:, -3:])  # the last W - 1 conv inputs
    assert state.ssm.shape == (2, m.n_ssm_heads, m.d_state, m.head_dim)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_chunked_and_recurrent_backends_agree(dtype, tol):
    m = build_mixer("mamba2", dtype=dtype)
    assert_same_outputs_and_grads(
        with_backend(m, "recurrent"), with_backend(m, "chunked"), [inputs(dtype)],
        params=list(m.parameters()), atol=tol, rtol=tol,
    )


def test_sizes_and_backend_choice():
    assert largest_divisor_at_most(2048, 64) == 64 and largest_divisor_at_most(208, 64) == 52
    m = build_mixer("mamba2", d_model=1024, n_heads=16, head_dim=64, d_state=64)
    assert (m.d_inner, m.head_dim, m.n_ssm_heads, m.d_state) == (2048, 64, 32, 64)
    tiny = build_mixer("mamba2", d_model=32, head_dim=64, d_state=64)
    assert (tiny.head_dim, tiny.n_ssm_heads, tiny.d_state) == (64, 1, 32)
    tiny(inputs())
    assert tiny.backend == "chunked" and "mamba_ssm" in tiny.backend_reason
    if not torch.cuda.is_available():
        with pytest.raises(SkipCell, match="mamba_ssm"):
            build_mixer("mamba2", backend="mamba_ssm")


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_builds_in_language_model(head):
    spec = MODELS.get("mamba2").obj
    torch.manual_seed(0)
    model = LanguageModel(tiny_arch(head), spec, dict(spec.default_options))
    tokens = torch.randint(0, model.arch.vocab_size, (2, 20))
    out = model(tokens)
    assert out.shape == ((2, 20, model.arch.vocab_size) if head == "lm" else (2, 3))
    out.float().square().mean().backward()
    no_decay = [p for p in model.parameters() if getattr(p, "_no_weight_decay", False)]
    assert len(no_decay) == 3 * model.arch.n_layers  # dt_bias, A_log, D per layer


# --- mamba_ssm on CUDA ------------------------------------------------------------------------------
needs_mamba = pytest.mark.skipif(
    not torch.cuda.is_available() or load_mamba_chunk_scan()[0] is None,
    reason="needs CUDA and mamba_ssm",
)


@pytest.mark.gpu
@needs_mamba
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_mamba_ssm_kernel_matches_shared_op(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    B, T, H, P, N = 2, 600, 4, 64, 64
    rand = lambda *s: torch.randn(*s, generator=gen).cuda()  # noqa: E731
    x, Bm, Cm = rand(B, T, H, P).to(dtype), rand(B, T, 1, N).to(dtype), rand(B, T, 1, N).to(dtype)
    dt = F.softplus(rand(B, T, H) - 2)
    A = -torch.rand(H, generator=gen).cuda() * 4 - 0.5
    h0 = rand(B, H, N, P)
    leaves = [t.requires_grad_(True) for t in (x, dt, A, Bm, Cm, h0)]

    def fast(x, dt, A, Bm, Cm, h0):
        y, s = mamba_ssd(x, dt, A, Bm, Cm, h0, output_final_state=True)
        return y, s

    def reference(x, dt, A, Bm, Cm, h0):
        q, k = Cm.expand(B, T, H, N), Bm.expand(B, T, H, N)
        return gated_linear_attention(
            q.float(), k.float(), x.float() * dt[..., None], dt * A, initial_state=h0,
            output_final_state=True, backend="chunked",
        )

    results = []
    for fn in (fast, reference):
        args = [t.detach().clone().requires_grad_(True) for t in leaves]
        y, s = fn(*args)
        probe = torch.randn(y.shape, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
        ((y.float() * probe).sum() + s.float().sum()).backward()
        results.append([y, s] + [a.grad for a in args])
    for i, (a, b) in enumerate(zip(*results)):
        assert relative_error(a, b) < tol, f"tensor {i}: {relative_error(a, b)}"


@pytest.mark.gpu
@needs_mamba
def test_model_prefers_mamba_ssm_on_cuda_and_agrees():
    m = build_mixer("mamba2", dtype=torch.float32, d_model=256, head_dim=64, d_state=64).cuda()
    x = inputs(torch.float32, T=300, D=256).cuda()
    with torch.no_grad():
        y_fast = m(x)
        assert m.backend == "mamba_ssm"
        m.requested_backend = "chunked"
        y_ref = m(x)
    assert relative_error(y_fast, y_ref) < 5e-3
