"""Small builders shared by the BiMix tests."""

from __future__ import annotations

from typing import Any

import torch

from bimix_bench.bimix.mixer import BiMixMixer
from bimix_bench.models.mixer import MixerConfig, TrainProgress

SMALL = {"k_dct": 8, "k_cheb": 6, "window": 16, "n_bands": 3}


def make_mixer(
    d_model: int = 32,
    n_heads: int = 4,
    max_seq_len: int = 96,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **options: Any,
) -> BiMixMixer:
    torch.manual_seed(seed)
    cfg = MixerConfig(d_model, n_heads, 0, 2, max_seq_len, {**SMALL, **options})
    return BiMixMixer(cfg).to(dtype)


def randomize_spectral(mixer: BiMixMixer, seed: int = 1) -> None:
    """Move amplitudes, decays and static gates off their structured init, so that paths
    which only agree on special values cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("dct_amplitude", "cheb_amplitude"):
            p = getattr(mixer, name)
            if p is not None:
                p.mul_(1 + 0.5 * torch.randn(p.shape, generator=gen).to(p))
        if mixer.dct_log_rate is not None:
            rate = mixer.dct_log_rate
            rate.add_(0.3 * torch.randn(rate.shape, generator=gen).to(rate))
        mixer.gates.static.copy_(torch.rand(mixer.gates.static.shape, generator=gen))


def run_backend(mixer: BiMixMixer, backend: str):
    """forward of `mixer` with a given backend, as a function of x (for mixer_contract)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        before = mixer.requested_backend
        mixer.requested_backend = backend
        try:
            return mixer(x)
        finally:
            mixer.requested_backend = before

    return forward


def to_phase_two(mixer: BiMixMixer, total_steps: int = 10) -> None:
    """Run the schedule hooks (no training) until the gating network is on, then give it
    non-trivial weights so per-token gates really vary."""
    step = 0
    while mixer.gates.current_phase == 1:
        step += 1
        mixer.after_optimizer_step(TrainProgress(step, total_steps, 1e-3))
    with torch.no_grad():
        for p in mixer.gates.network.parameters():
            if p.dim() == 2:
                p.normal_(std=2.0 * p.shape[1] ** -0.5)


def used_parameters(mixer: BiMixMixer) -> list[torch.nn.Parameter]:
    """Parameters the current phase's forward depends on."""
    phase_one = mixer.gates.current_phase == 1
    out = []
    for name, p in mixer.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("gates.network") and phase_one:
            continue
        if name == "gates.static" and not phase_one:
            continue
        out.append(p)
    return out
