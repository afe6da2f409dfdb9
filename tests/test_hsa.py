"""Hierarchical sparse attention: the window and visibility masks by hand, the two retrieval forms
against a per-query loop (outputs and gradients), top-k sparsity (a query reads only its window
and its chosen chunks), causality and decode = parallel forward through the whole stack (the
layers share the chunk memory), the bypass switch, sparsity in training, the parameter budget and
bad options."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

import bimix_bench.baselines.hsa as hsa
from bimix_bench.baselines.hsa import MEMORY, HSABlock, HSAOptions, split_heads
from bimix_bench.config import load_budget
from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.mixer import MixerConfig
from bimix_bench.models.sizing import solve_architecture
from bimix_bench.models.static_decode import StaticDecoder, state_tensors
from bimix_bench.ops.hsa import (
    ChunkMemory,
    chunk_visibility,
    dense_is_cheaper,
    retrieve_dense,
    retrieve_gather,
    select_chunks,
    sliding_window_mask,
)
from bimix_bench.ops.hsa_flex import retrieve_flex
from bimix_bench.registry import MODELS
from tests.host_reads import no_host_reads
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
)

# Chunks of 4, a window of 4 and 3 of the 15 chunks visible at 64 tokens: retrieval at work
# within a few dozen tokens.
SMALL = {"window": 4, "chunk_size": 4, "top_k": 3, "max_selected_fraction": 0.25}
D, HEADS, VOCAB = 32, 2, 97


def make_model(n_layers: int = 2, context: int = 64, **options) -> LanguageModel:
    spec = MODELS.get("hsa").obj
    torch.manual_seed(0)
    arch = Architecture(D, n_layers, HEADS, 2 * D, context, vocab_size=VOCAB)
    return LanguageModel(arch, spec, {**spec.default_options, **SMALL, **options}).eval()


class Stack(nn.Module):
    """A model's blocks as one mixer over embeddings (B, T, D), for the shared contract checks."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        carry: dict = {}
        for block in self.model.blocks:
            x = block(x, carry)
        return x

    def prefill(self, x: torch.Tensor, max_len: int):
        carry: dict = {}
        states = []
        for block in self.model.blocks:
            x, state = block.prefill(x, max_len, carry)
            states.append(state)
        return x, states

    def decode_step(self, x_t: torch.Tensor, states) -> torch.Tensor:
        carry: dict = {}
        for block, state in zip(self.model.blocks, states):
            x_t = block.decode_step(x_t, state, carry)
        return x_t


def inputs(B: int = 2, T: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


# --- masks ------------------------------------------------------------------------------------
def test_sliding_window_mask_keeps_the_last_w_keys():
    mask = sliding_window_mask(9, 9, 3, torch.device("cpu"))
    expected = torch.tensor([[0 <= i - j < 3 for j in range(9)] for i in range(9)])
    assert torch.equal(mask, expected)
    # end-aligned: two queries at positions 7, 8 of nine keys
    assert torch.equal(sliding_window_mask(2, 9, 3, torch.device("cpu")), expected[7:])


def test_a_chunk_is_visible_once_it_ends_before_the_window():
    visible = chunk_visibility(torch.arange(20), 5, chunk_size=4, window=4)  # (20, 5)
    # chunk c covers 4c .. 4c + 3; query t's window is t - 3 .. t, so c needs 4c + 3 <= t - 4
    expected = torch.tensor([[4 * c + 3 <= t - 4 for c in range(5)] for t in range(20)])
    assert torch.equal(visible, expected)
    assert not visible[6].any() and visible[7].tolist() == [True] + [False] * 4
    assert visible[10].tolist() == [True] + [False] * 4
    assert visible[11].tolist() == [True, True] + [False] * 3


# --- retrieval --------------------------------------------------------------------------------
def memory_and_queries(B=2, H=2, Tq=24, C=5, S=4, Dh=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = ChunkMemory(torch.randn(B, H, C, Dh, generator=g, dtype=dtype),
                         torch.randn(B, H, C, S, Dh, generator=g, dtype=dtype),
                         torch.randn(B, H, C, S, Dh, generator=g, dtype=dtype))
    q_select, q_attend = (torch.randn(B, H, Tq, Dh, generator=g, dtype=dtype) for _ in range(2))
    return memory, q_select, q_attend


def loop_retrieval(memory, q_select, q_attend, k, S, W):
    """The definition, one query and head at a time."""
    B, H, Tq, Dh = q_attend.shape
    out = torch.zeros_like(q_attend)
    for b in range(B):
        for h in range(H):
            for t in range(Tq):
                visible = [c for c in range(memory.n_chunks) if c * S + S - 1 <= t - W]
                if not visible:
                    continue
                landmarks = memory.landmarks[b, h, visible]  # (n, Dh)
                scores = landmarks @ q_select[b, h, t]
                top, pick = (scores / math.sqrt(Dh)).topk(min(k, len(visible)))
                for weight, i in zip(top.softmax(0), pick.tolist()):
                    c = visible[i]
                    attn = (memory.keys[b, h, c] @ q_attend[b, h, t] / math.sqrt(Dh)).softmax(0)
                    out[b, h, t] += weight * (attn @ memory.values[b, h, c])
    return out


@pytest.mark.parametrize("read", [retrieve_gather, retrieve_dense, retrieve_flex])
def test_retrieval_equals_the_per_query_definition(read):
    memory, q_select, q_attend = memory_and_queries()
    scores = q_select @ memory.landmarks.transpose(-1, -2) / math.sqrt(8)
    idx, weights = select_chunks(scores, chunk_visibility(torch.arange(24), 5, 4, 4), 2)
    got = read(q_attend, memory.keys, memory.values, idx, weights)
    torch.testing.assert_close(got, loop_retrieval(memory, q_select, q_attend, 2, 4, 4))


def test_dense_and_gather_forms_agree_in_outputs_and_gradients():
    memory, q_select, q_attend = memory_and_queries(seed=1)
    visible = chunk_visibility(torch.arange(24), 5, 4, 4)

    def through(read):
        def run(q_sel, q_att, landmarks, keys, values):
            scores = q_sel @ landmarks.transpose(-1, -2)
            idx, weights = select_chunks(scores, visible, 3)
            return read(q_att, keys, values, idx, weights)
        return run

    assert_same_outputs_and_grads(
        through(retrieve_gather), through(retrieve_dense),
        [q_select, q_attend, memory.landmarks, memory.keys, memory.values], atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("k, head_dim, last_dense", [(8, 16, 132), (8, 64, 516), (2, 10, 21)])
def test_auto_reads_densely_while_the_dense_form_holds_fewer_elements(k, head_dim, last_dense):
    """Per query: 2 C S for the dense form (probabilities and their weighted copy) against
    k S (2 d/H + 1) for the gathered one; the boundaries docs/hsa.md gives."""
    for chunk_size in (8, 64):
        assert dense_is_cheaper(last_dense, k, chunk_size, head_dim)
        assert not dense_is_cheaper(last_dense + 1, k, chunk_size, head_dim)


def test_the_weights_carry_the_loss_into_the_landmarks():
    memory, q_select, q_attend = memory_and_queries(seed=2)
    landmarks = memory.landmarks.clone().requires_grad_(True)
    idx, weights = select_chunks(q_select @ landmarks.transpose(-1, -2),
                                 chunk_visibility(torch.arange(24), 5, 4, 4), 2)
    retrieve_gather(q_attend, memory.keys, memory.values, idx, weights).sum().backward()
    chosen = torch.zeros(landmarks.shape[:3], dtype=torch.bool)  # (B, H, C)
    for b in range(2):
        for h in range(2):
            chosen[b, h, idx[b, h][weights[b, h] > 0].unique()] = True
    grad_norm = landmarks.grad.norm(dim=-1)  # (B, H, C)
    assert (grad_norm[chosen] > 0).all() and (grad_norm[~chosen] == 0).all()


def test_the_flex_path_equals_the_reference_through_the_model():
    """backend=flex (flex_attention's eager implementation here) against backend=gather."""
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        flex, gather = make_model(3, backend="flex"), make_model(3, backend="gather")
        torch.testing.assert_close(flex(ids), gather(ids), atol=1e-5, rtol=1e-5)
    assert flex.blocks[2].mixer.backend == "sdpa-window+flex-attention"


def test_the_flex_path_refuses_to_train_on_cpu():
    model = make_model(2, backend="flex").train()
    with pytest.raises(UsageError, match="trains only on CUDA"):
        model(torch.randint(0, VOCAB, (1, 64)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_flex_kernel_equals_the_reference_on_cuda_in_outputs_and_gradients(dtype):
    memory, q_select, q_attend = memory_and_queries(B=2, H=4, Tq=512, C=24, S=16, Dh=32,
                                                    dtype=torch.float32, seed=6)
    visible = chunk_visibility(torch.arange(512), 24, 16, 64)

    def through(read):
        def run(q_sel, q_att, landmarks, keys, values):
            idx, weights = select_chunks(q_sel @ landmarks.transpose(-1, -2), visible.cuda(), 4)
            return read(q_att, keys, values, idx, weights)
        return run

    tensors = [t.cuda().to(dtype) for t in (q_select, q_attend, memory.landmarks, memory.keys,
                                             memory.values)]
    tol = {"atol": 5e-2, "rtol": 5e-2} if dtype == torch.bfloat16 else {"atol": 2e-4, "rtol": 2e-4}
    assert_same_outputs_and_grads(through(retrieve_gather), through(retrieve_flex), tensors, **tol)


def test_with_no_visible_chunk_nothing_is_retrieved():
    memory, q_select, q_attend = memory_and_queries(Tq=7)
    idx, weights = select_chunks(q_select @ memory.landmarks.transpose(-1, -2),
                                 chunk_visibility(torch.arange(7), 5, 4, 4), 2)
    assert (weights == 0).all()
    assert (retrieve_dense(q_attend, memory.keys, memory.values, idx, weights) == 0).all()


@pytest.mark.parametrize("backend", ["gather", "dense", "flex"])
def test_a_query_reads_only_its_window_and_its_chosen_chunks(backend):
    """An upper layer with the memory given: changing the keys and values of a chunk that a
    query did not choose (visible or local) leaves that query's output exactly as it was;
    changing a chosen one does not."""
    model = make_model(n_layers=3, backend=backend)  # layer 1 builds the memory, layer 2 reads it
    mixer = model.blocks[2].mixer
    x, T, t = inputs(B=1, T=48, seed=3), 48, 40
    memory = model.blocks[1].mixer.chunker(inputs(B=1, T=48, seed=4), 12)
    with torch.no_grad():
        q_select = split_heads(mixer.retrieval.queries(x).chunk(2, dim=-1)[0], HEADS)
        idx, weights = mixer.retrieval.select(q_select, memory, torch.arange(T))
        local, retrieved = mixer(x, {MEMORY: memory})

    def perturbed_row(h: int, c: int) -> torch.Tensor:
        changed = ChunkMemory(memory.landmarks, memory.keys.clone(), memory.values.clone())
        changed.keys[0, h, c] += 5.0
        changed.values[0, h, c] -= 5.0
        with torch.no_grad():
            new_local, new_retrieved = mixer(x, {MEMORY: changed})
        torch.testing.assert_close(new_local, local, atol=0, rtol=0)
        return new_retrieved[0, t]

    for h in range(HEADS):
        chosen = set(idx[0, h, t][weights[0, h, t] > 0].tolist())
        assert len(chosen) == mixer.top_k == 3
        for c in range(12):  # chunks 0 .. 8 are visible at t = 40; 9 .. 11 are local or later
            row = perturbed_row(h, c)
            if c in chosen:
                assert (row - retrieved[0, t]).abs().max() > 1e-4
            else:
                torch.testing.assert_close(row, retrieved[0, t], atol=0, rtol=0)


# --- the stack: causality, decode = forward -----------------------------------------------------
@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("bypass", [True, False])
def test_causal_through_the_stack(n_layers, bypass):
    model = make_model(n_layers, bypass=bypass)
    for cut in (5, 17, 31):
        assert_causal(Stack(model), inputs(), cut)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("backend", ["auto", "gather", "dense"])
@pytest.mark.parametrize("n_prompt", [1, 8, 13])
def test_decode_equals_the_parallel_forward(n_layers, backend, n_prompt):
    model = make_model(n_layers, backend=backend)
    assert_decode_matches_forward(Stack(model), inputs(), n_prompt)


def test_decode_equals_the_forward_without_bypass_and_with_two_encoder_layers():
    model = make_model(3, bypass=False, encoder_layers=2)
    assert_decode_matches_forward(Stack(model), inputs(seed=5), 6)


def test_decode_equals_the_forward_when_every_step_encodes_as_under_graph_capture(monkeypatch):
    """A captured CUDA graph cannot branch on the position: it encodes the buffer every step."""
    calls = []
    encode = hsa.Chunker.forward

    def counted(self, x, n_chunks):
        calls.append(n_chunks)
        return encode(self, x, n_chunks)

    monkeypatch.setattr(hsa, "capturing_graph", lambda t: True)
    monkeypatch.setattr(hsa.Chunker, "forward", counted)
    model = make_model(2)
    x = inputs()
    with torch.no_grad():
        _, states = Stack(model).prefill(x[:, :10], max_len=40)
        calls.clear()
        Stack(model).decode_step(x[:, 10], states)
    assert calls == [1]
    monkeypatch.undo()
    assert_decode_matches_forward(Stack(make_model(2)), x, 10)


def test_the_encoder_runs_once_per_completed_chunk_when_decoding(monkeypatch):
    calls = []
    encode = hsa.Chunker.forward

    def counted(self, x, n_chunks):
        calls.append(n_chunks)
        return encode(self, x, n_chunks)

    monkeypatch.setattr(hsa.Chunker, "forward", counted)
    model, x = make_model(3), inputs()
    with torch.no_grad():
        _, states = Stack(model).prefill(x[:, :10], max_len=40)  # chunks 0, 1 complete
        assert calls == [2]
        for t in range(10, 30):  # chunks 2 .. 6 complete at positions 11, 15, ..., 27
            Stack(model).decode_step(x[:, t], states)
    assert calls == [2] + [1] * 5


def test_static_decoding_keeps_its_state_in_place_and_reads_nothing_back():
    model = make_model(3)
    tokens = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(6))
    decoder = StaticDecoder(model, max_len=40, autocast=contextlib.nullcontext, use_graph=False)
    stepped = [decoder.prefill(tokens[:, :9])]
    layout = [(t.data_ptr(), t.shape) for t in state_tensors(decoder.states)]
    with no_host_reads():
        for t in range(9, 39):  # seven chunks complete on the way
            stepped.append(decoder.step(tokens[:, t]).clone())
    assert [(t.data_ptr(), t.shape) for t in state_tensors(decoder.states)] == layout
    with torch.no_grad():
        full = model(tokens)
    torch.testing.assert_close(torch.stack(stepped, 1), full[:, 8:-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["gather", "dense"])
def test_a_training_step_with_retrieval_reads_nothing_back(backend):
    model = make_model(3, backend=backend).train()
    tokens = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(8))
    with no_host_reads():
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    assert model.mixers[2].backend == f"sdpa-window+torch-{backend}"
    assert model.mixers[1].chunker.encoder.cls.grad.abs().max() > 0


def test_the_state_refuses_more_positions_than_it_holds():
    stack = Stack(make_model(2))
    with pytest.raises(ValueError, match="holds 8 positions"), torch.no_grad():
        stack.prefill(inputs(T=9), max_len=8)
    with torch.no_grad():
        _, states = stack.prefill(inputs(T=8), max_len=8)
        with pytest.raises(ValueError, match="holds 8 positions"):
            stack.decode_step(inputs(T=1)[:, 0], states)


# --- the model's parts --------------------------------------------------------------------------
@pytest.mark.parametrize("n_layers, lower, middle", [(1, 0, 0), (2, 1, 1), (3, 1, 1), (6, 3, 3)])
def test_lower_half_windows_only_middle_layer_chunks_upper_half_retrieves(n_layers, lower, middle):
    model = make_model(n_layers)
    assert all(isinstance(block, HSABlock) for block in model.blocks)
    for i, mixer in enumerate(model.mixers):
        assert (mixer.retrieval is not None) == (i >= lower)
        assert (mixer.chunker is not None) == (i == middle)


def test_bypass_routes_the_retrieved_part_into_the_mlp_input_only():
    block_on, block_off = make_model(2).blocks[1], make_model(2, bypass=False).blocks[1]
    x = inputs(T=40, seed=7)
    with torch.no_grad():
        local, retrieved = block_on.mixer(block_on.norm_mixer(x), {})
        assert retrieved.abs().max() > 1e-4
        # The MLP sees x + local + retrieved in both; only the residual stream differs.
        torch.testing.assert_close(block_off(x, {}) - block_on(x, {}), retrieved)
        for block in (block_on, block_off):
            nn.init.zeros_(block.mlp.w_out.weight)
        torch.testing.assert_close(block_on(x, {}), x + local)  # no direct path
        torch.testing.assert_close(block_off(x, {}), x + local + retrieved)


def test_top_k_stays_a_small_share_of_the_chunks_visible_at_the_training_length():
    def selected(context: int, **options) -> int:
        defaults = MODELS.get("hsa").obj.default_options
        cfg = MixerConfig(D, HEADS, 0, 2, context, {**defaults, **options})
        return HSAOptions.from_config(cfg).selected(context)

    assert selected(4096 + 64) == 8  # 64 chunks outside the window: 8 of them
    assert selected(4096) == 7  # 63 visible: at most an eighth
    assert selected(1024) == 2 and selected(64) == 2  # never below two
    assert selected(1024, max_selected_fraction=0.5) == 7
    extras = make_model(2).mixers[1].record_extras()
    assert extras == {"top_k": 3, "visible_chunks_at_training_length": 15}


@pytest.mark.parametrize("budget", ["tiny", "cpu"])
@pytest.mark.parametrize("context", [16, 256, 1024])
def test_parameters_match_the_budget(budget, context):
    b = load_budget(budget)
    spec = MODELS.get("hsa").obj
    target = b["params"]["non_embedding"]
    arch, count = solve_architecture(spec, spec.default_options, target, b["arch"]["n_layers"],
                                     b["arch"]["n_heads"], b["arch"]["ffn_ratio"], context)
    assert abs(count - target) / target <= 0.05
    assert sum(p.numel() for p in LanguageModel(arch, spec, spec.default_options).parameters()) \
        - arch.vocab_size * arch.d_model == count


@pytest.mark.parametrize("options, match", [
    ({"backend": "flash"}, "backend"),
    ({"window": 0}, "window"),
    ({"chunk_size": -4}, "chunk_size"),
    ({"chunk_size": 8.0}, "chunk_size"),
    ({"top_k": 1}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"encoder_layers": 3}, "encoder_layers"),
    ({"max_selected_fraction": 0.0}, "max_selected_fraction"),
    ({"max_selected_fraction": 1.5}, "max_selected_fraction"),
    ({"bypass": "yes"}, "bypass"),
])
def test_bad_options_are_usage_errors(options, match):
    with pytest.raises(UsageError, match=match):
        make_model(2, **options)


@pytest.mark.parametrize("d_model, n_heads", [(30, 4), (36, 4)])  # 30 / 4 uneven; 36 / 4 = 9 odd
def test_widths_without_an_even_head_dimension_are_usage_errors(d_model, n_heads):
    cfg = MixerConfig(d_model, n_heads, 0, 2, 64, dict(MODELS.get("hsa").obj.default_options))
    with pytest.raises(UsageError, match="even head dimension"):
        HSAOptions.from_config(cfg)
