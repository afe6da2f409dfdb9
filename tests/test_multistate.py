"""The multistate mixer: offsets of both patterns checked by hand, the structured-operator form
equal to the recurrence (outputs and gradients), the mixing weights inside the stability
constraint, causality, and decode = parallel forward across offset boundaries with a ring of
the largest offset's size."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.models.mixer import MixerConfig
from bimix_bench.ops.multistate import (
    choose_exact_form,
    exact_form_work,
    multistate_chunked,
    multistate_parallel,
    multistate_recurrent,
    multistate_step,
    pattern_offsets,
    transfer_matrix,
)
from bimix_bench.registry import MODELS
from tests.mixer_contract import assert_causal, assert_decode_matches_forward, assert_same_outputs_and_grads


def make_mixer(pattern: str = "pow2", backend: str = "auto", context: int = 40, d: int = 32,
               chunk_size: int = 64):
    spec = MODELS.get("multistate").obj
    options = {**spec.default_options, "pattern": pattern, "backend": backend,
               "chunk_size": chunk_size}
    torch.manual_seed(0)
    return spec.mixer_cls(MixerConfig(d, 2, layer_idx=0, n_layers=2, max_seq_len=context, options=options))


def random_inputs(T: int, offsets: list[int], dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, H, K, V = 2, 3, 4, 5
    q, k = (torch.randn(B, T, H, K, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    raw = torch.rand(B, T, H, len(offsets), generator=g, dtype=dtype)
    return q, k, v, 0.95 * raw / raw.sum(-1, keepdim=True)


def test_offsets_of_both_patterns():
    assert pattern_offsets("pow2", 40) == [1, 2, 4, 8, 16, 32]
    assert pattern_offsets("pow2", 32) == [1, 2, 4, 8, 16]
    assert pattern_offsets("sqrt", 40) == [1, 2, 5, 10, 17, 26, 37]
    assert pattern_offsets("pow2", 1) == [1]
    with pytest.raises(ValueError, match="unknown offset pattern"):
        pattern_offsets("fib", 10)


def test_transfer_matrix_places_the_weights_on_their_subdiagonals():
    beta = torch.arange(1, 1 + 5 * 2, dtype=torch.float64).reshape(1, 5, 1, 2)  # J = 2
    B = transfer_matrix(beta, [1, 2])[0, 0]
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for t in range(5):
        if t >= 1:
            expected[t, t - 1] = beta[0, t, 0, 0]
        if t >= 2:
            expected[t, t - 2] = beta[0, t, 0, 1]
    torch.testing.assert_close(B, expected)


@pytest.mark.parametrize("pattern", ["pow2", "sqrt"])
def test_structured_operator_equals_the_recurrence(pattern):
    offsets = pattern_offsets(pattern, 37)
    inputs = list(random_inputs(37, offsets))
    assert_same_outputs_and_grads(
        lambda q, k, v, b: multistate_recurrent(q, k, v, b, offsets, 0.5),
        lambda q, k, v, b: multistate_parallel(q, k, v, b, offsets, 0.5),
        inputs, atol=1e-10, rtol=1e-9,
    )


@pytest.mark.parametrize("pattern", ["pow2", "sqrt"])
@pytest.mark.parametrize("chunk", [1, 8, 64])
def test_chunked_form_equals_the_recurrence_across_chunk_boundaries(pattern, chunk):
    offsets = pattern_offsets(pattern, 37)  # offsets up to 32 / 26: many reach past a chunk
    inputs = list(random_inputs(37, offsets, seed=1))
    assert_same_outputs_and_grads(
        lambda q, k, v, b: multistate_recurrent(q, k, v, b, offsets, 0.5),
        lambda q, k, v, b: multistate_chunked(q, k, v, b, offsets, 0.5, chunk=chunk),
        inputs, atol=1e-10, rtol=1e-9,
    )


def test_one_first_order_offset_is_a_decayed_linear_attention():
    """Offsets [1] with beta = a: S_t = a S_{t-1} + k v^T, the familiar recurrence."""
    q, k, v, _ = random_inputs(9, [1])
    beta = torch.full((2, 9, 3, 1), 0.7, dtype=torch.float64)
    s, outs = torch.zeros(2, 3, 4, 5, dtype=torch.float64), []
    for t in range(9):
        s = 0.7 * s + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], s))
    torch.testing.assert_close(multistate_parallel(q, k, v, beta, [1], 1.0), torch.stack(outs, 1))


def test_decode_step_equals_the_recurrence_and_keeps_a_ring_of_the_largest_offset():
    offsets = pattern_offsets("sqrt", 30)
    q, k, v, beta = random_inputs(30, offsets)
    expected = multistate_recurrent(q, k, v, beta, offsets, 0.5)
    ring = torch.zeros(2, max(offsets), 3, 4, 5, dtype=torch.float64)
    position = torch.zeros(1, dtype=torch.long)
    for t in range(30):
        o_t = multistate_step(ring, position, q[:, t], k[:, t], v[:, t], beta[:, t], offsets, 0.5)
        torch.testing.assert_close(o_t, expected[:, t])
        position += 1


def test_mixing_weights_satisfy_the_stability_constraint():
    mixer = make_mixer()
    with torch.no_grad():
        *_, beta, _, _ = mixer._inputs(torch.randn(2, 40, 32) * 5, None)
    assert (beta >= 0).all() and (beta.sum(-1) < 1).all()
    # and the states stay bounded on a long sequence of unit-norm updates
    offsets = mixer.offsets
    T = 200
    ones = torch.ones(1, T, 1, 1, dtype=torch.float64)
    worst = torch.full((1, T, 1, len(offsets)), beta.sum(-1).max().item() / len(offsets),
                       dtype=torch.float64)
    out = multistate_recurrent(ones, ones, ones, worst, offsets, 1.0)
    bound = 1.0 / (1.0 - float(worst[0, 0, 0].sum()))
    assert float(out.max()) <= bound + 1e-9


@pytest.mark.parametrize("pattern", ["pow2", "sqrt"])
@pytest.mark.parametrize("backend", ["chunked", "parallel", "reference"])
def test_mixer_is_causal(pattern, backend):
    assert_causal(make_mixer(pattern, backend), torch.randn(2, 24, 32), cut=11)


@pytest.mark.parametrize("pattern", ["pow2", "sqrt"])
@pytest.mark.parametrize("n_prompt", [1, 3, 9, 17, 33])
def test_decode_matches_forward_across_offsets(pattern, n_prompt):
    mixer = make_mixer(pattern)
    assert_decode_matches_forward(mixer, torch.randn(2, 40, 32), n_prompt)
    state = mixer.init_decode_state(2, 40, torch.device("cpu"), torch.float32)
    assert state.ring.shape[1] == max(mixer.offsets)  # memory: the largest offset's states


@pytest.mark.parametrize("backend", ["chunked", "parallel", "auto"])
def test_every_backend_equals_the_reference_through_the_whole_mixer(backend):
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    fast = make_mixer(backend=backend, chunk_size=16).double()
    slow = make_mixer(backend="reference").double()
    slow.load_state_dict(fast.state_dict())
    assert_same_outputs_and_grads(slow, fast, [x], atol=1e-9, rtol=1e-8)


def test_auto_runs_the_cheaper_exact_form_where_it_was_measured():
    # Work estimates by hand: context 512, K 32, V 64, pow2 (9 offsets below 512), chunks of 64:
    # structured operator 512 (512/3 + 192) = 185,685; chunked 2,048 (64 + 9) = 149,504.
    offsets = pattern_offsets("pow2", 512)
    assert exact_form_work(512, 32, 64, offsets, 64) == pytest.approx(
        {"parallel": 512 * (512 / 3 + 192), "chunked": 2048 * 73})
    assert choose_exact_form("cpu", 512, 32, 64, offsets, 64)[0] == "parallel"  # < 16 x 149,504
    # tiny's heads (K 6, V 12) at 1,024 tokens: 1,024 (341.3 + 36) = 386,389 > 16 x 72 (64 + 10)
    assert choose_exact_form("cpu", 1024, 6, 12, pattern_offsets("pow2", 1024), 64)[0] == "chunked"
    # On CUDA at the cpu budget's 2,048 tokens: 2,048 (682.7 + 192) = 1,791,317 < 16 x 2,048
    # (64 + 11) = 2,457,600, where the H100 trained the operator 11x faster.
    assert choose_exact_form("cuda", 2048, 32, 64, pattern_offsets("pow2", 2048), 64)[0] == "parallel"
    form, why = choose_exact_form("mps", 64, 32, 64, pattern_offsets("pow2", 64), 64)
    assert form == "chunked" and "not timed" in why  # no measurement on that device type


def test_the_record_names_the_form_that_auto_ran():
    mixer = make_mixer(backend="auto", context=1024)  # K 8, V 16; 10 pow2 offsets below 1,024
    assert mixer.backend == "unresolved"
    mixer(torch.randn(1, 40, 32))  # 40 (13.3 + 48) = 2,453 < 16 x 128 (40 + 6) = 94,208
    assert mixer.backend == "torch-structured-operator" and "context 40" in mixer.backend_reason
    mixer(torch.randn(1, 1024, 32))  # 1,024 (341.3 + 48) = 398,677 > 16 x 128 (64 + 10) = 151,552
    assert mixer.backend == "torch-chunked" and "context 1024" in mixer.backend_reason


@pytest.mark.parametrize("pattern", ["pow2", "sqrt"])
def test_both_exact_forms_keep_float32_accuracy_near_the_weight_bound(pattern):
    # The cpu budget's long-code shape (512 tokens, K 32, V 64) with the total weight at 0.99,
    # close to its bound of 1: both forms in float32 against the operator in float64.
    offsets = pattern_offsets(pattern, 512)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 512, 1, 32, generator=g) for _ in range(2))
    v = torch.randn(2, 512, 1, 64, generator=g)
    beta = 0.99 * torch.rand(2, 512, 1, len(offsets), generator=g).softmax(-1)
    exact = multistate_parallel(*(t.double() for t in (q, k, v, beta)), offsets, 32**-0.5)
    for form in (multistate_parallel, multistate_chunked):
        error = (form(q, k, v, beta, offsets, 32**-0.5).double() - exact).abs().max()
        assert error < 1e-5 * exact.abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("form", ["parallel", "chunked"])
def test_both_exact_forms_equal_the_recurrence_on_cuda(form):
    # `auto` runs the structured operator on CUDA since the H100 timing: both forms there
    # against the CPU recurrence, outputs and gradients, in float64.
    offsets = pattern_offsets("pow2", 37)
    inputs = list(random_inputs(37, offsets, seed=2))
    fast = {"parallel": multistate_parallel, "chunked": multistate_chunked}[form]
    assert_same_outputs_and_grads(
        lambda q, k, v, b: multistate_recurrent(q, k, v, b, offsets, 0.5),
        lambda q, k, v, b: fast(q.cuda(), k.cuda(), v.cuda(), b.cuda(), offsets, 0.5).cpu(),
        inputs, atol=1e-10, rtol=1e-9,
    )
