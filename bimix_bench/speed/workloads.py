"""The timed work of one sized model at one context: forward, train step, decode.

All three read full-length rows of seeded random bytes (B = tokens_per_batch // T rows of T
tokens), so every model processes exactly the same tokens and no padding flatters anyone.
  forward  no-grad forward of the (B, T) batch
  train    forward + backward + AdamW step on a copy of the model (budget's optimizer settings)
  decode   `decode_tokens` greedy steps after a (T - 1)-token prompt, the definition records
           use too (engine.throughput.DecodeWorkload): static decode state, a CUDA graph per
           step on a GPU, the state after the prompt restored (untimed) before every call
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bimix_bench.config.sections import TrainConfig
from bimix_bench.engine.throughput import backend_label, decode_workload, make_train_step
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.speed.timing import Timed
from bimix_bench.task import Batch

KINDS = ("forward", "train", "decode")
# Which calibration each kind is divided by (see speed.calibration).
CALIBRATION_OF = {"forward": "bulk", "train": "bulk", "decode": "steps"}
METHOD = {
    "forward": "no-grad forward of full-length rows",
    "train": "fwd+bwd+AdamW step of full-length rows",
    "decode": "greedy decode steps after a prompt of the full context (static state; CUDA graph on a GPU), state restored per call",
}


@dataclass
class Workload:
    kind: str
    timed: Timed
    units: int  # tokens one timed call processes
    backend: str  # kernels that ran, read after the warm-up call
    shape: str  # what one call processes, for the method string


@dataclass
class CellWorkloads:
    """What a (model, context) cell times, plus the kinds it cannot time and why."""

    workloads: dict[str, Workload] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def batch_rows(tokens_per_batch: int, context: int) -> int:
    """Rows per batch: B x T stays at tokens_per_batch (at least one row)."""
    return max(1, tokens_per_batch // context)


def random_batch(vocab_size: int, rows: int, context: int, device: torch.device, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, vocab_size, (rows, context + 1), generator=gen)  # (B, T + 1)
    lengths = torch.full((rows,), context, dtype=torch.long)
    return Batch(stream[:, :-1].contiguous(), stream[:, 1:].contiguous(), lengths).to(device)


def build_cell(model: LanguageModel, context: int, tokens_per_batch: int, kinds: tuple[str, ...],
               device: torch.device, autocast: Callable[[], Any], train: TrainConfig,
               decode_tokens: int, slowdown: float = 1.0) -> CellWorkloads:
    """Workloads of `model` (already on `device`) for each requested kind. Each is called
    once here, which is also the first warm-up call and tells which backend runs."""
    rows = batch_rows(tokens_per_batch, context)
    batch = random_batch(model.arch.vocab_size, rows, context, device)
    shape = f"({rows}, {context})"
    cell = CellWorkloads()
    model.eval()

    if "forward" in kinds:
        @torch.no_grad()
        def forward() -> None:
            with autocast():
                model(batch.tokens)

        forward()
        cell.workloads["forward"] = Workload("forward", Timed(forward, slowdown=slowdown),
                                             rows * context, backend_label(model), shape)

    if "train" in kinds:
        trainee = copy.deepcopy(model).train()
        step = make_train_step(trainee, batch, "lm", train, autocast)
        step()
        cell.workloads["train"] = Workload("train", Timed(step, slowdown=slowdown),
                                           rows * context, backend_label(trainee), shape)

    if "decode" in kinds:
        decode = _decode_workload(model, batch.tokens, decode_tokens, autocast, slowdown)
        if isinstance(decode, str):
            cell.unavailable["decode"] = decode
        else:
            cell.workloads["decode"] = decode
    return cell


def _decode_workload(model: LanguageModel, tokens: torch.Tensor, n_new: int,
                     autocast: Callable[[], Any], slowdown: float) -> Workload | str:
    """The decode workload (engine.throughput.DecodeWorkload), or the reason there is none."""
    work = decode_workload(model, tokens, n_new, autocast)
    if isinstance(work, str):
        return work
    work.restore()
    work.run()  # the first warm-up call (on a GPU it also captures the graph)
    return Workload("decode", Timed(work.run, setup=work.restore, slowdown=slowdown), work.units,
                    backend_label(model, "decode_backend"),
                    f"({work.rows},) x {n_new} steps ({work.mode}) after {work.prompt_len} tokens")
