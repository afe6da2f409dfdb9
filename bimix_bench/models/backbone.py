"""The shared model: byte embedding, pre-norm blocks, heads. Only the mixer differs.

Block: x <- x + Mixer(RMSNorm(x)); x <- x + SwiGLU(RMSNorm(x)). A model may bring its own
Block subclass (ModelSpec.block_cls) when its layers share state: every pass through the stack
(a forward, a prefill, one decode step) hands one fresh `carry` dict from block to block.
Heads: "lm" (tied to the embedding; logits for every position) or "cls" (mean over the
valid positions, then a linear classifier). All mixers are causal, so right padding never
changes the outputs at valid positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bimix_bench.models.mixer import MixerConfig, ModelSpec, TokenMixer
from bimix_bench.models.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class Architecture:
    d_model: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    max_seq_len: int
    head: str = "lm"  # "lm" or "cls"
    n_classes: int = 0
    vocab_size: int = VOCAB_SIZE


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)  # gate and value in one matmul
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        gate, value = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * value)


class Block(nn.Module):
    """The shared pre-norm block. `carry` (what earlier blocks of the same pass left for later
    ones) is for blocks of models whose layers share state; this one passes it by untouched."""

    def __init__(self, mixer: TokenMixer, d_model: int, ffn_hidden: int):
        super().__init__()
        self.norm_mixer = nn.RMSNorm(d_model)
        self.mixer = mixer
        self.norm_mlp = nn.RMSNorm(d_model)
        self.mlp = SwiGLU(d_model, ffn_hidden)

    def forward(self, x: torch.Tensor, carry: dict[str, Any]) -> torch.Tensor:  # (B, T, D)
        x = x + self.mixer(self.norm_mixer(x))
        return x + self.mlp(self.norm_mlp(x))

    def prefill(self, x: torch.Tensor, max_len: int, carry: dict[str, Any]
                ) -> tuple[torch.Tensor, Any]:
        """(B, T, D) -> the block's outputs (B, T, D) and its mixer's decode state after x."""
        y, state = self.mixer.prefill(self.norm_mixer(x), max_len)
        x = x + y
        return x + self.mlp(self.norm_mlp(x)), state

    def decode_step(self, x_t: torch.Tensor, state: Any, carry: dict[str, Any]) -> torch.Tensor:
        x_t = x_t + self.mixer.decode_step(self.norm_mixer(x_t), state)  # (B, D)
        return x_t + self.mlp(self.norm_mlp(x_t))


class LanguageModel(nn.Module):
    def __init__(self, arch: Architecture, spec: ModelSpec, options: dict[str, Any]):
        super().__init__()
        self.arch = arch
        self.embed = nn.Embedding(arch.vocab_size, arch.d_model)
        block_cls = spec.block_cls or Block
        self.blocks = nn.ModuleList(
            block_cls(
                spec.mixer_cls(
                    MixerConfig(
                        d_model=arch.d_model,
                        n_heads=arch.n_heads,
                        layer_idx=i,
                        n_layers=arch.n_layers,
                        max_seq_len=arch.max_seq_len,
                        options=dict(options),
                    )
                ),
                arch.d_model,
                arch.ffn_hidden,
            )
            for i in range(arch.n_layers)
        )
        self.norm_out = nn.RMSNorm(arch.d_model)
        if arch.head == "cls":
            self.classifier = nn.Linear(arch.d_model, arch.n_classes)
        elif arch.head != "lm":
            raise ValueError(f"unknown head {arch.head!r}")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.02)
        for block in self.blocks:
            # Scale residual-branch outputs down with depth (GPT-2 style) for stable starts.
            nn.init.normal_(block.mlp.w_out.weight, std=0.02 / (2 * self.arch.n_layers) ** 0.5)

    @property
    def mixers(self) -> list[TokenMixer]:
        return [block.mixer for block in self.blocks]

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D)
        x = self.embed(tokens)
        carry: dict[str, Any] = {}
        for block in self.blocks:
            x = block(x, carry)
        return self.norm_out(x)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None,
                scored: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (B, T) int64. Returns (B, T, V) for "lm", (B, C) for "cls".
        scored: optional (B, T) bool mask for "lm": logits only at those positions, (n, V), so
        that a task scoring a few answer positions of a large vocabulary (MQAR: 4 of 64
        positions, 8,192 ids) does not pay the head for every position."""
        h = self.hidden_states(tokens)
        if self.arch.head == "lm":
            return F.linear(h if scored is None else h[scored], self.embed.weight)
        if lengths is None:
            pooled = h.mean(dim=1)
        else:  # mean over the valid (unpadded) prefix of each row
            valid = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
            pooled = (h * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(h.dtype)
        return self.classifier(pooled)

    # --- generation ----------------------------------------------------------------------
    def init_decode_state(self, batch_size: int, max_len: int, device, dtype) -> list[Any]:
        return [m.init_decode_state(batch_size, max_len, device, dtype) for m in self.mixers]

    def prefill(self, tokens: torch.Tensor, max_len: int) -> tuple[torch.Tensor, list[Any]]:
        """(B, T) -> last-position logits (B, V) and per-layer decode states."""
        x = self.embed(tokens)
        carry: dict[str, Any] = {}
        states = []
        for block in self.blocks:
            x, state = block.prefill(x, max_len, carry)
            states.append(state)
        return F.linear(self.norm_out(x[:, -1]), self.embed.weight), states

    def decode_step(self, token: torch.Tensor, states: list[Any]) -> torch.Tensor:
        """token: (B,) -> next-token logits (B, V)."""
        x = self.embed(token)
        carry: dict[str, Any] = {}
        for block, state in zip(self.blocks, states):
            x = block.decode_step(x, state, carry)
        return F.linear(self.norm_out(x), self.embed.weight)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts (the tied LM head is the embedding)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embed.weight.numel() if hasattr(model, "embed") else 0
    return {"total": total, "non_embedding": total - embedding}
