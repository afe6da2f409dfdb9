"""Decoding with a state allocated once: the same shapes and tensor addresses at every step, so
that on CUDA one step is captured in a CUDA graph and replayed (as mamba_ssm's generation
benchmark, gpt-fast and vLLM decode); eager elsewhere.

Every mixer's decode state is a dataclass of tensors sized for `max_len` (a KV cache of fixed
size, fixed-shape recurrent states, ring buffers) whose decode step writes in place and keeps
its position on the device. A replayed graph then reads the token from one fixed input buffer,
advances the states it was captured on and leaves the logits in one fixed output buffer: no
Python runs per layer and per token, so the figure measures the architecture, not the
interpreter's dispatch.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, ContextManager, Iterator

import torch

from bimix_bench.models.backbone import LanguageModel

WARMUP_STEPS = 2  # eager steps on a side stream before capture (lazy init, autotuning)


def state_tensors(states: Any) -> Iterator[torch.Tensor]:
    """Every tensor of a decode state (dataclasses, lists and tuples of them), in a fixed order."""
    if isinstance(states, torch.Tensor):
        yield states
    elif dataclasses.is_dataclass(states):
        for f in dataclasses.fields(states):
            yield from state_tensors(getattr(states, f.name))
    elif isinstance(states, (list, tuple)):
        for item in states:
            yield from state_tensors(item)


def copy_state_(dst: Any, src: Any) -> None:
    """Copy decode state `src` into `dst` in place (tensors, and host-side counters)."""
    if dataclasses.is_dataclass(dst):
        for f in dataclasses.fields(dst):
            a, b = getattr(dst, f.name), getattr(src, f.name)
            if isinstance(a, torch.Tensor):
                a.copy_(b)
            elif dataclasses.is_dataclass(a) or isinstance(a, (list, tuple)):
                copy_state_(a, b)
            else:
                setattr(dst, f.name, b)
    elif isinstance(dst, (list, tuple)):
        for a, b in zip(dst, src, strict=True):
            copy_state_(a, b)


def snapshot(states: Any) -> Any:
    """A copy to restore from with copy_state_."""
    return copy.deepcopy(states)


def _graph_autocast(autocast: Callable[[], ContextManager]) -> ContextManager:
    """The same autocast with its weight-cast cache off: cached casts made outside a graph
    must not be read by it (torch.cuda.graphs' advice for autocast under capture)."""
    context = autocast()
    if isinstance(context, torch.autocast):
        return torch.autocast(context.device, dtype=context.fast_dtype, cache_enabled=False)
    return context


class StaticDecoder:
    """prefill(prompt) then step(token) repeatedly; `mode` says "cuda-graph" or "eager".

    The first prefill allocates the states (and fixes batch size and max_len); later prefills
    copy into the same tensors. On CUDA the first step captures the graph."""

    def __init__(self, model: LanguageModel, max_len: int,
                 autocast: Callable[[], ContextManager], use_graph: bool | None = None):
        self.model, self.max_len, self.autocast = model, max_len, autocast
        on_cuda = next(model.parameters()).device.type == "cuda"
        # "cuda-graph" or "eager", fixed here: the model's device does not change while decoding.
        self.mode = "cuda-graph" if (on_cuda if use_graph is None else use_graph) else "eager"
        self.states: list[Any] | None = None
        self.token: torch.Tensor | None = None  # (B,) int64, the graph's input
        self.logits: torch.Tensor | None = None  # (B, V), the graph's output
        self.graph: torch.cuda.CUDAGraph | None = None
        self.position = 0  # tokens in the states, counted on the host

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """prompt (B, T) -> logits at its last position (B, V); the states hold the prompt."""
        with self.autocast():
            logits, states = self.model.prefill(prompt, max_len=self.max_len)
        if self.states is None:
            self.states = states
            self.token = torch.zeros(prompt.shape[0], dtype=torch.long, device=prompt.device)
        else:
            copy_state_(self.states, states)
        self.position = prompt.shape[1]
        return logits

    def save(self) -> tuple[Any, int]:
        """The states as they are now, to come back to with restore()."""
        return snapshot(self.states), self.position

    def restore(self, saved: tuple[Any, int]) -> None:
        """Copy saved states back into the same tensors (a graph keeps reading them)."""
        copy_state_(self.states, saved[0])
        self.position = saved[1]

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """token (B,) -> next-token logits (B, V). In graph mode the returned tensor is the
        graph's output buffer: the next step overwrites it."""
        if self.states is None:
            raise RuntimeError("StaticDecoder.step before prefill")
        if self.position >= self.max_len:
            raise ValueError(f"the decode state holds {self.max_len} positions; "
                             f"{self.position + 1} were asked for")
        self.token.copy_(token)
        self.position += 1
        if self.mode == "eager":
            with self.autocast():
                return self.model.decode_step(self.token, self.states)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits

    def _capture(self) -> None:
        saved = snapshot(self.states)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), _graph_autocast(self.autocast):
            for _ in range(WARMUP_STEPS):
                self.model.decode_step(self.token, self.states)
        torch.cuda.current_stream().wait_stream(side)
        copy_state_(self.states, saved)  # the warm-up steps advanced the states
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), _graph_autocast(self.autocast):
            self.logits = self.model.decode_step(self.token, self.states)
        # Capture launches no kernels, but its Python ran: host-side counters (KVCache.filled)
        # advanced and go back too.
        copy_state_(self.states, saved)
