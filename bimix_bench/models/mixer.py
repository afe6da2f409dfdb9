"""The token-mixer interface every model plugs into the shared backbone through.

A model in this suite *is* its token mixer: the embedding, pre-norm blocks, SwiGLU MLP and
heads are shared (bimix_bench.models.backbone), so only the mixer differs between models.

Contract (all mixers are causal: output t depends on inputs <= t only):
  forward(x)                         x: (B, T, D) -> (B, T, D)
  init_decode_state(B, max_len, ...) -> state object for step-by-step generation
  decode_step(x_t, state)            x_t: (B, D) -> (B, D); updates `state` in place
  prefill(x, max_len)                (B, T, D) -> ((B, T, D), state), the state after x
`backend` names the kernel the last forward actually ran ("torch-reference", "sdpa", ...), and
`backend_reason` says why it was chosen; both go into the result record. The engine reads them
after a training step and after an inference forward, since a mixer may run different kernels
with and without gradients (e.g. fla's forward, but a plain-torch backward path). `decode_backend`
names what decode_step runs.

A model whose layers share state (one layer builds a memory that later layers read), or that
routes part of a mixer's output elsewhere than the residual stream, registers its own block class
(register_model(block=...), a subclass of bimix_bench.models.backbone.Block): the backbone then
builds that block around each mixer and hands it a `carry` dict per pass through the stack, and
the block calls its mixer as that model defines.

Optional training hooks (no-ops here) let a mixer take part in the training schedule without
the engine knowing what the mixer is:
  aux_loss()                    extra loss term (e.g. gate distillation), or None
  after_optimizer_step(prog)    e.g. BiMix's proximal step on the static gates
  record_extras()               JSON-able facts for the record (e.g. gate maps)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bimix_bench.registry import MODELS


@dataclass(frozen=True)
class MixerConfig:
    """What the backbone tells a mixer when building it."""

    d_model: int
    n_heads: int
    layer_idx: int
    n_layers: int
    max_seq_len: int  # the training context of the task
    options: dict[str, Any] = field(default_factory=dict)  # config `models.<name>.*`


@dataclass(frozen=True)
class TrainProgress:
    step: int  # optimizer steps done so far (1-based after the first step)
    total_steps: int
    lr: float  # learning rate used by the step that just happened

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total_steps)


class TokenMixer(nn.Module):
    backend: str = "torch-reference"
    backend_reason: str = "default"
    decode_backend: str = "torch-step"  # one token at a time in plain torch (recurrent state)
    # True when some parameters take no part in some forwards (e.g. a gating network that is
    # switched on mid-training); data-parallel training must then look for unused ones.
    has_conditional_parameters: bool = False

    def __init__(self, cfg: MixerConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        raise NotImplementedError

    # --- step-by-step generation -------------------------------------------------------
    def init_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no decode path")

    def decode_step(self, x_t: torch.Tensor, state: Any) -> torch.Tensor:  # (B, D) -> (B, D)
        raise NotImplementedError(f"{type(self).__name__} has no decode path")

    def prefill(self, x: torch.Tensor, max_len: int) -> tuple[torch.Tensor, Any]:
        """Run the prompt and return its outputs and the decode state after it.

        The default replays decode_step token by token; mixers override it with a parallel
        forward that also leaves the state behind.
        """
        B, T, _ = x.shape
        state = self.init_decode_state(B, max_len, x.device, x.dtype)
        ys = [self.decode_step(x[:, t], state) for t in range(T)]
        return torch.stack(ys, dim=1), state

    # --- training hooks ----------------------------------------------------------------
    def aux_loss(self) -> torch.Tensor | None:
        return None

    def after_optimizer_step(self, progress: TrainProgress) -> None:
        return None

    def record_extras(self) -> dict[str, Any]:
        return {}

    @classmethod
    def probe(cls, model: nn.Module, ids: list[int]) -> dict[str, Any] | None:
        """Facts measured by running the trained model (whose mixers are of this class) on one
        test sequence of token ids, for the record's extras (BiMix: how its per-token gates
        move at structural boundaries). None: nothing to measure."""
        return None


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its mixer class and its config options with defaults."""

    mixer_cls: type[TokenMixer]
    default_options: dict[str, Any]
    # d_model must be a multiple of this (on top of 2 * n_heads, which every model needs).
    width_multiple: int = 1
    # The block built around each mixer; None: the shared one (bimix_bench.models.backbone.Block).
    block_cls: type[nn.Module] | None = None


def register_model(
    name: str, description: str, options: dict[str, Any] | None = None, width_multiple: int = 1,
    block: type[nn.Module] | None = None,
):
    """Class decorator: register a TokenMixer subclass as model `name`.

    `options` become the config section `models.<name>` (overridable with
    --set models.<name>.<key>=value); they reach the mixer as MixerConfig.options.
    `block`: the model's own Block subclass, for models whose layers pass state to each other
    (see the module doc); by default the shared pre-norm block.
    """

    def decorator(cls: type[TokenMixer]) -> type[TokenMixer]:
        spec = ModelSpec(cls, dict(options or {}), width_multiple, block)
        MODELS.register(name, description)(spec)
        return cls

    return decorator


def own_update(param: nn.Parameter) -> nn.Parameter:
    """Mark a parameter that its module updates itself in after_optimizer_step (BiMix's static
    gates take a proximal step of their own): the shared optimizer leaves it out, and the
    module clears its gradient once used."""
    param._own_update = True  # type: ignore[attr-defined]
    return param


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark a parameter as excluded from AdamW weight decay (decays, gates, mixing scalars).
    Parameters with fewer than 2 dimensions are excluded anyway."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param
