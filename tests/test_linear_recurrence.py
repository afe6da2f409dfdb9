"""gated_linear_attention: the recurrent ground truth against closed forms, the chunked form
against the recurrence (values and gradients, every decay kind), numerical stability, backend
choice, and (on CUDA) fla's kernels against both."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.ops.fla_linear_recurrence import (
    load_fla,
    per_token_backward_problem,
)
from bimix_bench.ops.linear_recurrence import (
    FLA_CHANNEL_MIN_LENGTH,
    decay_kind,
    gated_linear_attention,
    recurrent_step,
    resolve_backend,
)
from tests.mixer_contract import assert_same_outputs_and_grads, relative_error

KINDS = ("none", "fixed", "token", "channel")


def make_inputs(kind, B=2, T=45, H=3, K=8, V=5, dtype=torch.float64, strength=1.0,
                device="cpu", seed=0):
    """Seeded q, k (B,T,H,K), v (B,T,H,V), log decay of `kind`, initial state (B,H,K,V)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = rand(B, T, H, K), rand(B, T, H, K), rand(B, T, H, V)
    g = {
        "none": None,
        "fixed": -torch.rand(H, generator=gen, dtype=torch.float64) * 0.5 * strength,
        "token": F.logsigmoid(rand(B, T, H)) * strength,
        "channel": F.logsigmoid(rand(B, T, H, K)) * strength,
    }[kind]
    h0 = rand(B, H, K, V)
    return tuple(None if t is None else t.to(device=device, dtype=dtype) for t in (q, k, v, g, h0))


def glattn(backend, q, k, v, g, h0, scale=0.35, chunk_size=16):
    """(o, final state) of one call."""
    return gated_linear_attention(q, k, v, g, scale=scale, initial_state=h0,
                                  output_final_state=True, backend=backend, chunk_size=chunk_size)


def flat(backend, chunk_size=16):
    """A function of (q, k, v, [g], h0) returning o and the final state, flattened together."""

    def fn(q, k, v, *rest):
        g, h0 = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
        o, state = glattn(backend, q, k, v, g, h0, chunk_size=chunk_size)
        return torch.cat([o.flatten(), state.to(o.dtype).flatten()])

    return fn


def as_list(q, k, v, g, h0):
    return [q, k, v, h0] if g is None else [q, k, v, g, h0]


def time_slice(g, sl):
    return g if g is None or g.dim() == 1 else g[:, sl]


# --- the ground truth against closed forms -----------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_matches_closed_form(kind):
    """o_t = scale q_t^T [diag(prod_{r<=t} a_r) h0 + sum_{s<=t} diag(prod_{s<r<=t} a_r) k_s v_s^T]."""
    q, k, v, g, h0 = make_inputs(kind, B=1, T=9)
    B, T, H, K = q.shape
    if g is None:
        g_full = torch.zeros(B, T, H, K, dtype=q.dtype)
    elif g.dim() == 1:
        g_full = g.expand(B, T, H)[..., None].expand(B, T, H, K)
    elif g.dim() == 3:
        g_full = g[..., None].expand(B, T, H, K)
    else:
        g_full = g
    cum = g_full.cumsum(1)  # (B, T, H, K): log of prod_{r<=t} a_r
    expected = torch.zeros(B, T, H, v.shape[-1], dtype=q.dtype)
    for t in range(T):
        expected[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t] * cum[:, t].exp(), h0)
        for s in range(t + 1):
            w = (q[:, t] * k[:, s] * (cum[:, t] - cum[:, s]).exp()).sum(-1)  # (B, H)
            expected[:, t] += w[..., None] * v[:, s]
    expected_state = h0 * cum[:, -1, :, :, None].exp() + torch.einsum(
        "bshk,bshv->bhkv", k * (cum[:, -1:] - cum).exp(), v
    )
    o, state = glattn("recurrent", q, k, v, g, h0)
    torch.testing.assert_close(o, 0.35 * expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, expected_state, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_step_is_one_token_of_the_recurrence(kind):
    q, k, v, g, h0 = make_inputs(kind, T=1)
    o_t, state = recurrent_step(h0, q[:, 0], k[:, 0], v[:, 0], time_slice(g, 0), 0.35)
    o, final = glattn("recurrent", q, k, v, g, h0)
    torch.testing.assert_close(o_t, o[:, 0])
    torch.testing.assert_close(state, final)


# --- chunked against the recurrence ------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "dtype,chunk_size,atol",
    [(torch.float64, 16, 1e-9), (torch.float64, 7, 1e-9), (torch.float32, 32, 2e-4)],
)
def test_chunked_matches_recurrent(kind, dtype, chunk_size, atol):
    # T = 45 is not a multiple of any chunk size used; chunk 32 has two 16-token sub-chunks,
    # chunk 7 is not a multiple of the sub-chunk and uses one block.
    inputs = as_list(*make_inputs(kind, dtype=dtype))
    assert_same_outputs_and_grads(
        flat("recurrent"), flat("chunked", chunk_size), inputs, atol=atol, rtol=atol
    )


@pytest.mark.parametrize("kind", KINDS)
def test_split_sequence_continues_from_state(kind):
    q, k, v, g, h0 = make_inputs(kind, T=40)
    o_full, s_full = glattn("chunked", q, k, v, g, h0)
    first, rest = slice(None, 23), slice(23, None)
    o1, s1 = glattn("chunked", q[:, first], k[:, first], v[:, first], time_slice(g, first), h0)
    o2, s2 = glattn("chunked", q[:, rest], k[:, rest], v[:, rest], time_slice(g, rest), s1)
    torch.testing.assert_close(torch.cat([o1, o2], 1), o_full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s2, s_full, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", ["fixed", "token", "channel"])
def test_strong_decay_long_sequence_is_finite(kind):
    # Log decays down to -40 per token over 1000 tokens: any exp of a cumulative sum (instead
    # of a difference of them) would overflow float32 within one chunk.
    inputs = make_inputs(kind, B=1, T=1000, H=2, K=4, V=4, dtype=torch.float32, strength=40.0)
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    o, state = glattn("chunked", *leaves, chunk_size=64)
    o_ref, _ = glattn("recurrent", *inputs)
    assert torch.isfinite(o).all() and torch.isfinite(state).all()
    torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
    (o.square().mean() + state.square().mean()).backward()
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()


def test_low_precision_inputs_keep_dtype_and_fp32_state():
    q, k, v, g, h0 = make_inputs("token", dtype=torch.bfloat16)
    o, state = glattn("chunked", q, k, v, g, h0)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    o_ref, _ = glattn("recurrent", *(t.double() for t in (q, k, v, g, h0)))
    assert (o.double() - o_ref).norm() / o_ref.norm() < 1e-2


def _stand_in_fla(monkeypatch):
    """fla's chunk_simple_gla replaced by the chunked op with the decay detached, as fla treats
    g_gamma (no gradient for it): the wrapper's own wiring then runs on a CPU."""
    import sys
    import types

    from bimix_bench.ops import fla_linear_recurrence

    def chunk_simple_gla(q, k, v, g_gamma, scale, initial_state, output_final_state):
        # The wrapper hands fla fp32 decays and states; back to q's fp64 for an exact check
        # (the test's decay and state are fp32 values).
        h0 = None if initial_state is None else initial_state.to(q.dtype)
        return gated_linear_attention(q, k, v, g_gamma.detach().to(q.dtype), scale=scale,
                                      backend="chunked", initial_state=h0, chunk_size=16,
                                      output_final_state=output_final_state)

    modules = {name: types.ModuleType(name) for name in
               ("fla", "fla.ops", "fla.ops.gla", "fla.ops.linear_attn", "fla.ops.simple_gla")}
    modules["fla.ops.gla"].chunk_gla = modules["fla.ops.linear_attn"].chunk_linear_attn = None
    modules["fla.ops.simple_gla"].chunk_simple_gla = chunk_simple_gla
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(fla_linear_recurrence, "load_fla", lambda: (modules["fla"], "stand-in"))


@pytest.mark.parametrize("with_state", [True, False])
def test_fixed_decay_gradient_supplied_around_a_kernel(monkeypatch, with_state):
    """fla's g_gamma gets no gradient; the identity functions the fla wrapper puts around the
    kernel (on q, k, the initial and the final state) must supply exactly the autograd
    gradient, with and without an initial state. A stand-in for fla's kernel that detaches the
    decay, as fla does, runs the wrapper on a CPU."""
    from bimix_bench.ops.fla_linear_recurrence import fla_gated_linear_attention

    _stand_in_fla(monkeypatch)
    q, k, v, g, h0 = make_inputs("fixed")
    g, h0 = g.float().double(), h0.float().double()  # the fp32 values the wrapper hands fla

    def through_wrapper(q, k, v, g, *h0):
        o, state = fla_gated_linear_attention(q, k, v, g, "fixed", 0.35, h0[0] if h0 else None, True)
        return torch.cat([o.flatten(), state.flatten()])

    def reference(q, k, v, g, *h0):
        o, state = glattn("chunked", q, k, v, g, h0[0] if h0 else None)
        return torch.cat([o.flatten(), state.flatten()])

    leaves = [q, k, v, g, h0] if with_state else [q, k, v, g]
    # rtol 1e-5: the wrapper's fp32 cast of the initial state rounds its gradient on the way
    # back (4e-7 relative in the decay's); a missing term would be off by order one.
    assert_same_outputs_and_grads(reference, through_wrapper, leaves, atol=1e-9, rtol=1e-5)


# --- backend choice ------------------------------------------------------------------------
def test_decay_kind_validates_shapes():
    q = torch.zeros(2, 5, 3, 4)
    assert decay_kind(None, q) == "none"
    assert decay_kind(torch.zeros(3), q) == "fixed"
    assert decay_kind(torch.zeros(2, 5, 3), q) == "token"
    assert decay_kind(torch.zeros(2, 5, 3, 4), q) == "channel"
    with pytest.raises(ValueError):
        decay_kind(torch.zeros(2, 5, 4), q)


def test_resolve_backend_on_cpu():
    cpu = torch.device("cpu")
    name, reason = resolve_backend("auto", decay_kind="token", device=cpu, needs_grad=True)
    assert name == "chunked" and "CUDA" in reason
    assert resolve_backend("recurrent", decay_kind="none", device=cpu, needs_grad=False)[0] == "recurrent"
    with pytest.raises(SkipCell, match="fla"):
        resolve_backend("fla", decay_kind="none", device=cpu, needs_grad=False)
    with pytest.raises(UsageError):
        resolve_backend("triton", decay_kind="none", device=cpu, needs_grad=False)


# --- fla on CUDA -----------------------------------------------------------------------------
gpu = pytest.mark.gpu
needs_fla = pytest.mark.skipif(
    not torch.cuda.is_available() or load_fla()[0] is None, reason="needs CUDA and fla-core"
)


def _fla_vs_reference(kind, dtype, reference, T, with_grad, tol):
    q, k, v, g, h0 = make_inputs(kind, B=2, T=T, H=4, K=64, V=64, dtype=torch.float32, device="cuda")
    q, k = q * 64**-0.25, k * 64**-0.25  # keep q·k O(1) at K = 64
    # Both sides see the same (dtype-rounded) inputs: only the kernels' arithmetic differs.
    q, k, v = (t.to(dtype).float() for t in (q, k, v))
    if with_grad and kind in ("token", "channel"):
        problem = per_token_backward_problem(q.device)
        if problem:
            pytest.skip(problem)

    def call(backend, cast):
        leaves = [t.detach().to(cast).requires_grad_(with_grad) for t in (q, k, v)]
        g_leaf = None if g is None else g.detach().clone().requires_grad_(with_grad)
        h_leaf = h0.detach().clone().requires_grad_(with_grad)
        o, state = glattn(backend, *leaves, g_leaf, h_leaf, scale=0.125)
        grads = []
        if with_grad:
            gen = torch.Generator("cuda").manual_seed(1)
            probe = torch.randn(o.shape, generator=gen, device="cuda")
            ((o.float() * probe).sum() + state.float().sum()).backward()
            grads = [t.grad for t in leaves + [g_leaf, h_leaf] if t is not None]
        return o, state, grads

    o_fast, s_fast, g_fast = call("fla", dtype)
    o_ref, s_ref, g_ref = call(reference, torch.float32)
    assert o_fast.dtype == dtype
    assert relative_error(o_fast, o_ref) < tol, "output"
    assert relative_error(s_fast, s_ref) < tol, "final state"
    assert len(g_fast) == len(g_ref)
    decay_index = 3 if g is not None else None
    for i, (a, b) in enumerate(zip(g_fast, g_ref)):
        # The decay's gradient sums position-weighted terms that largely cancel (one entry per
        # head here), so bf16 rounding of q, k, v moves it more than the others: looser bound.
        bound = 3 * tol if i == decay_index else tol
        assert a is not None and relative_error(a, b) < bound, f"grad {i}"


@gpu
@needs_fla
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_fla_forward_matches_chunked(kind, dtype, tol):
    _fla_vs_reference(kind, dtype, "chunked", T=1000, with_grad=False, tol=tol)


@gpu
@needs_fla
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_fla_forward_backward_matches_chunked(kind, dtype, tol):
    _fla_vs_reference(kind, dtype, "chunked", T=1000, with_grad=True, tol=tol)


@gpu
@needs_fla
@pytest.mark.parametrize("kind", KINDS)
def test_fla_matches_recurrent(kind):
    _fla_vs_reference(kind, torch.float32, "recurrent", T=100, with_grad=True, tol=5e-3)


def test_fla_is_never_picked_for_heads_narrower_than_its_tiles():
    # Decided before fla is imported or the device touched, so it holds without a GPU.
    cuda = torch.device("cuda")
    name, reason = resolve_backend("auto", decay_kind="none", device=cuda, needs_grad=False,
                                   head_dims=(8, 32))
    assert name == "chunked" and "at least 16" in reason and "8 and 32" in reason
    with pytest.raises(SkipCell, match="at least 16"):
        resolve_backend("fla", decay_kind="none", device=cuda, needs_grad=False, head_dims=(32, 8))


def test_fla_per_channel_kernel_is_never_picked_below_the_length_that_faulted():
    # GLA's per-channel decay at 24 tokens faulted inside fla on an H100 (docs/perf.md); auto
    # takes the chunked form there, a forced fla is refused, and the other decay kinds and
    # longer calls are left to the remaining checks.
    cuda = torch.device("cuda")
    short = FLA_CHANNEL_MIN_LENGTH - 1
    name, reason = resolve_backend("auto", decay_kind="channel", device=cuda, needs_grad=False,
                                   head_dims=(32, 64), length=short)
    assert name == "chunked" and f"this call has {short}" in reason
    with pytest.raises(SkipCell, match="per-channel kernel faulted"):
        resolve_backend("fla", decay_kind="channel", device=cuda, needs_grad=False,
                        head_dims=(32, 64), length=24)
    for kind, length in (("none", 24), ("channel", FLA_CHANNEL_MIN_LENGTH)):
        _, reason = resolve_backend("auto", decay_kind=kind, device=cuda, needs_grad=False,
                                    head_dims=(32, 64), length=length)
        assert "faulted below" not in reason


@gpu
@needs_fla
def test_auto_picks_fla_on_cuda_where_safe():
    cuda = torch.device("cuda")
    assert resolve_backend("auto", decay_kind="fixed", device=cuda, needs_grad=True)[0] == "fla"
    assert resolve_backend("auto", decay_kind="channel", device=cuda, needs_grad=False)[0] == "fla"
    expected = "chunked" if per_token_backward_problem(cuda) else "fla"
    assert resolve_backend("auto", decay_kind="token", device=cuda, needs_grad=True)[0] == expected
