"""The Transformer baseline: attention paths, RoPE, causality, KV-cache decoding, registry."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend

from bimix_bench.baselines.transformer import CausalSelfAttention
from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.mixer import MixerConfig, ModelSpec
from bimix_bench.models.tokenizer import VOCAB_SIZE
from bimix_bench.ops import rotary
from bimix_bench.ops.attention import (
    KVCache,
    attention_over_cache,
    SdpaKernelChooser,
    attention_reference,
    attention_sdpa,
    causal_mask,
)
from bimix_bench.ops.rotary import apply_rope, rope_at, rope_cos_sin
from bimix_bench.registry import MODELS
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
)

TOLERANCES = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_mixer(backend: str, d_model: int = 32, n_heads: int = 4, **options) -> CausalSelfAttention:
    cfg = MixerConfig(d_model, n_heads, layer_idx=0, n_layers=2, max_seq_len=64,
                      options={"backend": backend, **options})
    return CausalSelfAttention(cfg)


def qkv(shape: tuple[int, int, int, int], dtype=torch.float32, device="cpu") -> list[torch.Tensor]:
    """Seeded q, k, v of shape (B, H, T, Dh)."""
    B, H, T, Dh = shape
    g = torch.Generator().manual_seed(B * 1000 + T)
    q = torch.randn(B, H, T, Dh, generator=g, dtype=dtype)
    k, v = (torch.randn(B, H, T, Dh, generator=g, dtype=dtype) for _ in range(2))
    return [t.to(device) for t in (q, k, v)]


# --- attention: reference vs SDPA ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (2, 3, 7, 16), (1, 2, 33, 8), (2, 2, 97, 32)])
@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_sdpa(dtype, shape, causal):
    assert_same_outputs_and_grads(
        lambda q, k, v: attention_reference(q, k, v, causal),
        lambda q, k, v: attention_sdpa(q, k, v, causal)[0],
        qkv(shape, dtype=dtype),
        **TOLERANCES[dtype],
    )


@pytest.mark.parametrize("t_query,t_key", [(1, 9), (5, 13), (4, 4)])
def test_fewer_queries_than_keys_are_end_aligned(t_query, t_key):
    q_full, k, v = qkv((2, 2, t_key, 8), dtype=torch.float64)
    q = q_full[:, :, -t_query:]
    # Queries at the end of a longer sequence see exactly what they saw in the full pass.
    full = attention_reference(q_full, k, v)
    torch.testing.assert_close(attention_reference(q, k, v), full[:, :, -t_query:])
    assert_same_outputs_and_grads(
        lambda q, k, v: attention_reference(q, k, v),
        lambda q, k, v: attention_sdpa(q, k, v)[0],
        [q, k, v],
        **TOLERANCES[torch.float64],
    )


def test_reference_first_query_sees_only_first_key():
    q, k, v = qkv((2, 3, 6, 8))
    torch.testing.assert_close(attention_reference(q, k, v)[:, :, 0], v[:, :, 0])


def test_causal_mask_shape_and_guard():
    assert causal_mask(3, 3, torch.device("cpu")).tolist() == [
        [True, False, False], [True, True, False], [True, True, True]
    ]
    assert causal_mask(1, 4, torch.device("cpu")).all()
    with pytest.raises(ValueError):
        causal_mask(5, 4, torch.device("cpu"))


def test_kernel_chooser_records_first_kernel_that_accepts():
    # On CPU the cuDNN and memory-efficient kernels refuse, flash accepts: the chooser must
    # skip the refusals, name the kernel that ran, and reuse it.
    chooser = SdpaKernelChooser(
        preference=(("cudnn", SDPBackend.CUDNN_ATTENTION),
                    ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                    ("flash", SDPBackend.FLASH_ATTENTION)),
        fallback=("math", SDPBackend.MATH),
    )
    q, k, v = qkv((1, 2, 11, 8))
    out, name = chooser(q, k, v, causal=True)
    assert name == "flash"
    torch.testing.assert_close(out, attention_reference(q, k, v))
    assert list(chooser.choices.values()) == [("flash", SDPBackend.FLASH_ATTENTION)]
    assert chooser(q, k, v, causal=True)[1] == "flash"

    only_refusing = SdpaKernelChooser(
        (("cudnn", SDPBackend.CUDNN_ATTENTION),), fallback=("math", SDPBackend.MATH)
    )
    out, name = only_refusing(q, k, v, causal=True)
    assert name == "math"
    torch.testing.assert_close(out, attention_reference(q, k, v))


# --- RoPE -------------------------------------------------------------------------------------
def rotated_at(x: torch.Tensor, position: int) -> torch.Tensor:  # x: (Dh,) at one position
    cos, sin = rope_cos_sin(position, 1, x.shape[-1], x.device, x.dtype)
    return apply_rope(x[None], cos, sin)[0]


def test_rope_at_a_device_position_is_the_table_row():
    for position in (0, 7, 300):
        cos, sin = rope_at(torch.tensor([position]), 512, 8, torch.float32)
        expected = rope_cos_sin(position, 1, 8, torch.device("cpu"), torch.float32)
        torch.testing.assert_close((cos, sin), expected, atol=0, rtol=0)


def test_masked_attention_over_a_static_cache_sdpa_equals_reference():
    q, k, v = qkv((2, 4, 1, 8))[0], qkv((2, 4, 10, 8))[1], qkv((2, 4, 10, 8))[2]
    valid = torch.arange(10) <= 6
    fast = attention_over_cache(q, k, v, valid, use_sdpa=True)
    reference = attention_over_cache(q, k, v, valid, use_sdpa=False)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference, attention_reference(q, k[:, :, :7], v[:, :, :7]))


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64)
    for t, s in [(0, 0), (5, 2), (3, 9), (40, 1), (200, 123)]:
        score = rotated_at(q, t) @ rotated_at(k, s)
        for shift in (1, 7, 1000, 3000):
            shifted = rotated_at(q, t + shift) @ rotated_at(k, s + shift)
            torch.testing.assert_close(shifted, score, atol=1e-10, rtol=1e-10)
    # ...and they do depend on it, or the check above would be empty.
    scores = torch.stack([rotated_at(q, d) @ rotated_at(k, 0) for d in range(4)])
    assert (scores[1:] - scores[0]).abs().min() > 1e-3


def test_rope_layout_is_rotate_half():
    head_dim, position = 8, 3
    eye = torch.eye(head_dim, dtype=torch.float64)
    # Pair i couples coordinates i and i + Dh/2, with angle position * 10000^(-2i/Dh).
    for i in range(head_dim // 2):
        angle = torch.tensor(position * 10000.0 ** (-2 * i / head_dim), dtype=torch.float64)
        out = rotated_at(eye[i], position)
        expected = torch.zeros(head_dim, dtype=torch.float64)
        expected[i], expected[i + head_dim // 2] = angle.cos(), angle.sin()
        torch.testing.assert_close(out, expected)
    torch.testing.assert_close(rotated_at(eye[1], 0), eye[1])  # position 0: identity


def test_rope_table_made_under_inference_mode_serves_training():
    rotary._rope_table.cache_clear()
    with torch.inference_mode():
        rope_cos_sin(0, 10, 8, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 10, 8, requires_grad=True)
    cos, sin = rope_cos_sin(0, 10, 8, torch.device("cpu"), torch.float32)
    apply_rope(x, cos, sin).square().sum().backward()
    # A rotation preserves norms, so d/dx sum(rot(x)^2) = 2x.
    torch.testing.assert_close(x.grad, 2 * x.detach())


# --- the mixer --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [1, 13, 40])
def test_mixer_reference_matches_sdpa(dtype, T):
    reference = make_mixer("reference").to(dtype)
    fast = make_mixer("sdpa").to(dtype)
    fast.qkv, fast.out = reference.qkv, reference.out  # the very same weights
    x = torch.randn(2, T, 32, dtype=dtype)
    assert_same_outputs_and_grads(reference, fast, [x], params=list(reference.parameters()),
                                  **TOLERANCES[dtype])
    assert reference.backend == "torch-reference"
    assert fast.backend == "sdpa-cpu" and "sdpa" in fast.backend_reason


def test_mixer_auto_backend_runs_sdpa():
    mixer = make_mixer("auto")
    mixer(torch.randn(1, 5, 32))
    assert mixer.backend == "sdpa-cpu" and mixer.backend_reason.startswith("backend=auto")


def test_mixer_rejects_bad_options():
    with pytest.raises(UsageError):
        make_mixer("flash")
    with pytest.raises(UsageError):
        make_mixer("auto", d_model=30, n_heads=4)  # 30 / 4 is not whole
    with pytest.raises(UsageError):
        make_mixer("auto", d_model=12, n_heads=4)  # head dim 3 is odd


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("cut", [1, 7])
def test_mixer_is_causal(backend, cut):
    torch.manual_seed(1)
    assert_causal(make_mixer(backend), torch.randn(2, 12, 32), cut)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("n_prompt", [1, 4, 11, 16])
def test_decode_matches_forward(backend, n_prompt):
    torch.manual_seed(2)
    assert_decode_matches_forward(make_mixer(backend), torch.randn(2, 16, 32), n_prompt)


def test_prefill_fills_cache_and_guards_its_size():
    mixer = make_mixer("sdpa")
    _, state = mixer.prefill(torch.randn(2, 5, 32), max_len=6)
    assert isinstance(state, KVCache) and int(state.length) == 5 and state.k.shape == (2, 4, 6, 8)
    mixer.decode_step(torch.randn(2, 32), state)
    assert int(state.length) == 6
    with pytest.raises(ValueError):
        mixer.decode_step(torch.randn(2, 32), state)


# --- through the registry and the shared backbone ----------------------------------------------
def build_language_model(head: str) -> LanguageModel:
    spec = MODELS.get("transformer").obj
    arch = Architecture(d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=24,
                        head=head, n_classes=3)
    return LanguageModel(arch, spec, spec.default_options)


def test_registered_model_builds_and_runs():
    spec = MODELS.get("transformer").obj
    assert isinstance(spec, ModelSpec) and spec.default_options["backend"] == "auto"
    mixer = spec.mixer_cls(MixerConfig(32, 4, 0, 2, 24, dict(spec.default_options)))
    assert isinstance(mixer, CausalSelfAttention)

    torch.manual_seed(3)
    tokens = torch.randint(0, VOCAB_SIZE, (2, 24))
    logits = build_language_model("lm")(tokens)
    assert logits.shape == (2, 24, VOCAB_SIZE) and torch.isfinite(logits).all()
    classes = build_language_model("cls")(tokens, lengths=torch.tensor([24, 10]))
    assert classes.shape == (2, 3) and torch.isfinite(classes).all()


def test_language_model_generation_matches_forward():
    torch.manual_seed(4)
    model = build_language_model("lm").eval()
    tokens = torch.randint(0, VOCAB_SIZE, (2, 12))
    with torch.no_grad():
        logits = model(tokens)  # (B, T, V)
        last, states = model.prefill(tokens[:, :5], max_len=12)
        stepped = [last] + [model.decode_step(tokens[:, t], states) for t in range(5, 11)]
    torch.testing.assert_close(torch.stack(stepped, dim=1), logits[:, 4:11], atol=1e-4, rtol=1e-4)


# --- GPU -----------------------------------------------------------------------------------------
@gpu
@needs_cuda
def test_sdpa_bf16_matches_fp32_reference_gpu():
    q, k, v = qkv((2, 8, 1024, 64), dtype=torch.bfloat16, device="cuda")
    fast_leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref_leaves = [t.float().requires_grad_(True) for t in (q, k, v)]
    out, kernel = attention_sdpa(*fast_leaves)
    ref = attention_reference(*ref_leaves)  # float32 throughout
    assert kernel in ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient"), kernel
    # bf16 keeps 8 bits of mantissa: about 0.4% per rounding, a few roundings deep.
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    probe = torch.randn_like(ref)
    grads = torch.autograd.grad((out.float() * probe).sum(), fast_leaves)
    grads_ref = torch.autograd.grad((ref * probe).sum(), ref_leaves)
    for name, g, g_ref in zip("qkv", grads, grads_ref):
        rel = (g.float() - g_ref).norm() / g_ref.norm()
        assert rel < 3e-2, f"d{name}: relative error {rel:.3g}"


@gpu
@needs_cuda
def test_mixer_on_gpu_records_kernel_and_decodes():
    torch.manual_seed(5)
    reference = make_mixer("reference", d_model=128, n_heads=2).cuda()
    fast = make_mixer("auto", d_model=128, n_heads=2).cuda()
    fast.qkv, fast.out = reference.qkv, reference.out
    x = torch.randn(2, 200, 128, device="cuda")
    assert_same_outputs_and_grads(reference, fast, [x], params=list(reference.parameters()),
                                  atol=1e-4, rtol=1e-3)
    assert fast.backend in ("sdpa-cudnn", "sdpa-efficient", "sdpa-math"), fast.backend
    assert_decode_matches_forward(fast, x[:, :40], n_prompt=9)
    with torch.no_grad():
        fast.to(torch.bfloat16)(x.bfloat16())
    assert fast.backend in ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient"), fast.backend
    assert fast.backend in fast.backend_reason
