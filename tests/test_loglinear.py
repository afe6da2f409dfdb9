"""Log-Linear Mamba-2: Fenwick levels checked by hand, the quadratic form against a brute-force
sum (outputs and gradients) and against Mamba-2's recurrence when every level weight is 1, the
chunkwise form against the quadratic form, the Fenwick decode step across level boundaries
with O(log T) states, causality and decode = forward for the whole mixer on both plain-torch
paths; on a GPU, fla's kernel against the reference."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.errors import UsageError
from bimix_bench.models.mixer import MixerConfig
from bimix_bench.ops.fla_linear_recurrence import load_fla
from bimix_bench.ops.log_linear import (
    fenwick_prefill,
    fenwick_step,
    level_count,
    levels,
    log_linear_fla,
    log_linear_chunked,
    log_linear_reference,
)
from bimix_bench.registry import MODELS
from tests.mixer_contract import assert_causal, assert_decode_matches_forward, assert_same_outputs_and_grads


def inputs(T: int, L: int | None = None, dtype=torch.float64, device="cpu", seed: int = 0):
    g = torch.Generator(device).manual_seed(seed)
    B, H, K, V = 2, 3, 4, 5
    q, k = (torch.randn(B, T, 1, K, generator=g, dtype=dtype, device=device) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype, device=device)
    decay = -0.3 * torch.rand(B, T, H, generator=g, dtype=dtype, device=device)
    lam = 0.5 + torch.rand(B, T, H, L or level_count(T), generator=g, dtype=dtype, device=device)
    return q, k, v, decay, lam


def brute_force(q, k, v, g, lam, scale):
    B, T, H, V = v.shape
    G = g.cumsum(1)
    rows = []
    for t in range(T):
        acc = torch.zeros(B, H, V, dtype=v.dtype)
        for s in range(t + 1):
            level = 0 if s == t else (t ^ s).bit_length()
            w = lam[:, t, :, level] * torch.exp(G[:, t] - G[:, s]) * (q[:, t, 0] * k[:, s, 0]).sum(-1)[:, None]
            acc = acc + w[..., None] * v[:, s]
        rows.append(scale * acc)
    return torch.stack(rows, 1)


def test_levels_by_hand():
    t = torch.tensor([5, 5, 5, 8, 6, 1, 7])
    s = torch.tensor([5, 4, 3, 7, 4, 0, 0])
    # 5 itself; 4 = 5's last bucket of 1; 3 in 5's bucket of 4 (0..3); 7 in 8's bucket of 8;
    # 4 in 6's bucket of 2 (4..5); 0 in 1's bucket of 1; 0 in 7's bucket of 4 (0..3).
    assert levels(t, s, 8).tolist() == [0, 1, 3, 4, 2, 1, 3]
    assert [level_count(n) for n in (1, 2, 3, 64, 65, 1000)] == [1, 2, 3, 7, 8, 11]


def test_quadratic_form_equals_the_brute_force_sum():
    args = list(inputs(21))
    assert_same_outputs_and_grads(lambda *a: brute_force(*a, 0.7), lambda *a: log_linear_reference(*a, 0.7),
                                  args, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("T, chunk, n_levels", [
    (1, 64, None), (21, 64, None), (21, 4, None), (64, 8, None), (100, 8, None),
    (130, 16, 5),  # fewer level weights than levels: the last weighs every level above it
    (40, 1, None),
])
def test_chunkwise_form_equals_the_quadratic_form(T, chunk, n_levels):
    """Inside chunks, across chunk boundaries, with padding to whole chunks, and with levels
    clamped to the last weight as the reference clamps them."""
    args = list(inputs(T, n_levels, seed=T))
    assert_same_outputs_and_grads(lambda *a: log_linear_reference(*a, 0.7),
                                  lambda *a: log_linear_chunked(*a, 0.7, chunk=chunk),
                                  args, atol=1e-10, rtol=1e-9)


def test_chunkwise_form_refuses_a_chunk_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        log_linear_chunked(*inputs(8), 1.0, chunk=6)
    spec = MODELS.get("loglinear").obj
    with pytest.raises(UsageError, match="chunk_size=48"):
        spec.mixer_cls(MixerConfig(32, 2, 0, 2, 64, {**spec.default_options, "chunk_size": 48}))


def test_unit_level_weights_are_mamba2s_first_order_recurrence():
    q, k, v, g, lam = inputs(33)
    state, rows = torch.zeros(2, 3, 4, 5, dtype=torch.float64), []
    for t in range(33):
        state = state * torch.exp(g[:, t])[..., None, None] + k[:, t, 0][:, None, :, None] * v[:, t][:, :, None, :]
        rows.append(torch.einsum("bk,bhkv->bhv", q[:, t, 0], state))
    torch.testing.assert_close(log_linear_reference(q, k, v, g, torch.ones_like(lam), 1.0), torch.stack(rows, 1))


@pytest.mark.parametrize("n_prompt", [0, 1, 7, 8, 16, 31])
def test_fenwick_decode_continues_a_prompt_across_level_boundaries(n_prompt):
    T = 40  # crosses 8, 16 and 32
    q, k, v, g, lam = inputs(T, seed=1)
    expected = log_linear_reference(q, k, v, g, lam, 0.5)
    states = fenwick_prefill(k[:, :n_prompt], v[:, :n_prompt], g[:, :n_prompt], level_count(T)).clone()
    position = torch.tensor([n_prompt])
    for t in range(n_prompt, T):
        o_t = fenwick_step(states, position, q[:, t], k[:, t], v[:, t], g[:, t], lam[:, t], 0.5)
        torch.testing.assert_close(o_t, expected[:, t])
        position += 1
    assert states.shape[1] == level_count(T) == 7  # O(log T) states, not O(T)


def make_mixer(backend: str = "reference", context: int = 64):
    spec = MODELS.get("loglinear").obj
    torch.manual_seed(0)
    return spec.mixer_cls(MixerConfig(32, 2, 0, 2, context, {**spec.default_options, "backend": backend}))


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_mixer_is_causal(backend):
    assert_causal(make_mixer(backend, context=160), torch.randn(2, 150, 32), cut=70)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("n_prompt", [1, 4, 8, 17, 33])
def test_mixer_decode_matches_forward(n_prompt, backend):
    mixer = make_mixer(backend)
    assert_decode_matches_forward(mixer, torch.randn(2, 40, 32), n_prompt)
    assert mixer.init_decode_state(2, 40, torch.device("cpu"), torch.float32).levels.shape[1] == level_count(40)


def test_level_weights_start_at_one_and_the_length_limit_is_enforced():
    mixer = make_mixer()
    lam = mixer.level_scales(torch.randn(2, 5, 32))
    assert lam.shape == (2, 5, mixer.n_ssm_heads, level_count(65536))
    torch.testing.assert_close(lam, torch.ones_like(lam))  # starts as Mamba-2
    short = make_mixer()
    short.n_levels = 3  # 4 tokens at most
    with pytest.raises(ValueError, match="at most 4 tokens"):
        short(torch.randn(1, 5, 32))


def test_backend_on_cpu_is_the_chunkwise_form_and_says_why():
    mixer = make_mixer("auto")
    x = torch.randn(2, 80, 32)
    y = mixer(x)
    assert mixer.backend == "torch-chunked" and "CUDA" in mixer.backend_reason
    reference = make_mixer("reference")
    reference.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(y, reference(x), atol=1e-5, rtol=1e-4)
    assert reference.backend == "torch-reference"


def test_head_sizes_that_are_not_powers_of_two_keep_plain_torch():
    """fla's kernel refuses them (seen on an H100 at the cpu budget: d_model 54, one head, so
    head_dim and d_state 54): auto must take the chunkwise form there, and say so."""
    spec = MODELS.get("loglinear").obj
    mixer = spec.mixer_cls(MixerConfig(54, 1, 0, 2, 64, {**spec.default_options, "backend": "auto"}))
    assert (mixer.head_dim, mixer.d_state) == (54, 54)
    assert "power-of-two" in mixer.fla_problem(torch.device("cuda"), needs_grad=True)
    mixer(torch.randn(1, 8, 54))
    assert mixer.backend == "torch-chunked" and "power-of-two" in mixer.backend_reason
    problem = make_mixer().fla_problem(torch.device("cuda"), needs_grad=False)  # 32 wide
    assert problem is None or "power-of-two" not in problem


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or load_fla()[0] is None, reason="needs CUDA and fla-core")
def test_fla_kernel_equals_the_reference_gpu():
    q, k, v, g, lam = inputs(256, dtype=torch.float32, device="cuda")
    q, k = (torch.randn(2, 256, 1, 64, device="cuda") for _ in range(2))  # fla's key width
    v = torch.randn(2, 256, 3, 32, device="cuda")  # fla needs power-of-two head sizes
    # fla's kernel computes its products in TF32, so compare by relative error over each tensor
    # (elementwise, a few of 49K outputs of magnitude ~10 differed by 0.03 on an H100).
    assert_same_outputs_and_grads(lambda *a: log_linear_reference(*a, 1.0), lambda *a: log_linear_fla(*a, 1.0),
                                  [q, k, v, g, lam], max_relative_error=5e-3)
