"""The BiMix mixer: contract checks on every CPU path, ablations, options, sizing, backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bimix_bench.bimix.decode import band_amplitudes, dct_feature_table, gated_dct_weights
from bimix_bench.bimix.kernels import reference
from bimix_bench.bimix.kernels.basis import band_index, dct_query_key_features
from bimix_bench.bimix.kernels.chunked import gated_dct_queries_keys
from bimix_bench.bimix.mixer import ABLATIONS, DEFAULT_OPTIONS, BiMixMixer
from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.mixer import MixerConfig
from bimix_bench.registry import MODELS
from tests.bimix_fixtures import (
    make_mixer,
    randomize_spectral,
    run_backend,
    to_phase_two,
    used_parameters,
)
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
)

CPU_PATHS = ["reference", "chunked"]  # "auto" on CPU is "chunked" (test_cpu_backend_choice)


@pytest.mark.parametrize("backend", CPU_PATHS)
@pytest.mark.parametrize("phase", [1, 2])
def test_causal(backend, phase):
    mixer = make_mixer(backend=backend)
    randomize_spectral(mixer)
    if phase == 2:
        to_phase_two(mixer)
    assert_causal(mixer, torch.randn(2, 40, 32), cut=23)


@pytest.mark.parametrize("backend", CPU_PATHS)
@pytest.mark.parametrize("phase", [1, 2])
def test_decode_matches_forward(backend, phase):
    """T = 40 > 2 W wraps the ring buffer; the prompt is shorter than W."""
    mixer = make_mixer(backend=backend)
    randomize_spectral(mixer)
    if phase == 2:
        to_phase_two(mixer)
    assert_decode_matches_forward(mixer, torch.randn(2, 40, 32), n_prompt=11)


@pytest.mark.parametrize("n_prompt", [1, 2, 20])  # shorter than the conv history; longer than W
def test_decode_after_prompts_of_any_length(n_prompt):
    mixer = make_mixer(backend="chunked")
    randomize_spectral(mixer)
    assert_decode_matches_forward(mixer, torch.randn(1, n_prompt + 4, 32), n_prompt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_decode_step_never_makes_the_host_wait_for_the_gpu():
    """A wait per layer and token would drain the launch queue at every step (host_share)."""
    from bimix_bench.speed.host_share import sync_sites

    mixer = make_mixer(backend="chunked").cuda()
    with torch.no_grad():
        _, state = mixer.prefill(torch.randn(2, 12, 32, device="cuda"), max_len=20)
        step = torch.randn(2, 32, device="cuda")
        assert sync_sites(lambda: mixer.decode_step(step, state), torch.device("cuda")) == ()


@pytest.mark.parametrize("phase", [1, 2])
def test_chunked_equals_reference_through_the_mixer(phase):
    mixer = make_mixer().double()
    randomize_spectral(mixer)
    if phase == 2:
        to_phase_two(mixer)
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    assert_same_outputs_and_grads(
        run_backend(mixer, "reference"), run_backend(mixer, "chunked"), [x],
        used_parameters(mixer), atol=1e-10, rtol=1e-8,
    )


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_builds_trains_and_decodes(ablation):
    mixer = make_mixer(ablation=ablation)
    randomize_spectral(mixer)
    if mixer.gates.network is not None:
        to_phase_two(mixer)
    x = torch.randn(2, 24, 32, requires_grad=True)
    mixer.train()
    y = mixer(x)
    aux = mixer.aux_loss()
    loss = y.square().sum() + (aux if aux is not None else 0)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert_decode_matches_forward(mixer, x.detach(), n_prompt=9)


@pytest.mark.parametrize("kept,dropped", [("dct", "cheb"), ("cheb", "dct")])
def test_single_branch_ablation_really_drops_the_other_branch(kept, dropped):
    """dct_only == the full model with every Chebyshev gate at 0 (and vice versa), and the
    dropped branch has no parameters."""
    single = make_mixer(ablation=f"{kept}_only").double()
    full = make_mixer().double()
    randomize_spectral(full)
    assert getattr(single, f"{dropped}_amplitude") is None
    assert single.settings.branches == (kept,) and single.gates.static.shape[1] == 1
    kept_index = full.settings.branches.index(kept)
    with torch.no_grad():
        full.gates.static[:, 1 - kept_index] = 0.0
        for name, p in single.named_parameters():
            if name.startswith("gates.network"):  # unused while the gates are static
                continue
            src = dict(full.named_parameters())[name]
            p.copy_(src[:, kept_index : kept_index + 1] if name == "gates.static" else src)
    x = torch.randn(2, 33, 32, dtype=torch.float64)
    torch.testing.assert_close(single(x), full(x), atol=1e-12, rtol=0)
    assert single.backend == f"{kept}=chunked"


def test_parameter_count_is_a_smooth_quadratic_in_width():
    """The budget solver searches d_model: the count must be one polynomial (no jumps)."""
    widths = np.arange(64, 64 + 8 * 8, 8)
    counts = []
    for d in widths:
        cfg = MixerConfig(int(d), 8, 0, 2, 256, {})
        counts.append(sum(p.numel() for p in BiMixMixer(cfg).parameters()))
    assert np.all(np.diff(counts, n=3) == 0)
    assert np.all(np.diff(counts) > 0)


def test_registered_with_documented_options():
    entry = MODELS.get("bimix")
    assert entry.obj.mixer_cls is BiMixMixer
    assert entry.obj.default_options == DEFAULT_OPTIONS
    for key in ("k_dct", "k_cheb", "window", "n_bands", "tv_lambda", "gate_phase_frac",
                "distill_alpha", "gate_rank", "ablation", "backend"):
        assert key in DEFAULT_OPTIONS
    assert (DEFAULT_OPTIONS["k_dct"], DEFAULT_OPTIONS["k_cheb"], DEFAULT_OPTIONS["window"]) == (32, 16, 128)
    assert (DEFAULT_OPTIONS["n_bands"], DEFAULT_OPTIONS["tv_lambda"]) == (4, 0.05)


@pytest.mark.parametrize("options", [{"ablation": "nope"}, {"backend": "cuda"}, {"k_dct": 0}, {"bogus": 1}])
def test_invalid_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        BiMixMixer(MixerConfig(32, 4, 0, 2, 64, options))


def test_tiny_context_clamps_sizes_and_still_runs():
    mixer = BiMixMixer(MixerConfig(16, 2, 0, 1, 6, {}))
    s = mixer.settings
    assert (s.window, s.k_cheb, s.k_dct, s.horizon) == (6, 6, 6, 6)
    assert s.n_bands == 4
    x = torch.randn(1, 6, 16)
    assert_causal(mixer, x, cut=3)
    one = BiMixMixer(MixerConfig(16, 2, 0, 1, 1, {}))  # context of one token
    assert one.settings.window == 2 and one.settings.n_bands == 1
    assert one(torch.randn(1, 1, 16)).shape == (1, 1, 16)


def test_init_gives_unit_peak_gain_and_spread_half_lives():
    mixer = make_mixer(n_heads=4, max_seq_len=512, k_dct=32, k_cheb=16, window=64)
    spec = mixer.spectral()
    a, log_rho = spec.dct_amplitude.detach().double(), spec.log_rho.detach().double()
    dct = reference.dct_band_kernels(a, log_rho, 512, 1, 512)[:, 0]
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(reference.peak_gain(dct), ones, atol=1e-6, rtol=0)
    cheb = spec.cheb_kernels().detach().double().sum(1)
    torch.testing.assert_close(reference.peak_gain(cheb), ones, atol=1e-6, rtol=0)
    half_lives = torch.log(torch.tensor(0.5)) / spec.log_rho.detach()
    torch.testing.assert_close(half_lives[[0, -1]], torch.tensor([64.0, 8192.0]), rtol=1e-4, atol=0)
    assert torch.all(half_lives.diff() > 0)


def test_cpu_backend_choice_and_unavailable_forced_backends(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    mixer = make_mixer()
    x = torch.randn(1, 8, 32)
    mixer(x)
    assert mixer.backend == "dct=chunked,cheb=chunked"
    assert "CPU" in mixer.backend_reason or "cuda" in mixer.backend_reason.lower()
    for forced in ("fla", "triton"):
        mixer.requested_backend = forced
        with pytest.raises(SkipCell):
            mixer(x)


def test_language_model_with_bimix_trains_and_generates():
    spec = MODELS.get("bimix").obj
    arch = Architecture(d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=40)
    torch.manual_seed(0)
    model = LanguageModel(arch, spec, {**DEFAULT_OPTIONS, "window": 16, "k_dct": 8, "k_cheb": 8})
    tokens = torch.randint(0, 256, (2, 40))
    logits = model(tokens)
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "gates.network" not in n)
    model.eval()
    with torch.no_grad():
        full = model(tokens)
        last, states = model.prefill(tokens[:, :30], max_len=40)
        torch.testing.assert_close(last, full[:, 29], atol=1e-4, rtol=1e-4)
        for t in range(30, 40):
            step = model.decode_step(tokens[:, t], states)
            torch.testing.assert_close(step, full[:, t], atol=1e-4, rtol=1e-4)


def test_decode_tables_give_the_forward_features_and_gated_queries_bit_for_bit():
    """What a decode step reads from its state instead of recomputing per token: the feature
    table's row of a position is that position's features, and the gated DCT weights (a
    product of the gates with the per-band amplitudes) are exactly each frequency's band gate
    times its amplitude, as indexing the gates by band gives them."""
    H, K, NB, horizon = 3, 12, 4, 64
    amplitude = torch.randn(H, K)
    gates = torch.rand(2, H, NB)
    table = dct_feature_table(50, K, horizon, torch.float32, torch.device("cpu"))
    q_row, k_row = dct_query_key_features(torch.tensor([37]), K, horizon, torch.float32)
    assert torch.equal(table[37, 0], q_row[0]) and torch.equal(table[37, 1], k_row[0])
    by_index = (gates[..., band_index(K, NB)] * amplitude).repeat(1, 1, 2)  # (2, H, 2K)
    assert torch.equal(gated_dct_weights(gates, band_amplitudes(amplitude, NB)), by_index)
    q, k = gated_dct_queries_keys((q_row, k_row), gates[:, None], amplitude, torch.float32)
    assert torch.equal(q[:, 0], by_index * q_row[0]) and torch.equal(k, k_row)
