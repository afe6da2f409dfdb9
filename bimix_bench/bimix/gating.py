"""Band gates of one BiMix layer and the three-phase schedule that trains them.

Gate map: g_t in [0, 1]^{R x NB} per token and head (R = active branches, NB bands each).

Phase 1 (training fraction < gate_phase_frac): static gates G (H, R, NB) serve every token.
  G is not in the shared optimizer (models.mixer.own_update): after each step it takes the
  design's proximal-gradient step with a step size of its own,
      G <- clip(prox_{eta lambda TV}(G - eta d), 0, 1),   d = grad / sqrt(EMA(grad^2)),
  where d is the task gradient normalised per gate by its running RMS (as Adam normalises, so
  that the step does not depend on the loss's scale: a gate whose gradient keeps one sign moves
  by eta per step), and eta = gate_travel / (phase-1 steps): such a gate can cross the box
  gate_travel times within phase 1. The TV weight per step is eta * lambda, so lambda is in
  units of the normalised step (about 1 for a gradient that keeps its sign): two fused
  neighbouring bands stay fused while their normalised pushes differ by at most 2 lambda, and
  lambda >= NB / 2 keeps a branch's NB bands in one piece under any unit pushes. The prox is
  exact (gate_solver).
Phase 2: the gating network g_t = sigmoid(W_g x_t + c) takes over, c initialised to
  logit(clamp(G)) and W_g small, so it starts from the optimised map. G is frozen and anchors
  the network through aux_loss = alpha * mean((g_t - G)^2), alpha annealed linearly from
  distill_alpha at the switch to 0 at the end of training.
Phase 3 (training finished): the gating network alone. No solver runs outside
  after_optimizer_step, so evaluation and inference never touch it.
The phase and alpha live in buffers, so a checkpoint reloads in the phase it was saved in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bimix_bench.bimix import gate_solver
from bimix_bench.models.mixer import TrainProgress, own_update

GATE_INIT = 0.5  # mid-box: the first prox steps can move every gate either way
GRAD_EMA = 0.9  # decay of the running mean of squared gate gradients (the step's normaliser)
LOGIT_CLAMP = 0.01  # logit(G) uses G clamped to [0.01, 0.99]: a pruned band starts at -4.6
NETWORK_INIT_SCALE = 0.1  # std of W_g x at init, in logits, for unit-RMS inputs


class GatingNetwork(nn.Module):
    """logits = W_g x + c, W_g (n_out x d_model), optionally low-rank (W_g = U V, rank r)."""

    def __init__(self, d_model: int, n_out: int, rank: int = 0):
        super().__init__()
        self.low_rank = 0 < rank < min(d_model, n_out)
        if self.low_rank:
            self.down = nn.Linear(d_model, rank, bias=False)
            self.up = nn.Linear(rank, n_out, bias=True)
        else:
            self.proj = nn.Linear(d_model, n_out, bias=True)
        self.reset(torch.zeros(n_out))

    @property
    def bias(self) -> nn.Parameter:
        return self.up.bias if self.low_rank else self.proj.bias

    def reset(self, bias: torch.Tensor) -> None:
        """Small weights and the given bias (n_out,)."""
        with torch.no_grad():
            if self.low_rank:
                nn.init.normal_(self.down.weight, std=self.down.in_features**-0.5)
                nn.init.normal_(self.up.weight, std=NETWORK_INIT_SCALE * self.up.in_features**-0.5)
            else:
                nn.init.normal_(self.proj.weight, std=NETWORK_INIT_SCALE * self.proj.in_features**-0.5)
            self.bias.copy_(bias.to(self.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, n_out)
        return self.up(self.down(x)) if self.low_rank else self.proj(x)


def _refresh_after_load(module: "BandGates", _incompatible_keys: object) -> None:
    module._refresh_host_copies()


class BandGates(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_branches: int,
        n_bands: int,
        *,
        tv_lambda: float,
        phase_frac: float,
        distill_alpha: float,
        gate_travel: float = 2.0,
        rank: int = 0,
        use_network: bool = True,
        learned: bool = True,
    ):
        super().__init__()
        self.shape = (n_heads, n_branches, n_bands)
        self.tv_lambda = float(tv_lambda)
        self.gate_travel = float(gate_travel)
        self.phase_frac = float(phase_frac)
        self.distill_alpha0 = float(distill_alpha)
        # learned=False (the fixed_gates ablation): G stays at GATE_INIT, a constant, all run.
        self.static = own_update(nn.Parameter(torch.full(self.shape, GATE_INIT), requires_grad=learned))
        self.learned = learned
        self.register_buffer("grad_sq", torch.zeros(self.shape))  # EMA of squared gradients
        self.register_buffer("grad_steps", torch.tensor(0))  # steps in that EMA (bias correction)
        self.network = GatingNetwork(d_model, math.prod(self.shape), rank) if use_network else None
        starts_with_network = use_network and self.phase_frac <= 0
        self.register_buffer("phase", torch.tensor(2 if starts_with_network else 1))
        self.register_buffer("alpha", torch.tensor(self.distill_alpha0 if starts_with_network else 0.0))
        if self.network is not None:
            self.network.reset(self._bias_from_static())
        self.capture = False  # stash the gates of the next forward in `last_gates`
        self.last_gates: torch.Tensor | None = None
        self._distill: torch.Tensor | None = None  # gates of the last training forward (phase 2)
        # Host-side copies of the buffers: reading a CUDA buffer in forward would sync the device.
        # Set from Python values (not read back), so the module also builds on the meta device.
        self._phase = 2 if starts_with_network else 1
        self._alpha = self.distill_alpha0 if starts_with_network else 0.0
        self._grad_steps = 0
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def _refresh_host_copies(self) -> None:
        self._phase, self._alpha = int(self.phase), float(self.alpha)
        self._grad_steps = int(self.grad_steps)

    def _set_schedule(self, phase: int, alpha: float) -> None:
        self.phase.fill_(phase)
        self.alpha.fill_(alpha)
        self._phase, self._alpha = phase, alpha

    @property
    def current_phase(self) -> int:
        return self._phase

    @property
    def current_alpha(self) -> float:
        return self._alpha

    def _bias_from_static(self) -> torch.Tensor:
        g = self.static.detach().clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)
        return torch.logit(g).reshape(-1)

    def static_map(self) -> torch.Tensor:  # (H, R, NB), detached
        return self.static.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> gates (B, T, H, R, NB), or (1, 1, H, R, NB) while static."""
        if self.current_phase == 1 or self.network is None:
            gates = self.static[None, None]  # the prox keeps G inside [0, 1]
        else:
            logits = self.network(x).unflatten(-1, self.shape)
            gates = torch.sigmoid(logits)
            if self.training and self.current_phase == 2 and self.current_alpha > 0:
                self._distill = gates
        if self.capture:
            B, T = x.shape[:2]
            self.last_gates = gates.detach().expand(B, T, *self.shape).float().cpu()
        return gates

    def aux_loss(self) -> torch.Tensor | None:
        """alpha * mean((g_t - G)^2) over the last training forward; None when there is none."""
        gates, self._distill = self._distill, None
        if gates is None or self.current_phase != 2:
            return None
        target = self.static.detach().to(gates.dtype)
        return self.current_alpha * (gates - target).square().mean()

    def gate_step_size(self, total_steps: int) -> float:
        """eta: the step that lets a gate cross the box gate_travel times within phase 1."""
        phase_steps = max(1.0, min(self.phase_frac, 1.0) * total_steps)
        return self.gate_travel / phase_steps

    @torch.no_grad()
    def proximal_step(self, eta: float) -> None:
        """G <- clip(prox_{eta lambda TV}(G - eta grad / RMS(grad)), 0, 1); clears G's gradient.
        Without a gradient (no loss reached G this step) the step is the prox alone."""
        grad = self.static.grad
        moved = self.static
        if grad is not None:
            self._grad_steps += 1
            self.grad_steps.fill_(self._grad_steps)
            self.grad_sq.mul_(GRAD_EMA).add_(grad.float().square(), alpha=1.0 - GRAD_EMA)
            rms = (self.grad_sq / (1.0 - GRAD_EMA**self._grad_steps)).sqrt()
            direction = torch.where(rms > 0, grad.float() / rms.clamp_min(torch.finfo(rms.dtype).tiny),
                                    torch.zeros_like(rms))
            moved = self.static - eta * direction.to(self.static.dtype)
        prox = gate_solver.tv_box_prox(moved, eta * self.tv_lambda, 0.0, 1.0, check_finite=False)
        self.static.copy_(prox)  # no value is read back: the step never makes the host wait
        self.static.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, progress: TrainProgress) -> None:
        if self.current_phase == 1 and self.learned:
            self.proximal_step(self.gate_step_size(progress.total_steps))
            if self.network is not None and progress.fraction >= self.phase_frac:
                self.switch_to_network()
        if self.current_phase == 2:
            if progress.fraction >= 1.0:
                self._set_schedule(3, 0.0)
            else:
                f0 = min(max(self.phase_frac, 0.0), 1.0)
                remaining = (1.0 - progress.fraction) / max(1e-12, 1.0 - f0)
                self._set_schedule(2, self.distill_alpha0 * min(1.0, max(0.0, remaining)))
        self._distill = None

    @torch.no_grad()
    def switch_to_network(self) -> None:
        """Phase 1 -> 2: the network starts from logit(G); G is frozen from here on."""
        self.network.reset(self._bias_from_static())
        self.static.requires_grad_(False)
        self.static.grad = None
        self._set_schedule(2, self.distill_alpha0)
