"""BiMix gates: the three-phase schedule, the proximal step, distillation, checkpoints."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.bimix import gate_solver
from bimix_bench.bimix.gating import LOGIT_CLAMP
from bimix_bench.engine.optim import build_optimizer
from bimix_bench.models.mixer import TrainProgress
from tests.bimix_fixtures import make_mixer, randomize_spectral

TOTAL = 10


def step(mixer, k: int, lr: float = 1e-3) -> None:
    mixer.after_optimizer_step(TrainProgress(k, TOTAL, lr))


def test_phase_switches_at_the_configured_fraction_and_ends_in_phase_three():
    mixer = make_mixer(gate_phase_frac=0.3)
    phases = []
    for k in range(1, TOTAL + 1):
        step(mixer, k)
        phases.append(mixer.gates.current_phase)
    assert phases == [1, 1, 2, 2, 2, 2, 2, 2, 2, 3]
    assert int(mixer.gates.phase) == 3  # the buffer, not only the host copy


def test_prox_step_with_large_lambda_makes_gates_piecewise_constant():
    mixer = make_mixer(tv_lambda=100.0, n_bands=4, k_dct=8, k_cheb=8)
    randomize_spectral(mixer)
    before = mixer.gates.static.detach().clone()
    assert (gate_solver.piecewise_segments(before) > 1).all()
    step(mixer, 1, lr=1.0)
    after = mixer.gates.static.detach()
    assert (gate_solver.piecewise_segments(after) == 1).all()
    # Fully fused rows sit at the row mean (inside the box here), as TV denoising demands.
    torch.testing.assert_close(after, before.mean(-1, keepdim=True).expand_as(before))
    # A small lambda leaves distinct gates distinct (the test above can fail).
    small = make_mixer(tv_lambda=1e-4, n_bands=4, k_dct=8, k_cheb=8)
    randomize_spectral(small)
    step(small, 1, lr=1.0)
    assert (gate_solver.piecewise_segments(small.gates.static.detach()) > 1).all()


def test_prox_weight_is_the_gate_step_times_lambda_and_the_box(monkeypatch):
    calls = []
    real = gate_solver.tv_box_prox

    def spy(s, lam, lo=0.0, hi=1.0):
        calls.append((lam, lo, hi, s.shape))
        return real(s, lam, lo, hi)

    monkeypatch.setattr(gate_solver, "tv_box_prox", spy)
    mixer = make_mixer(tv_lambda=0.05, gate_phase_frac=0.5)
    step(mixer, 1, lr=2e-3)  # the shared learning rate plays no part
    eta = 2.0 / (0.5 * TOTAL)  # gate_travel (2 box widths) over the 5 steps of phase 1
    assert mixer.gates.gate_step_size(TOTAL) == pytest.approx(eta)
    assert calls == [(pytest.approx(eta * 0.05), 0.0, 1.0, mixer.gates.static.shape)]
    lambda0 = make_mixer(ablation="lambda0")
    randomize_spectral(lambda0)
    g = lambda0.gates.static.detach().clone()
    step(lambda0, 1, lr=1.0)
    assert calls[-1][0] == 0.0
    torch.testing.assert_close(lambda0.gates.static.detach(), g)  # lambda = 0: only the box


def _phase_one(mixer, total: int, grad_of_step) -> list[torch.Tensor]:
    """Run phase 1 with a given gate gradient per step; the static map after each step."""
    maps, k = [], 0
    while mixer.gates.current_phase == 1:
        k += 1
        mixer.gates.static.grad = grad_of_step(k)
        mixer.after_optimizer_step(TrainProgress(k, total, 1e-3))
        maps.append(mixer.gates.static.detach().clone())
    return maps


@pytest.mark.parametrize("total", [40, 800])  # the tiny and small budgets' steps
@pytest.mark.parametrize("scale", [1e-7, 1e3])  # the step does not depend on the loss's scale
def test_a_gate_whose_gradient_keeps_one_sign_reaches_the_box_edge_in_phase_one(total, scale):
    mixer = make_mixer()  # default options: gate_travel 2, lambda 0.05, phase 1 = 30%
    shape = mixer.gates.static.shape
    gen = torch.Generator().manual_seed(0)
    sign = torch.ones(shape)
    sign[..., 0] = -1.0  # band 0 is pushed up (descent on a negative gradient), the rest down

    def grad(k):  # one sign per gate, magnitudes that vary from step to step
        return sign * scale * (0.5 + torch.rand(shape, generator=gen))

    maps = _phase_one(mixer, total, grad)
    assert len(maps) == round(0.3 * total)
    final = maps[-1]
    assert torch.all(final[..., 0] == 1.0) and torch.all(final[..., 1:] == 0.0)
    # Reached well inside phase 1 (it may cross the box twice), not just at its end.
    first_at_edge = next(i for i, m in enumerate(maps) if torch.all(m[..., 1:] == 0.0))
    assert first_at_edge < 0.75 * len(maps)


def test_a_large_lambda_fuses_neighbouring_bands_and_no_lambda_does_not():
    def pieces(tv_lambda):
        mixer = make_mixer(tv_lambda=tv_lambda, n_bands=4, k_dct=8, k_cheb=8)
        gen = torch.Generator().manual_seed(1)
        # A steady push per band, of alternating sign and any size: normalised, each is +-1.
        size = torch.rand(mixer.gates.static.shape, generator=gen) + 0.1
        push = size * torch.tensor([1.0, -1.0, 1.0, -1.0])
        return gate_solver.piecewise_segments(_phase_one(mixer, 100, lambda k: push)[-1])

    # lambda >= NB / 2 outweighs any split of four unit pushes: every branch is one piece.
    assert torch.all(pieces(2.0) == 1)
    # Without TV the same pushes drive neighbours to opposite edges: four pieces.
    assert torch.all(pieces(0.0) == 4)


def test_fixed_gates_stay_at_one_half_whatever_the_gradient():
    mixer = make_mixer(ablation="fixed_gates")
    assert mixer.gates.network is None and not mixer.gates.static.requires_grad
    x = torch.randn(2, 16, 32)
    mixer.train()
    mixer(x).square().sum().backward()
    for k in range(1, TOTAL + 1):
        step(mixer, k)
    assert torch.all(mixer.gates.static == 0.5) and mixer.gates.current_phase == 1
    assert not any(p is mixer.gates.static for g in build_optimizer(mixer, {"lr": 1e-3, "weight_decay": 0.1})
                   .param_groups for p in g["params"])
