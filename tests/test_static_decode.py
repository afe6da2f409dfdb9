"""Static decoding, for every registered model: the decoded logits equal the parallel forward's,
every state tensor keeps its shape and address from step to step (what CUDA graph capture
needs), and no decode step reads a value back to the host. On a GPU: replaying the captured
graph gives the eager step's logits."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.static_decode import StaticDecoder, state_tensors
from bimix_bench.registry import MODELS
from tests.host_reads import ComputeOpCounter, no_host_reads

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

def tiny_model(name: str, device: str = "cpu", width: int = 32) -> LanguageModel:
    spec = MODELS.get(name).obj
    step = math.lcm(4, spec.width_multiple)
    width = step * -(-width // step)
    torch.manual_seed(0)
    model = LanguageModel(Architecture(width, 2, 2, 2 * width, 64, "lm", 0, vocab_size=97), spec,
                          dict(spec.default_options))
    return model.to(device).eval()


def decode_against_forward(model: LanguageModel, tokens: torch.Tensor, n_prompt: int,
                           use_graph: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    decoder = StaticDecoder(model, max_len=tokens.shape[1], autocast=contextlib.nullcontext,
                            use_graph=use_graph)
    stepped = [decoder.prefill(tokens[:, :n_prompt])]
    for t in range(n_prompt, tokens.shape[1] - 1):
        stepped.append(decoder.step(tokens[:, t]).clone())
    with torch.no_grad():
        full = model(tokens)  # (B, T, V)
    return stepped, full[:, n_prompt - 1 : -1]


@pytest.mark.parametrize("name", MODELS.names())
def test_static_decode_equals_the_parallel_forward(name):
    model = tiny_model(name)
    tokens = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    stepped, expected = decode_against_forward(model, tokens, 7, use_graph=False)
    torch.testing.assert_close(torch.stack(stepped, dim=1), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS.names())
def test_decode_steps_keep_shapes_and_addresses_and_read_nothing_back(name):
    model = tiny_model(name)
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    decoder = StaticDecoder(model, max_len=16, autocast=contextlib.nullcontext, use_graph=False)
    decoder.prefill(tokens[:, :5])
    layout = [(t.data_ptr(), t.shape, t.dtype) for t in state_tensors(decoder.states)]
    assert layout, "a decode state with no tensors"
    with no_host_reads():
        for t in range(5, 12):
            decoder.step(tokens[:, t])
    assert [(t.data_ptr(), t.shape, t.dtype) for t in state_tensors(decoder.states)] == layout
    decoder.prefill(tokens[:, :3])  # a new prompt lands in the same tensors
    assert [(t.data_ptr(), t.shape, t.dtype) for t in state_tensors(decoder.states)] == layout


def decode_step_ops(name: str) -> int:
    model = tiny_model(name, width=64)
    decoder = StaticDecoder(model, max_len=40, autocast=contextlib.nullcontext, use_graph=False)
    tokens = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(5))
    decoder.prefill(tokens[:, :20])
    decoder.step(tokens[:, 20])
    with ComputeOpCounter() as counter:
        decoder.step(tokens[:, 21])
    return counter.count


def test_bimix_decode_step_computes_within_1_75x_the_transformers_ops():
    """At batch 1 a graph-replayed step costs about one kernel per op. BiMix's step once
    recomputed its Chebyshev band kernels from the weights every token (275 ops for two
    layers against the Transformer's 101); they now live in the decode state."""
    assert decode_step_ops("bimix") <= 1.75 * decode_step_ops("transformer")


def forward_ops(name: str) -> int:
    model = tiny_model(name, width=64)
    tokens = torch.randint(0, 97, (2, 64), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        model(tokens)  # size-only constants (bases, band partitions, lags) are built once
        with ComputeOpCounter() as counter:
            model(tokens)
    return counter.count


def test_bimix_forward_computes_within_2x_the_transformers_ops():
    """BiMix's forward once rebuilt its Chebyshev basis, DCT position features, band
    partitions and Toeplitz lags in every call and looped over bands: 352 ops for two layers
    against the Transformer's 82. Size-only tensors are now cached (ops/constants.py) and the
    bands are one einsum: 160 on these CPU paths, most of the rest the shared chunked
    linear-recurrence op (fla's kernels on a GPU)."""
    assert forward_ops("bimix") <= 2.0 * forward_ops("transformer")


def test_the_guard_catches_a_host_read():
    x = torch.arange(3)
    with pytest.raises(AssertionError), no_host_reads():
        x[0].item()
    with pytest.raises(AssertionError), no_host_reads():
        x.tolist()


def test_a_full_state_refuses_another_step():
    model = tiny_model("transformer")
    decoder = StaticDecoder(model, max_len=6, autocast=contextlib.nullcontext, use_graph=False)
    tokens = torch.randint(0, 97, (1, 6))
    decoder.prefill(tokens[:, :5])
    decoder.step(tokens[:, 5])
    with pytest.raises(ValueError, match="holds 6 positions"):
        decoder.step(tokens[:, 5])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MODELS.names())
def test_cuda_graph_replay_equals_eager_gpu(name):
    # Width 128: fla's chunked kernels fault (misaligned address) on GLA's 8-wide keys at
    # width 32, and a fault poisons the CUDA context for every later test.
    model = tiny_model(name, "cuda", width=128)
    tokens = torch.randint(0, 97, (2, 24), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    graphed, expected = decode_against_forward(model, tokens, 9, use_graph=True)
    eager, _ = decode_against_forward(model, tokens, 9, use_graph=False)
    torch.testing.assert_close(torch.stack(graphed, 1), torch.stack(eager, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(graphed, 1), expected, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", MODELS.names())
def test_a_training_step_reads_nothing_back(name):
    """Forward, backward, clipping and the mixers' own updates: no host read (the optimizer's
    step counter lives on the host by design and is left out)."""
    from bimix_bench.models.mixer import TrainProgress

    model = tiny_model(name).train()
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    with no_host_reads():
        for step in (1, 2):
            logits = model(tokens)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
            for mixer in model.mixers:
                extra = mixer.aux_loss()
                loss = loss if extra is None else loss + extra
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for mixer in model.mixers:
                mixer.after_optimizer_step(TrainProgress(step, 4, 1e-3))


@pytest.mark.parametrize("name", MODELS.names())
def test_an_inference_forward_reads_nothing_back(name):
    """The forward that `speed` and the records time for inference (no gradients, eval mode):
    no host read, so on a GPU it never waits for the device."""
    model = tiny_model(name)
    tokens = torch.randint(0, 97, (2, 64), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        model(tokens)  # size-only constants are built on the first call
        with no_host_reads():
            model(tokens)
