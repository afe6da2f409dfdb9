"""The linear-recurrence baselines linear_attn and gla: the mixer contract (causality,
decode == forward), backend agreement, backend options, registry builds inside a
LanguageModel, parameter scaling; and (on CUDA) the fla path against the reference.

The mixer-building functions here are reused by test_mamba2.py."""

from __future__ import annotations

import math

import pytest
import torch

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.mixer import MixerConfig
from bimix_bench.ops.fla_linear_recurrence import load_fla, per_token_backward_problem
from bimix_bench.ops.recurrent_mixer import RecurrentMixer
from bimix_bench.registry import MODELS
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
    relative_error,
)

MODELS_HERE = ("linear_attn", "gla")
# Small options that exercise several chunks and heads at test sizes.
TEST_OPTIONS = {"linear_attn": {"chunk_size": 16}, "gla": {"chunk_size": 16},
                "mamba2": {"chunk_size": 16, "head_dim": 16, "d_state": 16}}


def build_mixer(name: str, dtype=torch.float64, d_model: int = 32, n_heads: int = 4, seed: int = 0,
                **options) -> RecurrentMixer:
    """A registered mixer with randomized (O(1)-output) parameters, so that every path
    through it matters numerically."""
    spec = MODELS.get(name).obj
    opts = {**spec.default_options, **TEST_OPTIONS.get(name, {}), **options}
    torch.manual_seed(seed)
    mixer = spec.mixer_cls(MixerConfig(d_model, n_heads, layer_idx=0, n_layers=2, max_seq_len=64, options=opts))
    randomize_(mixer, seed)
    return mixer.to(dtype)


def randomize_(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.dim() >= 2:
                p.copy_(noise / math.sqrt(p.shape[-1]))
            elif name.endswith("dt_bias"):
                p.copy_(0.5 * noise - 1.0)  # dt = softplus(.) around 0.3: memory over tens of tokens
            else:
                p.add_(0.1 * noise)


def inputs(dtype=torch.float64, B: int = 2, T: int = 37, D: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def with_backend(mixer: RecurrentMixer, backend: str):
    def call(x: torch.Tensor) -> torch.Tensor:
        mixer.requested_backend = backend
        return mixer(x)

    return call


def tiny_arch(head: str, d_model: int = 32) -> Architecture:
    return Architecture(d_model=d_model, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=32,
                        head=head, n_classes=3 if head == "cls" else 0)


# --- the mixer contract ------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS_HERE)
def test_causal(name):
    assert_causal(build_mixer(name), inputs(), cut=19, atol=1e-10)


@pytest.mark.parametrize("name", MODELS_HERE)
@pytest.mark.parametrize("n_prompt", [0, 1, 20])
def test_decode_matches_forward(name, n_prompt):
    mixer = build_mixer(name)
    if n_prompt == 0:  # no prompt: decode from the empty state
        x = inputs(T=9)
        state = mixer.init_decode_state(2, 9, x.device, x.dtype)
        with torch.no_grad():
            steps = torch.stack([mixer.decode_step(x[:, t], state) for t in range(9)], dim=1)
            torch.testing.assert_close(steps, mixer(x), atol=1e-10, rtol=1e-10)
        return
    assert_decode_matches_forward(mixer, inputs(), n_prompt, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", MODELS_HERE)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_chunked_and_recurrent_backends_agree(name, dtype, tol):
    mixer = build_mixer(name, dtype=dtype)
    assert_same_outputs_and_grads(
        with_backend(mixer, "recurrent"), with_backend(mixer, "chunked"), [inputs(dtype)],
        params=list(mixer.parameters()), atol=tol, rtol=tol,
    )


@pytest.mark.parametrize("name", MODELS_HERE)
def test_backend_is_recorded(name):
    mixer = build_mixer(name)
    mixer(inputs())
    assert mixer.backend == "chunked" and "CUDA" in mixer.backend_reason
    mixer.requested_backend = "recurrent"
    mixer(inputs())
    assert mixer.backend == "recurrent"


@pytest.mark.parametrize("name", MODELS_HERE)
def test_backend_options_are_checked(name):
    with pytest.raises(UsageError):
        build_mixer(name, backend="cuda-magic")
    if not torch.cuda.is_available():
        with pytest.raises(SkipCell, match="fla"):
            build_mixer(name, backend="fla")


def test_linear_attention_output_gate_changes_outputs():
    x = inputs()
    plain, gated = build_mixer("linear_attn"), build_mixer("linear_attn", output_gate=True)
    assert gated.gate is not None and plain.gate is None
    assert_causal(gated, x, cut=19, atol=1e-10)
    assert_decode_matches_forward(gated, x, 20, atol=1e-10, rtol=1e-10)


# --- inside the shared model -------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS_HERE)
@pytest.mark.parametrize("head", ["lm", "cls"])
def test_builds_in_language_model(name, head):
    spec = MODELS.get(name).obj
    torch.manual_seed(0)
    model = LanguageModel(tiny_arch(head), spec, {**spec.default_options, **TEST_OPTIONS.get(name, {})})
    tokens = torch.randint(0, model.arch.vocab_size, (2, 24))
    out = model(tokens) if head == "lm" else model(tokens, lengths=torch.tensor([24, 10]))
    assert out.shape == ((2, 24, model.arch.vocab_size) if head == "lm" else (2, 3))
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if head == "lm":  # generation through the model: prefill + decode == forward
        model.eval()
        with torch.no_grad():
            full = model(tokens)
            last, states = model.prefill(tokens[:, :16], max_len=24)
            torch.testing.assert_close(last, full[:, 15], atol=1e-4, rtol=1e-4)
            for t in range(16, 24):
                torch.testing.assert_close(model.decode_step(tokens[:, t], states), full[:, t], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS_HERE + ("mamba2",))
def test_parameter_count_grows_smoothly(name):
    """The engine solves d_model for a parameter budget: counts must rise monotonically and
    without jumps between neighbouring admissible widths."""
    spec = MODELS.get(name).obj
    counts = []
    widths = list(range(16, 257, 8))  # multiples of 2 * n_heads with n_heads = 4
    for d in widths:
        cfg = MixerConfig(d, 4, layer_idx=0, n_layers=2, max_seq_len=64, options=dict(spec.default_options))
        counts.append(sum(p.numel() for p in spec.mixer_cls(cfg).parameters()))
    assert all(b > a for a, b in zip(counts, counts[1:]))
    for d0, d1, c0, c1 in zip(widths, widths[1:], counts, counts[1:]):
        assert c1 / c0 < 1.25 * (d1 / d0) ** 2, (d0, d1, c0, c1)


# --- fla on CUDA -----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or load_fla()[0] is None, reason="needs CUDA and fla-core")
@pytest.mark.parametrize("name", MODELS_HERE)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_fla_model_path_matches_chunked(name, dtype, tol):
    if name == "gla" and per_token_backward_problem(torch.device("cuda")):
        pytest.skip(per_token_backward_problem(torch.device("cuda")))
    mixer = build_mixer(name, dtype=dtype, d_model=256, n_heads=4, chunk_size=64).cuda()
    x = inputs(dtype, B=2, T=300, D=256).cuda().requires_grad_(True)
    results = {}
    for backend in ("fla", "chunked"):
        mixer.zero_grad()
        x.grad = None
        mixer.requested_backend = backend
        y = mixer(x)
        assert mixer.backend == backend
        y.float().square().mean().backward()
        results[backend] = [y, x.grad] + [p.grad for p in mixer.parameters()]
    for i, (a, b) in enumerate(zip(results["fla"], results["chunked"])):
        assert relative_error(a, b) < tol, f"tensor {i}: {relative_error(a, b)}"
    mixer.requested_backend = "auto"
    with torch.no_grad():
        mixer(x)
    assert mixer.backend == "fla"
