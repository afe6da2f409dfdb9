"""BiMix gates: the three-phase schedule, the proximal step, distillation, checkpoints."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.bimix import gate_solver
from bimix_bench.bimix.gating import LOGIT_CLAMP
from bimix_bench.config import deep_merge, load_budget
from bimix_bench.config.sections import train_config
from bimix_bench.engine.optim import build_optimizer
from bimix_bench.models.mixer import TrainProgress
from tests.bimix_fixtures import make_mixer, randomize_spectral
from tests.host_reads import no_host_reads

TOTAL = 10
# The shared optimizer as a run builds it (weight decay 0.1), at a learning rate of 1e-3.
TRAIN = train_config(deep_merge(load_budget("tiny"), {"train": {"lr": 1e-3, "weight_decay": 0.1}}))


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

    def spy(s, lam, lo=0.0, hi=1.0, check_finite=True):
        calls.append((lam, lo, hi, s.shape))
        return real(s, lam, lo, hi, check_finite)

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


def test_switch_initialises_the_network_from_the_static_map():
    mixer = make_mixer(gate_phase_frac=0.2)
    randomize_spectral(mixer)
    with torch.no_grad():
        mixer.gates.static[0, 0] = 0.0  # a pruned branch: its logits use the clamped value
    step(mixer, 1)
    step(mixer, 2)  # fraction 0.2: the last prox step, then the switch
    assert mixer.gates.current_phase == 2
    G = mixer.gates.static.detach().clone()
    assert torch.all(G[0, 0] == 0.0)
    bias = mixer.gates.network.bias.detach().view_as(G)
    torch.testing.assert_close(bias, torch.logit(G.clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)))
    x = torch.nn.functional.rms_norm(torch.randn(2, 20, 32), (32,))
    gates = mixer.gates(x)
    assert gates.shape == (2, 20, *G.shape)
    assert (gates - G).abs().max() < 0.1  # W_g starts small: the network reproduces G
    assert (gates - G).abs().max() > 0  # ... but already depends on the token
    assert not mixer.gates.static.requires_grad  # G is frozen


def test_alpha_anneals_linearly_to_zero():
    mixer = make_mixer(gate_phase_frac=0.2, distill_alpha=2.0)
    alphas = []
    for k in range(1, TOTAL + 1):
        step(mixer, k)
        alphas.append(mixer.gates.current_alpha)
    expected = [0.0] + [2.0 * (1 - k / TOTAL) / 0.8 for k in range(2, TOTAL)] + [0.0]
    assert alphas == pytest.approx(expected)
    assert float(mixer.gates.alpha) == 0.0


def test_aux_loss_distils_towards_G_only_in_phase_two():
    mixer = make_mixer(gate_phase_frac=0.2, distill_alpha=2.0)
    x = torch.randn(2, 12, 32)
    mixer.train()
    mixer(x)
    assert mixer.aux_loss() is None  # phase 1: static gates, nothing to distil
    step(mixer, 1)
    step(mixer, 2)
    with torch.no_grad():
        mixer.gates.network.proj.weight.normal_(std=0.5)
    mixer(x)
    aux = mixer.aux_loss()
    gates = torch.sigmoid(mixer.gates.network(x)).unflatten(-1, mixer.gates.shape).detach()
    expected = mixer.gates.current_alpha * (gates - mixer.gates.static.detach()).square().mean()
    torch.testing.assert_close(aux.detach(), expected)
    assert aux.item() > 0 and aux.requires_grad
    assert mixer.aux_loss() is None  # consumed: one term per forward
    mixer.eval()
    mixer(x)
    assert mixer.aux_loss() is None  # evaluation never adds a loss
    mixer.train()
    for k in range(3, TOTAL + 1):
        step(mixer, k)
    assert mixer.gates.current_phase == 3
    mixer(x)
    assert mixer.aux_loss() is None


def test_gradients_reach_G_in_phase_one_and_the_network_in_phase_two():
    mixer = make_mixer(gate_phase_frac=0.2)
    x = torch.randn(1, 12, 32)
    mixer(x).square().sum().backward()
    assert mixer.gates.static.grad is not None and mixer.gates.static.grad.abs().max() > 0
    assert mixer.gates.network.proj.weight.grad is None
    mixer.zero_grad(set_to_none=True)
    step(mixer, 1)
    step(mixer, 2)
    mixer(x).square().sum().backward()
    assert mixer.gates.static.grad is None
    assert mixer.gates.network.proj.weight.grad.abs().max() > 0


def test_static_gates_are_left_out_of_the_shared_optimizer():
    mixer = make_mixer()
    optimizer = build_optimizer(mixer, TRAIN)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(mixer.gates.static) not in in_optimizer  # stepped by its own proximal step
    assert mixer.gates.static.requires_grad  # but it still receives the task gradient
    assert id(mixer.gates.network.proj.weight) in in_optimizer - no_decay


def test_no_solver_runs_in_evaluation_or_inference(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the gate solver ran outside the phase-1 training step")

    mixer = make_mixer(gate_phase_frac=0.2)
    randomize_spectral(mixer)
    x = torch.randn(1, 20, 32)
    step(mixer, 1)  # phase 1 with the real solver
    monkeypatch.setattr(gate_solver, "tv_box_prox", forbidden)
    for _ in range(2):  # in phase 1, then phase 2 and 3 (entered below with the solver mocked)
        mixer.eval()
        with torch.no_grad():
            mixer(x)
            _, state = mixer.prefill(x[:, :10], max_len=20)
            mixer.decode_step(x[:, 10], state)
        mixer.record_extras()
        monkeypatch.setattr(gate_solver, "tv_box_prox", lambda s, lam, lo=0.0, hi=1.0, **_: s.clamp(lo, hi))
        step(mixer, 2)  # switch (the last phase-1 prox uses the stand-in)
        monkeypatch.setattr(gate_solver, "tv_box_prox", forbidden)
    for k in range(3, TOTAL + 1):
        step(mixer, k)  # phases 2 -> 3 never call the solver
    assert mixer.gates.current_phase == 3
    mixer.eval()
    with torch.no_grad():
        mixer(x)


def test_checkpoint_reloads_in_its_phase():
    mixer = make_mixer(gate_phase_frac=0.2, distill_alpha=1.5)
    for k in range(1, 5):
        step(mixer, k)
    state = mixer.state_dict()
    assert int(state["gates.phase"]) == 2
    fresh = make_mixer(gate_phase_frac=0.2, distill_alpha=1.5, seed=7)
    assert fresh.gates.current_phase == 1
    fresh.load_state_dict(state)
    assert fresh.gates.current_phase == 2
    assert fresh.gates.current_alpha == pytest.approx(mixer.gates.current_alpha)
    x = torch.randn(1, 15, 32)
    torch.testing.assert_close(fresh(x), mixer(x))


@pytest.mark.parametrize(
    "ablation,phase_after,network", [("static_gates", 1, False), ("no_distill", 2, True)]
)
def test_gate_ablations(ablation, phase_after, network):
    mixer = make_mixer(ablation=ablation, gate_phase_frac=0.2)
    assert (mixer.gates.network is not None) == network
    for k in range(1, 6):
        step(mixer, k)
    assert mixer.gates.current_phase == phase_after
    mixer.train()
    mixer(torch.randn(1, 8, 32))
    assert mixer.aux_loss() is None  # no network (static) or alpha = 0 (no_distill)


def test_low_rank_gating_network():
    full = make_mixer()
    low = make_mixer(gate_rank=2)
    assert low.gates.network.low_rank and not full.gates.network.low_rank
    n = lambda m: sum(p.numel() for p in m.gates.network.parameters())  # noqa: E731
    assert n(low) < n(full)
    for k in range(1, 4):
        step(low, k)
    assert low.gates.current_phase == 2
    assert low(torch.randn(1, 8, 32)).shape == (1, 8, 32)


def test_phase_frac_zero_starts_with_the_network():
    mixer = make_mixer(gate_phase_frac=0.0, distill_alpha=1.0)
    assert mixer.gates.current_phase == 2 and mixer.gates.current_alpha == 1.0
    bias = mixer.gates.network.bias.detach()
    torch.testing.assert_close(bias, torch.zeros_like(bias))  # logit(0.5)


def test_fixed_gates_stay_at_one_half_whatever_the_gradient():
    mixer = make_mixer(ablation="fixed_gates")
    assert mixer.gates.network is None and not mixer.gates.static.requires_grad
    x = torch.randn(2, 16, 32)
    mixer.train()
    mixer(x).square().sum().backward()
    for k in range(1, TOTAL + 1):
        step(mixer, k)
    assert torch.all(mixer.gates.static == 0.5) and mixer.gates.current_phase == 1
    assert not any(p is mixer.gates.static for g in build_optimizer(mixer, TRAIN).param_groups
                   for p in g["params"])


def test_the_proximal_step_reads_nothing_back_from_the_device():
    """Phase 1's gate step runs once per layer and optimizer step: it must not make the host
    wait for the GPU, i.e. read no tensor value (tests/host_reads.py)."""
    mixer = make_mixer()
    mixer.gates.static.grad = torch.randn(mixer.gates.static.shape)
    with no_host_reads():
        step(mixer, 1)
    assert mixer.gates.current_phase == 1
