"""Calibration workloads: fixed pieces of model-like work timed next to every model figure.

A model's figure is stored as a ratio: tokens it processes in the time one calibration call
takes. Whatever slows the whole machine (other processes, a lower clock) slows both and
cancels; what changes the ratio is a change in the model's own code path. The closer the
calibration's mix of operations is to the models', the better it cancels, so it is a small
language-model layer stack written here once and never changed (it must not follow the
project's models, or their regressions would cancel too):

  per layer: RMSNorm, a short causal depthwise convolution, one projection to q, k, v, gate,
  a token mixer, a gated output projection, then a SwiGLU MLP, all with fixed seeded weights.
  "bulk"  (forward and train-step figures): a (rows, width) sequence; the mixer is causal
          softmax attention inside chunks plus a decaying linear-attention state carried from
          chunk to chunk by a Python loop (the shape of the chunked kernels of the models);
          chunks of 32 tokens on a CPU, 512 on a GPU (see GPU_CHUNK).
  "steps" (decode figures): `steps` sequential single-token steps for `rows` sequences.
          Per layer and step: the convolution window, position-phased (cos/sin) query and key
          features feeding a decaying linear-attention state, a ring buffer of recent values
          mixed by softmax-gated window kernels, and the MLP -- many small launches of many
          different operations, like token-by-token decode of the project's mixers. (A
          calibration with only a few distinct operations slowed down less than the models'
          decode under load from other processes: the variety matters, not just the count.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

KINDS = ("bulk", "steps")
HEADS = 4
CHUNK = 32  # the bulk chunk on a CPU, and in every document written before `chunk` existed
# On a GPU a chunk of 32 makes the bulk calibration a Python loop of ~25K kernel launches
# (0.8 s per call on an H200 at the `small` budget): launch-bound, so it measured the host's
# launch speed, 15x longer than the model calls it was paired with. Larger chunks keep it
# device-bound and about as long as a model call.
GPU_CHUNK = 512
CONV = 4  # taps of the short causal convolution
WINDOW = 16  # decode ring buffer, tokens
BANDS = 4  # window kernels mixed by the gate


@dataclass(frozen=True)
class CalibrationSpec:
    kind: str  # "bulk" or "steps"
    rows: int  # tokens of the sequence ("bulk") or sequences decoded together ("steps")
    width: int  # model width (a multiple of HEADS)
    layers: int
    steps: int = 1  # sequential decode steps ("steps"); 1 for "bulk"
    chunk: int = CHUNK  # tokens per chunk of the bulk mixer ("bulk")

    def describe(self) -> str:
        if self.kind == "bulk":
            return (f"bulk calibration: {self.layers} layers of chunked attention (chunks of "
                    f"{self.chunk}) + linear-attention state + SwiGLU over ({self.rows}, {self.width})")
        return (f"steps calibration: {self.steps} decode steps of {self.layers} recurrent layers + "
                f"SwiGLU for ({self.rows}, {self.width})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CalibrationSpec":
        return cls(str(data["kind"]), int(data["rows"]), int(data["width"]), int(data["layers"]),
                   int(data.get("steps", 1)), int(data.get("chunk", CHUNK)))


def bulk_chunk(device: torch.device) -> int:
    return GPU_CHUNK if device.type == "cuda" else CHUNK


def calibration_width(non_embedding_params: int, n_layers: int) -> int:
    """A power of two near the width of a model of this budget (a block holds ~12 d^2
    parameters), so the calibration's matmuls are about as large as the models' own."""
    d = math.sqrt(max(1, non_embedding_params) / (12 * max(1, n_layers)))
    return 2 ** max(3, round(math.log2(d)))


def default_calibrations(tokens_per_batch: int, decode_batch: int, decode_tokens: int,
                         width: int, layers: int, chunk: int = CHUNK) -> dict[str, CalibrationSpec]:
    return {
        "bulk": CalibrationSpec("bulk", tokens_per_batch, width, layers, chunk=chunk),
        "steps": CalibrationSpec("steps", max(1, decode_batch), width, layers, max(1, decode_tokens)),
    }


def build_calibration(spec: CalibrationSpec, device: torch.device,
                      autocast: Callable[[], Any]) -> Callable[[], None]:
    """The calibration as a callable doing the same work on every call."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown calibration kind {spec.kind!r}; valid: {', '.join(KINDS)}")
    if spec.width % HEADS:
        raise ValueError(f"calibration width {spec.width} is not a multiple of {HEADS}")
    gen = torch.Generator().manual_seed(0)
    D, hidden = spec.width, (8 * spec.width) // 3

    def weight(n_in: int, n_out: int) -> torch.Tensor:
        return (torch.randn(n_in, n_out, generator=gen) * n_in ** -0.5).to(device)

    layers = [{
        "conv": (torch.randn(CONV, D, generator=gen) * 0.5).to(device),  # (taps, D)
        "qkvg": weight(D, 4 * D), "out": weight(D, D),
        "up": weight(D, 2 * hidden), "down": weight(hidden, D),
        "kernels": (torch.randn(HEADS, BANDS, WINDOW, generator=gen) * 0.1).to(device),
        "log_decay": (-torch.rand(HEADS, generator=gen)).to(device),
    } for _ in range(spec.layers)]
    x0 = torch.randn(spec.rows, D, generator=gen).to(device)  # (rows, D)
    if spec.kind == "bulk":
        def body() -> None:
            _bulk(x0, layers, spec.chunk)
    else:
        def body() -> None:
            _steps(x0, layers, spec.steps)

    @torch.no_grad()
    def run() -> None:
        with autocast():
            body()

    return run


def _mlp(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    up, gate = (F.rms_norm(x, (x.shape[-1],)) @ w["up"]).chunk(2, dim=-1)
    return x + (F.silu(gate) * up) @ w["down"]


def _bulk(x: torch.Tensor, layers: list[dict[str, torch.Tensor]], chunk: int) -> torch.Tensor:
    T, D = x.shape
    C = min(chunk, T)
    n, Dh = T // C, D // HEADS
    x = x[: n * C]  # whole chunks only
    causal = torch.ones(C, C, dtype=torch.bool, device=x.device).tril()
    for w in layers:
        h = F.rms_norm(x, (D,))  # (T, D)
        h = h + F.conv1d(F.pad(h.T[None], (CONV - 1, 0)), w["conv"].T[:, None, :], groups=D)[0].T
        q, k, v, g = (h @ w["qkvg"]).view(n, C, 4, HEADS, Dh).unbind(2)  # (n, C, H, Dh) each
        scores = torch.einsum("nchd,nkhd->nhck", q, k) / math.sqrt(Dh)  # (n, H, C, C)
        y = torch.einsum("nhck,nkhd->nchd", scores.masked_fill(~causal, -1e4).softmax(-1), v)
        decay = torch.sigmoid(g.mean(-1)).mean(1)  # (n, H)
        state = x.new_zeros(HEADS, Dh, Dh)
        carried = []
        for i in range(n):  # the state from earlier chunks, chunk by chunk
            carried.append(torch.einsum("chd,hde->che", q[i], state))
            state = state * decay[i][:, None, None] + torch.einsum("chd,che->hde", k[i], v[i])
        y = (y + torch.stack(carried)).reshape(-1, D) * F.silu(g.reshape(-1, D))
        x = _mlp(x + y @ w["out"], w)
    return x


def _steps(x: torch.Tensor, layers: list[dict[str, torch.Tensor]], steps: int) -> torch.Tensor:
    B, D = x.shape
    Dh = D // HEADS
    freqs = torch.arange(Dh, device=x.device, dtype=torch.float32) / Dh
    lags = torch.arange(WINDOW, device=x.device)
    states = [x.new_zeros(B, HEADS, 2 * Dh, Dh) for _ in layers]
    rings = [x.new_zeros(B, WINDOW, HEADS, Dh) for _ in layers]
    windows = [x.new_zeros(B, CONV - 1, D) for _ in layers]
    for t in range(steps):
        phase = torch.tensor([float(t)], device=x.device) * freqs  # (Dh,)
        cos, sin = torch.cos(phase), torch.sin(phase)
        for j, w in enumerate(layers):
            h = F.layer_norm(x, (D,)) if j % 2 else F.rms_norm(x, (D,))  # (B, D)
            window = torch.cat([windows[j], h[:, None]], dim=1)  # (B, CONV, D)
            windows[j] = window[:, 1:]
            h = h + torch.einsum("bkd,kd->bd", window, w["conv"])
            q, k, v, g = (h @ w["qkvg"]).view(B, 4, HEADS, Dh).unbind(1)  # (B, H, Dh) each
            q2 = torch.cat([q * cos, q * sin], dim=-1)  # (B, H, 2 Dh)
            k2 = torch.cat([k * cos, k * sin], dim=-1)
            decay = torch.exp(w["log_decay"])[None, :, None, None]
            states[j] = states[j] * decay + torch.einsum("bhk,bhp->bhkp", k2, v)
            y = torch.einsum("bhk,bhkp->bhp", q2, states[j])  # (B, H, Dh)
            rings[j][:, t % WINDOW] = v
            recent = rings[j][:, (t - lags) % WINDOW]  # (B, WINDOW, H, Dh), newest first
            mix = torch.einsum("bh,hnw->bhw", torch.softmax(g.mean(-1), dim=-1), w["kernels"].tanh())
            y = y + torch.einsum("bhw,bwhp->bhp", mix, recent)
            y = y.reshape(B, D) * F.silu(g.reshape(B, D)).clamp(-5.0, 5.0)
            x = _mlp(x + y @ w["out"], w)
        x = torch.where(x.abs() > 10.0, x.sign() * 10.0, x)  # keep 100s of steps finite
    return x
