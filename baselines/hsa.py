"""Hierarchical sparse attention ("hsa"), after "Understanding and Improving Length Generalization
in Hierarchical Sparse Attention Models" (Leng et al., arXiv 2510.17196, 2025). docs/hsa.md says
what the paper fixes and what was chosen here.

    layers 0 .. L/2 - 1   x <- x + SWA(norm x);  x <- x + MLP(norm x)
    layer L/2             also the chunking point: its normalised input, cut into chunks of S
                          tokens, each with a learned CLS token appended, passes a bidirectional
                          encoder; the CLS output (normalised) is the chunk's landmark, projections
                          of the token outputs its keys and values: the chunk memory, which every
                          upper layer reads (handed on through the stack's carry)
    layers L/2 .. L - 1   x <- x + SWA(norm x);  R = Retrieval(norm x, memory)
                          x <- x + MLP(norm(x + R))              bypass (default)
                          x <- x + R;  x <- x + MLP(norm x)      bypass=false (ablation)

SWA: window W, RoPE on the full head dimension. Retrieval (bimix_bench/ops/hsa.py): per head,
each query scores the landmarks of the chunks entirely before its window, keeps the top k, attends
to each chosen chunk with its own softmax (no positions: the chunk's order is the encoder's) and
mixes the k results by a softmax over their landmark scores. k is the option top_k, lowered so it
stays a small share of the chunks visible at the training length (sparsity in training).

Paths (option `backend`): "gather" (the reference: gather the chosen chunks), "dense" (every
chunk scored, the non-chosen weighted 0), "auto" (whichever holds fewer elements at the length),
"flex" (torch flex_attention, one block-masked call with each query once per selection rank,
compiled on CUDA; bimix_bench/ops/hsa_flex.py; it trains only on CUDA: flex_attention has no CPU
backward). "auto" never picks flex: its speed is not measured yet.
Decoding keeps the window's keys and values in a ring, and at the chunking layer the chunk memory
and a buffer of the current chunk, encoded once the chunk is complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Block, SwiGLU
from bimix_bench.models.mixer import MixerConfig, TokenMixer, register_model
from bimix_bench.ops.attention import attention, attention_over_cache
from bimix_bench.ops.hsa import (
    ChunkMemory,
    WindowCache,
    chunk_visibility,
    dense_is_cheaper,
    retrieve_dense,
    retrieve_gather,
    select_chunks,
    visible_chunk_count,
    window_attention,
)
from bimix_bench.ops.hsa_flex import retrieve_flex
from bimix_bench.ops.rotary import DEFAULT_ROPE_BASE, apply_rope, rope_at, rope_cos_sin

INIT_STD = 0.02
ENCODER_FFN_RATIO = 8 / 3  # the chunk encoder's SwiGLU width per d_model (the budgets' ratio)
MEMORY = "hsa.chunk_memory"  # the carry's key for the chunk memory
DEFAULTS = {"backend": "auto", "window": 64, "chunk_size": 64, "top_k": 8,
            "max_selected_fraction": 0.125, "encoder_layers": 1, "bypass": True,
            "rope_base": DEFAULT_ROPE_BASE}
BACKENDS = ("auto", "gather", "dense", "flex")
MIN_TOP_K = 2  # one chosen chunk has weight 1 whatever its score: no gradient to the landmarks

Read = Callable[..., torch.Tensor]  # retrieve_gather or retrieve_dense
_READ_REASONS = {
    "auto": "chunk retrieval in plain torch, dense or gather form, whichever holds fewer elements "
            "at the length (flex_attention only when requested)",
    "gather": "backend=gather requested: the chosen chunks gathered per query",
    "dense": "backend=dense requested: every chunk scored, the non-chosen ones weighted 0",
    "flex": "backend=flex requested: torch flex_attention, one block-masked call with each query "
            "once per selection rank (compiled on CUDA)",
}


def split_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:  # (B, T, H*Dh) -> (B, H, T, Dh)
    return t.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:  # (B, H, T, Dh) -> (B, T, H*Dh)
    return t.transpose(1, 2).flatten(-2)


def capturing_graph(t: torch.Tensor) -> bool:
    """Whether a CUDA graph is being captured on t's device: a captured step cannot branch."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _positive_int(opts: dict[str, Any], key: str) -> int:
    value = opts.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"models.hsa.{key}={value!r}; expected a positive integer")
    return value


@dataclass(frozen=True)
class HSAOptions:
    backend: str
    window: int
    chunk_size: int
    top_k: int
    max_selected_fraction: float
    encoder_layers: int
    bypass: bool
    rope_base: float

    @classmethod
    def from_config(cls, cfg: MixerConfig) -> "HSAOptions":
        """The options of `models.hsa`, checked; a bad one is a UsageError."""
        opts = cfg.options
        backend, bypass = opts.get("backend", DEFAULTS["backend"]), opts.get("bypass", True)
        fraction = opts.get("max_selected_fraction", DEFAULTS["max_selected_fraction"])
        if backend not in BACKENDS:
            raise UsageError(f"models.hsa.backend={backend!r}; valid: {', '.join(BACKENDS)}")
        if not isinstance(bypass, bool):
            raise UsageError(f"models.hsa.bypass={bypass!r}; expected true or false")
        is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        if not is_number or not 0 < fraction <= 1:
            raise UsageError(f"models.hsa.max_selected_fraction={fraction!r}; expected 0 < f <= 1")
        top_k, encoder_layers = _positive_int(opts, "top_k"), _positive_int(opts, "encoder_layers")
        if top_k < MIN_TOP_K:
            raise UsageError(f"models.hsa.top_k={top_k}; at least {MIN_TOP_K}: the weight of a "
                             "single chosen chunk is 1 whatever its score, so landmarks would "
                             "not learn")
        if encoder_layers > 2:
            raise UsageError(f"models.hsa.encoder_layers={encoder_layers}; the chunk encoder "
                             "has 1 or 2")
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise UsageError(f"hsa needs d_model ({cfg.d_model}) = n_heads ({cfg.n_heads}) x an "
                             "even head dimension (RoPE rotates pairs)")
        return cls(backend, _positive_int(opts, "window"), _positive_int(opts, "chunk_size"), top_k,
                   float(fraction), encoder_layers, bypass,
                   float(opts.get("rope_base", DEFAULT_ROPE_BASE)))

    def selected(self, training_length: int) -> int:
        """k: top_k, or fewer so that k stays at most max_selected_fraction of the chunks a query
        sees at the training length; never below 2 (see MIN_TOP_K)."""
        visible = visible_chunk_count(training_length, self.chunk_size, self.window)
        return min(self.top_k, max(MIN_TOP_K, int(self.max_selected_fraction * visible)))


# --- sliding-window attention ---------------------------------------------------------------
class SlidingWindowAttention(nn.Module):
    """Causal softmax attention over the last W positions, with RoPE (as the Transformer's)."""

    def __init__(self, d_model: int, n_heads: int, window: int, rope_base: float, n_layers: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.window, self.rope_base = window, rope_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.qkv.weight, std=INIT_STD)
        nn.init.normal_(self.out.weight, std=INIT_STD / math.sqrt(2 * n_layers))

    def _project(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, ...]:
        """x: (B, T, D) -> q, k, v: (B, H, T, Dh), q and k rotated by `rotation` (cos, sin:
        (T, Dh/2)), by default that of positions 0 .. T-1."""
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        cos, sin = rotation or rope_cos_sin(0, x.shape[1], self.head_dim, x.device, x.dtype,
                                            self.rope_base)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.out(merge_heads(window_attention(q, k, v, self.window)))  # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self._attend(*self._project(x))

    def prefill(self, x: torch.Tensor, cache: WindowCache) -> torch.Tensor:
        """forward(x) that also leaves the last W keys and values in `cache`."""
        q, k, v = self._project(x)
        cache.fill(k, v)
        return self._attend(q, k, v)

    def decode_step(self, x: torch.Tensor, cache: WindowCache, position: torch.Tensor,
                    max_len: int) -> torch.Tensor:
        """x: (B, 1, D) at `position` ((1,) int64 on the device) -> (B, 1, D)."""
        rotation = rope_at(position, max_len, self.head_dim, x.dtype, self.rope_base)
        q, k, v = self._project(x, rotation)  # each (B, H, 1, Dh)
        valid = cache.write(k, v, position)  # (W,)
        y = attention_over_cache(q, cache.k, cache.v, valid, use_sdpa=True)  # (B, H, 1, Dh)
        return self.out(merge_heads(y))


# --- the chunking point ---------------------------------------------------------------------
class EncoderLayer(nn.Module):
    """A pre-norm bidirectional transformer layer over one chunk and its CLS token."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm_attn = nn.RMSNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm_mlp = nn.RMSNorm(d_model)
        self.mlp = SwiGLU(d_model, round(ENCODER_FFN_RATIO * d_model))
        for layer in (self.qkv, self.mlp.w_in):
            nn.init.normal_(layer.weight, std=INIT_STD)
        for layer in (self.out, self.mlp.w_out):
            nn.init.normal_(layer.weight, std=INIT_STD / math.sqrt(2 * n_layers))

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: (N, S + 1, D), rotation: cos, sin (S + 1, Dh/2) -> (N, S + 1, D)."""
        qkv = self.qkv(self.norm_attn(x)).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.n_heads) for t in qkv)  # each (N, H, S + 1, Dh)
        cos, sin = rotation
        y, _ = attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, causal=False,
                         use_sdpa=True)
        x = x + self.out(merge_heads(y))
        return x + self.mlp(self.norm_mlp(x))


class ChunkEncoder(nn.Module):
    """Chunks with a learned CLS token appended, through 1-2 bidirectional layers (RoPE on the
    positions 0 .. S inside the chunk, CLS last), then one RMSNorm."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, rope_base: float):
        super().__init__()
        self.head_dim, self.rope_base = d_model // n_heads, rope_base
        self.cls = nn.Parameter(torch.empty(d_model))
        nn.init.normal_(self.cls, std=INIT_STD)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, n_layers) for _ in range(n_layers))
        self.norm_out = nn.RMSNorm(d_model)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """chunks: (N, S, D) -> (N, S + 1, D), normalised; row S is the CLS token's output."""
        N, S, D = chunks.shape
        x = torch.cat([chunks, self.cls.to(chunks.dtype).expand(N, 1, D)], dim=1)  # (N, S + 1, D)
        rotation = rope_cos_sin(0, S + 1, self.head_dim, x.device, x.dtype, self.rope_base)
        for layer in self.layers:
            x = layer(x, rotation)
        return self.norm_out(x)


class Chunker(nn.Module):
    """The chunking point: a layer's input -> the chunk memory of its first n complete chunks."""

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, encoder_layers: int,
                 rope_base: float):
        super().__init__()
        self.n_heads, self.chunk_size = n_heads, chunk_size
        self.encoder = ChunkEncoder(d_model, n_heads, encoder_layers, rope_base)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)  # chunk keys and values in one matmul
        nn.init.normal_(self.kv.weight, std=INIT_STD)

    def forward(self, x: torch.Tensor, n_chunks: int) -> ChunkMemory:
        """x: (B, T, D) with T >= n S -> the memory of chunks 0 .. n - 1."""
        B, _, D = x.shape
        S, H = self.chunk_size, self.n_heads
        chunks = x[:, : n_chunks * S].reshape(B * n_chunks, S, D)
        encoded = self.encoder(chunks).view(B, n_chunks, S + 1, D)
        landmarks = encoded[:, :, S].unflatten(-1, (H, -1)).transpose(1, 2)  # (B, H, n, Dh)
        kv = self.kv(encoded[:, :, :S]).unflatten(-1, (2, H, -1))  # (B, n, S, 2, H, Dh)
        keys, values = kv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each (B, H, n, S, Dh)
        return ChunkMemory(landmarks, keys, values)


# --- retrieval ------------------------------------------------------------------------------
class Retrieval(nn.Module):
    """Top-k chunk retrieval for one upper layer: its own selection and attention queries (no
    positions) and output projection, over the shared chunk memory."""

    def __init__(self, d_model: int, n_heads: int, opts: HSAOptions, top_k: int, n_layers: int):
        super().__init__()
        self.n_heads, self.top_k = n_heads, top_k
        self.chunk_size, self.window = opts.chunk_size, opts.window
        self.queries = nn.Linear(d_model, 2 * d_model, bias=False)  # selection and attention
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.queries.weight, std=INIT_STD)
        nn.init.normal_(self.out.weight, std=INIT_STD / math.sqrt(2 * n_layers))

    def select(self, q_select: torch.Tensor, memory: ChunkMemory, positions: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """q_select (B, H, Tq, Dh) at positions (Tq,) -> chosen chunks idx and their weights,
        each (B, H, Tq, k)."""
        compute = torch.promote_types(q_select.dtype, torch.float32)
        landmarks = memory.landmarks.to(compute).transpose(-1, -2)  # (B, H, Dh, C)
        scores = q_select.to(compute) @ landmarks / math.sqrt(q_select.shape[-1])  # (B, H, Tq, C)
        visible = chunk_visibility(positions, memory.n_chunks, self.chunk_size, self.window)
        return select_chunks(scores, visible, min(self.top_k, memory.n_chunks))

    def forward(self, x: torch.Tensor, memory: ChunkMemory, positions: torch.Tensor,
                read: Read) -> torch.Tensor:
        """x: (B, Tq, D) at positions (Tq,) -> the retrieved part (B, Tq, D)."""
        queries = self.queries(x).chunk(2, dim=-1)
        q_select, q_attend = (split_heads(t, self.n_heads) for t in queries)  # (B, H, Tq, Dh)
        idx, weights = self.select(q_select, memory, positions)
        return self.out(merge_heads(read(q_attend, memory.keys, memory.values, idx, weights)))


# --- the mixer and its block ----------------------------------------------------------------
@dataclass
class HSADecodeState:
    window: WindowCache
    memory: ChunkMemory | None  # at the chunking layer: C = ceil(max_len / S) chunk slots
    buffer: torch.Tensor | None  # at the chunking layer: (B, S, D), the current chunk's inputs
    position: torch.Tensor  # (1,) int64 on the device: tokens consumed so far
    max_len: int
    filled: int = 0  # the same count on the host: when a chunk completes, for the size check


class HSABlock(Block):
    """The shared pre-norm block, with an upper layer's retrieved part routed by `bypass`: into
    the MLP's input only (x + local stays the residual), or into the residual stream."""

    def forward(self, x: torch.Tensor, carry: dict[str, Any]) -> torch.Tensor:  # (B, T, D)
        local, retrieved = self.mixer(self.norm_mixer(x), carry)
        return self._combine(x, local, retrieved)

    def prefill(self, x: torch.Tensor, max_len: int, carry: dict[str, Any]
                ) -> tuple[torch.Tensor, HSADecodeState]:
        (local, retrieved), state = self.mixer.prefill(self.norm_mixer(x), max_len, carry)
        return self._combine(x, local, retrieved), state

    def decode_step(self, x_t: torch.Tensor, state: HSADecodeState, carry: dict[str, Any]
                    ) -> torch.Tensor:  # (B, D) -> (B, D)
        local, retrieved = self.mixer.decode_step(self.norm_mixer(x_t), state, carry)
        return self._combine(x_t, local, retrieved)

    def _combine(self, x: torch.Tensor, local: torch.Tensor, retrieved: torch.Tensor | None
                 ) -> torch.Tensor:
        x = x + local
        mlp_input = x
        if retrieved is not None:
            mlp_input = x + retrieved
            if not self.mixer.bypass:
                x = mlp_input
        return x + self.mlp(self.norm_mlp(mlp_input))


@register_model(
    "hsa",
    "Hierarchical sparse attention: sliding windows, chunk encoder with CLS landmarks at the "
    "middle layer, top-k chunk retrieval above, bypassing residual (Leng et al. 2025)",
    options=DEFAULTS,
    block=HSABlock,
)
class HierarchicalSparseAttention(TokenMixer):
    """One layer of the model. Called by HSABlock only: forward, prefill and decode_step take the
    stack's carry and return the local and the retrieved part apart (the latter None below the
    middle layer, or when no chunk is complete)."""

    has_conditional_parameters = True  # encoder and retrieval idle while no chunk is visible

    def __init__(self, cfg: MixerConfig):
        super().__init__(cfg)
        opts = HSAOptions.from_config(cfg)
        D, H, L = cfg.d_model, cfg.n_heads, cfg.n_layers
        self.opts, self.bypass = opts, opts.bypass
        self.local = SlidingWindowAttention(D, H, opts.window, opts.rope_base, L)
        middle = L // 2
        self.chunker = (Chunker(D, H, opts.chunk_size, opts.encoder_layers, opts.rope_base)
                        if cfg.layer_idx == middle else None)
        self.top_k = opts.selected(cfg.max_seq_len)
        self.retrieval = (Retrieval(D, H, opts, self.top_k, L) if cfg.layer_idx >= middle else None)
        self.backend = "sdpa-window"  # and "+torch-<form>" once retrieval has run (_read)
        self.backend_reason = (f"backend={opts.backend}: sliding window through torch SDPA; "
                               f"{_READ_REASONS[opts.backend]}")

    @property
    def decode_backend(self) -> str:  # type: ignore[override]
        reads = "" if self.retrieval is None else "+chunk-memory-gather"
        return f"static-window-ring+sdpa{reads}"

    def record_extras(self) -> dict[str, Any]:
        if self.retrieval is None:
            return {}
        visible = visible_chunk_count(self.cfg.max_seq_len, self.opts.chunk_size, self.opts.window)
        return {"top_k": self.top_k, "visible_chunks_at_training_length": visible}

    def _read(self, n_chunks: int) -> Read:
        """The retrieval form for a parallel pass over n chunks; records which one ran."""
        head_dim = self.cfg.d_model // self.cfg.n_heads
        choice = self.opts.backend
        if choice == "auto":
            k = min(self.top_k, n_chunks)
            cheaper = dense_is_cheaper(n_chunks, k, self.opts.chunk_size, head_dim)
            choice = "dense" if cheaper else "gather"
        if choice == "flex":
            self.backend = "sdpa-window+flex-attention"
            return retrieve_flex
        self.backend = f"sdpa-window+torch-{choice}"
        return retrieve_dense if choice == "dense" else retrieve_gather

    def _retrieve(self, x: torch.Tensor, memory: ChunkMemory | None, positions: torch.Tensor,
                  read: Read | None = None) -> torch.Tensor | None:
        """x (B, Tq, D) at positions (Tq,) -> the retrieved part (B, Tq, D), or None for a layer
        below the middle or a memory without chunks."""
        if self.retrieval is None or memory is None or memory.n_chunks == 0:
            return None
        return self.retrieval(x, memory, positions, read or self._read(memory.n_chunks))

    def forward(self, x: torch.Tensor, carry: dict[str, Any]  # type: ignore[override]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D) -> local (B, T, D), retrieved (B, T, D) or None."""
        T = x.shape[1]
        self.backend = "sdpa-window"
        if self.chunker is not None:  # only the chunks some query of x may select
            carry[MEMORY] = self.chunker(x, visible_chunk_count(T, self.opts.chunk_size,
                                                                self.opts.window))
        positions = torch.arange(T, device=x.device)
        return self.local(x), self._retrieve(x, carry.get(MEMORY), positions)

    # --- decoding ------------------------------------------------------------------------
    def init_decode_state(self, batch_size: int, max_len: int, device: torch.device,
                          dtype: torch.dtype) -> HSADecodeState:
        H, D, S = self.cfg.n_heads, self.cfg.d_model, self.opts.chunk_size
        window = WindowCache.empty(batch_size, H, min(self.opts.window, max_len), D // H, device,
                                   dtype)
        memory = buffer = None
        if self.chunker is not None:
            memory = ChunkMemory.empty(batch_size, H, -(-max_len // S), S, D // H, device, dtype)
            buffer = torch.zeros(batch_size, S, D, device=device, dtype=dtype)
        position = torch.zeros(1, device=device, dtype=torch.long)
        return HSADecodeState(window, memory, buffer, position, max_len)

    def prefill(self, x: torch.Tensor, max_len: int, carry: dict[str, Any]  # type: ignore[override]
                ) -> tuple[tuple[torch.Tensor, torch.Tensor | None], HSADecodeState]:
        """One parallel pass over the prompt x: (B, T, D) that also fills the decode state."""
        B, T, _ = x.shape
        if T > max_len:
            raise ValueError(f"the decode state holds {max_len} positions; {T} were asked for")
        state = self.init_decode_state(B, max_len, x.device, x.dtype)
        local = self.local.prefill(x, state.window)
        if self.chunker is not None:
            carry[MEMORY] = self._fill_memory(x, state)
        positions = torch.arange(T, device=x.device)
        retrieved = self._retrieve(x, carry.get(MEMORY), positions)
        state.position.fill_(T)
        state.filled = T
        return (local, retrieved), state

    def _fill_memory(self, x: torch.Tensor, state: HSADecodeState) -> ChunkMemory:
        """The prompt's complete chunks into the memory, its last partial chunk into the buffer;
        returns the complete chunks' memory."""
        S, T = self.opts.chunk_size, x.shape[1]
        complete = T // S
        memory = self.chunker(x, complete)
        state.memory.write(torch.arange(complete, device=x.device), memory)
        state.buffer[:, : T - complete * S] = x[:, complete * S:]
        return memory

    def decode_step(self, x_t: torch.Tensor, state: HSADecodeState,  # type: ignore[override]
                    carry: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x_t: (B, D) -> local (B, D), retrieved (B, D) or None. Shapes and addresses of the
        state never change, and nothing is read back from the device."""
        if state.filled >= state.max_len:
            raise ValueError(f"the decode state holds {state.max_len} positions; "
                             f"{state.filled + 1} were asked for")
        x = x_t[:, None]  # (B, 1, D)
        local = self.local.decode_step(x, state.window, state.position, state.max_len)
        if self.chunker is not None:
            self._absorb(x, state)
            carry[MEMORY] = state.memory
        retrieved = self._retrieve(x, carry.get(MEMORY), state.position, retrieve_gather)
        state.position.add_(1)
        state.filled += 1
        return local[:, 0], None if retrieved is None else retrieved[:, 0]

    def _absorb(self, x: torch.Tensor, state: HSADecodeState) -> None:
        """Put x: (B, 1, D) into the chunk buffer; encode the chunk into its memory slot when it
        is complete. Under CUDA graph capture the step is recorded once and replayed at every
        position, so it encodes the buffer every step (a partial chunk's slot is not visible to
        any query until the chunk is complete and rewritten)."""
        S = self.opts.chunk_size
        state.buffer.index_copy_(1, state.position % S, x.to(state.buffer.dtype))
        if capturing_graph(state.position) or (state.filled + 1) % S == 0:
            slot = torch.div(state.position, S, rounding_mode="floor")  # (1,)
            state.memory.write(slot, self.chunker(state.buffer, 1))
