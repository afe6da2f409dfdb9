"""BiMix-LM's token mixer: a dual-spectral (DCT + Chebyshev) mixer with per-token band gates.

  v = silu(conv4(W_v x)),  z = W_z x                          (x: the block's normed input)
  u^{dct,b}_t  = sum_{k in b} sum_tau a_{h,k} rho_h^tau cos(w_k tau + w_k/2) v_{t-tau}
  u^{cheb,b}_t = sum_{k in b} sum_{tau<W} b_{h,k} T_k(1 - 2 tau / (W-1)) v_{t-tau}
  y_t = W_o [ silu(z_t) * sum_{beta,b} g_{t,beta,b} u^{beta,b}_t ],   g_t in [0,1]^{2 x NB}
The gates follow the three-phase schedule of bimix_bench.bimix.gating; the kernels behind
u are chosen by bimix_bench.bimix.kernels.dispatch. docs/bimix.md has the full account.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.bimix.decode import BiMixDecodeState, decode_core, empty_state, state_after_prefix
from bimix_bench.bimix.gating import BandGates
from bimix_bench.bimix.kernels import reference
from bimix_bench.bimix.kernels.dispatch import (
    BACKENDS,
    SpectralBranches,
    mixer_core,
    resolve_backends,
)
from bimix_bench.errors import UsageError
from bimix_bench.models.mixer import (
    MixerConfig,
    TokenMixer,
    TrainProgress,
    no_weight_decay,
    register_model,
)
from bimix_bench.ops.short_conv import ShortCausalConv

DEFAULT_OPTIONS: dict[str, Any] = {
    "k_dct": 32,  # K_d, DCT frequencies
    "k_cheb": 16,  # K_c, Chebyshev polynomials
    "window": 128,  # W, Chebyshev window in tokens
    "n_bands": 4,  # NB, contiguous bands per branch
    "tv_lambda": 0.05,  # lambda of the TV-regularised gate objective, per normalised gate step
    "gate_travel": 2.0,  # box widths a gate with a one-signed gradient can move in phase 1
    "gate_phase_frac": 0.3,  # end of phase 1 (static gates + prox) as a fraction of training
    "distill_alpha": 1.0,  # alpha at the start of phase 2, annealed linearly to 0
    "gate_rank": 0,  # rank of W_g (0 = full)
    "ablation": "none",
    "backend": "auto",
    "dct_horizon": 0,  # N_d (0 = the training context)
}
# fixed_gates: every gate held at 0.5 for the whole run (routing off), the baseline that says
# whether learned routing matters at all.
ABLATIONS = ("none", "static_gates", "no_distill", "lambda0", "dct_only", "cheb_only", "fixed_gates")
HALF_LIFE_RANGE = (64.0, 8192.0)  # DCT decay half-lives, log-uniform over heads, in tokens
CONV_WIDTH = 4


@dataclass(frozen=True)
class BiMixSettings:
    """The options after validation, ablations and clamping to the model's size."""

    branches: tuple[str, ...]
    k_dct: int
    k_cheb: int
    window: int
    n_bands: int
    horizon: int
    tv_lambda: float
    gate_travel: float
    gate_phase_frac: float
    distill_alpha: float
    gate_rank: int
    use_network: bool
    ablation: str
    backend: str

    @classmethod
    def from_config(cls, cfg: MixerConfig) -> "BiMixSettings":
        opts = {**DEFAULT_OPTIONS, **cfg.options}
        unknown = set(opts) - set(DEFAULT_OPTIONS)
        if unknown:
            raise UsageError(f"unknown bimix options {sorted(unknown)}; valid: {sorted(DEFAULT_OPTIONS)}")
        ablation, backend = str(opts["ablation"]), str(opts["backend"])
        if ablation not in ABLATIONS:
            raise UsageError(f"unknown bimix ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
        if backend not in BACKENDS:
            raise UsageError(f"unknown bimix backend {backend!r}; valid: {', '.join(BACKENDS)}")
        ints = {k: int(opts[k]) for k in ("k_dct", "k_cheb", "window", "n_bands", "gate_rank", "dct_horizon")}
        if min(ints["k_dct"], ints["k_cheb"], ints["window"], ints["n_bands"]) < 1 or ints["gate_rank"] < 0:
            raise UsageError(f"bimix sizes must be positive (gate_rank >= 0): {ints}")
        tv_lambda, alpha = float(opts["tv_lambda"]), float(opts["distill_alpha"])
        travel = float(opts["gate_travel"])
        if tv_lambda < 0 or alpha < 0 or travel < 0:
            raise UsageError("bimix tv_lambda, distill_alpha and gate_travel must be >= 0")
        branches = {"dct_only": ("dct",), "cheb_only": ("cheb",)}.get(ablation, ("dct", "cheb"))
        horizon = ints["dct_horizon"] or cfg.max_seq_len
        # Tiny contexts: a window longer than the context only wastes work (but keep >= 2 lags
        # for the [-1, 1] map); K_c <= W and K_d <= N_d keep the bases linearly independent.
        window = max(2, min(ints["window"], cfg.max_seq_len))
        k_dct, k_cheb = min(ints["k_dct"], horizon), min(ints["k_cheb"], window)
        active = [k for name, k in (("dct", k_dct), ("cheb", k_cheb)) if name in branches]
        return cls(
            branches=branches,
            k_dct=k_dct,
            k_cheb=k_cheb,
            window=window,
            n_bands=min(ints["n_bands"], *active),
            horizon=horizon,
            tv_lambda=0.0 if ablation == "lambda0" else tv_lambda,
            gate_travel=travel,
            gate_phase_frac=float(opts["gate_phase_frac"]),
            distill_alpha=0.0 if ablation == "no_distill" else alpha,
            gate_rank=ints["gate_rank"],
            use_network=ablation not in ("static_gates", "fixed_gates"),
            ablation=ablation,
            backend=backend,
        )


def log_uniform_half_lives(n_heads: int) -> torch.Tensor:
    """(H,) half-lives spread log-uniformly over HALF_LIFE_RANGE (one head: the middle)."""
    lo, hi = (math.log(x) for x in HALF_LIFE_RANGE)
    if n_heads == 1:
        return torch.tensor([math.exp(0.5 * (lo + hi))])
    return torch.exp(torch.linspace(lo, hi, n_heads, dtype=torch.float64)).float()


@register_model(
    "bimix",
    "BiMix-LM: dual-spectral (DCT + Chebyshev) mixer with TV-optimised, distilled band gates",
    options=DEFAULT_OPTIONS,
)
class BiMixMixer(TokenMixer):
    backend = "unresolved"
    backend_reason = "chosen at the first forward, from the device"

    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        s = self.settings = BiMixSettings.from_config(cfg)
        D, H = cfg.d_model, cfg.n_heads
        if D % H:
            raise UsageError(f"d_model {D} is not a multiple of n_heads {H}")
        self.n_heads, self.head_dim = H, D // H
        self.in_proj = nn.Linear(D, 2 * D, bias=False)  # W_v and W_z in one matmul
        self.conv = ShortCausalConv(D, CONV_WIDTH)
        # Filter coefficients and decays are spectral parameters, not weights: no weight decay.
        self.dct_amplitude = self.dct_log_rate = self.cheb_amplitude = None
        if "dct" in s.branches:
            self.dct_amplitude = no_weight_decay(nn.Parameter(torch.empty(H, s.k_dct)))
            self.dct_log_rate = no_weight_decay(nn.Parameter(torch.empty(H)))  # log(-log rho)
        if "cheb" in s.branches:
            self.cheb_amplitude = no_weight_decay(nn.Parameter(torch.empty(H, s.k_cheb)))
        self.gates = BandGates(
            D, H, len(s.branches), s.n_bands,
            tv_lambda=s.tv_lambda,
            gate_travel=s.gate_travel,
            phase_frac=s.gate_phase_frac,
            distill_alpha=s.distill_alpha,
            rank=s.gate_rank,
            use_network=s.use_network,
            learned=s.ablation != "fixed_gates",
        )
        self.out_proj = nn.Linear(D, D, bias=False)
        # Which kernels to use (a BACKENDS name); may be changed on a built model, e.g. to time
        # or compare paths on the same weights.
        self.requested_backend = s.backend
        self.reset_parameters()

    # --- parameters ----------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Projections as in the backbone (unit-scale inputs, depth-scaled residual output).
        Amplitudes: equal over k, scaled so that each branch's summed kernel has peak gain
        max_w |H(w)| = 1 over its support (N_d lags for the DCT, W for Chebyshev): at init no
        frequency of v is amplified, and the branch's own band (low frequencies for the DCT,
        broadband for the sharp Chebyshev kernel) passes at unit gain."""
        D, s = self.cfg.d_model, self.settings
        if self.in_proj.weight.is_meta:
            return  # built on the meta device to count parameters (sizing): no values needed
        nn.init.normal_(self.in_proj.weight, std=D**-0.5)
        nn.init.normal_(self.out_proj.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layers))
        if self.dct_amplitude is not None:
            self.dct_log_rate.copy_(torch.log(math.log(2.0) / log_uniform_half_lives(self.n_heads)))
            unit = torch.ones_like(self.dct_amplitude, dtype=torch.float64)
            raw = reference.dct_band_kernels(unit, self.log_rho().double(), s.horizon, 1, s.horizon)
            gain = reference.peak_gain(raw[:, 0])  # (H,)
            self.dct_amplitude.copy_((1.0 / gain)[:, None].expand_as(unit))
        if self.cheb_amplitude is not None:
            unit = torch.ones(1, s.k_cheb, dtype=torch.float64)
            gain = reference.peak_gain(reference.cheb_band_kernels(unit, s.window, 1)[0, 0])
            self.cheb_amplitude.fill_(float(1.0 / gain))

    def log_rho(self) -> torch.Tensor:  # (H,), log of the per-head decay, always < 0
        return -torch.exp(self.dct_log_rate)

    def spectral(self, with_decay: bool = True) -> SpectralBranches:
        """The branches' parameters; with_decay=False leaves log_rho out (a decode step reads
        the decay its state holds, so it does not recompute it per token)."""
        s = self.settings
        return SpectralBranches(
            branches=s.branches,
            n_bands=s.n_bands,
            horizon=s.horizon,
            window=s.window,
            dct_amplitude=self.dct_amplitude,
            log_rho=self.log_rho() if with_decay and self.dct_log_rate is not None else None,
            cheb_amplitude=self.cheb_amplitude,
        )

    # --- forward -------------------------------------------------------------------------
    @property
    def capture_gates(self) -> bool:
        return self.gates.capture

    @capture_gates.setter
    def capture_gates(self, value: bool) -> None:
        """When on, every forward leaves its gates (B, T, H, R, NB) in self.gates.last_gates."""
        self.gates.capture = value

    def _project(
        self, x: torch.Tensor, history: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> v, z (B, T, H, P) and the short convolution's new history."""
        B, T, _ = x.shape
        v_in, z = self.in_proj(x).chunk(2, dim=-1)
        v, history = self.conv(v_in, history)
        shape = (B, T, self.n_heads, self.head_dim)
        return v.reshape(shape), z.reshape(shape), history

    def _core(self, x: torch.Tensor, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gates = self.gates(x)  # (B|1, T|1, H, R, NB)
        plan = resolve_backends(
            self.requested_backend, self.settings.branches, x.device, torch.is_grad_enabled()
        )
        self.backend, self.backend_reason = plan.label, plan.reason
        out = mixer_core(v, z, gates, self.spectral(), plan)  # (B, T, H, P)
        return self.out_proj(out.flatten(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        v, z, _ = self._project(x)
        return self._core(x, v, z)

    # --- decoding ------------------------------------------------------------------------
    def init_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> BiMixDecodeState:
        history = self.conv.empty_history(batch_size, device, dtype)
        return empty_state(self.spectral(), history, batch_size, self.head_dim, dtype, max_len)

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, BiMixDecodeState]:
        v, z, history = self._project(x)
        y = self._core(x, v, z)
        return y, state_after_prefix(self.spectral(), history, v, max_len)

    def decode_step(self, x_t: torch.Tensor, state: BiMixDecodeState) -> torch.Tensor:
        B, D = x_t.shape
        v, z, history = self._project(x_t[:, None], state.conv_history)
        state.conv_history.copy_(history)  # in place: the state keeps its address (CUDA graphs)
        gates = self.gates(x_t[:, None])[:, 0]  # (B|1, H, R, NB)
        mixed = decode_core(self.spectral(with_decay=False), gates, v[:, 0], state)  # (B, H, P)
        return self.out_proj((F.silu(z[:, 0]) * mixed).reshape(B, D))

    # --- training hooks ------------------------------------------------------------------
    def aux_loss(self) -> torch.Tensor | None:
        return self.gates.aux_loss()

    def after_optimizer_step(self, progress: TrainProgress) -> None:
        self.gates.after_optimizer_step(progress)

    def record_extras(self) -> dict[str, Any]:
        from bimix_bench.bimix.gate_maps import gate_record

        return gate_record(self)

    @classmethod
    def probe(cls, model: nn.Module, ids: list[int]) -> dict[str, Any] | None:
        from bimix_bench.bimix.gate_maps import gate_probe

        return {"routing": gate_probe(model, ids)}
