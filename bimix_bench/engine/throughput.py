"""Throughput of a trained model: train-step, inference and decode tokens/s, peak memory.

How (stored with every figure): warm-up iterations first (autotuning, lazy init, caches), then
`repeats` timed iterations, each bracketed by device synchronization (CUDA) or perf_counter
on a fixed torch thread count (CPU); the median is reported. Timing uses full-length batches
(batch_size x context) drawn from the task's training data, so padding never flatters a model.
The train step is timed on a copy of the model, so the trained weights are untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bimix_bench.config.sections import TrainConfig, throughput_config, train_config
from bimix_bench.engine.device import (
    autocast_factory,
    peak_memory_bytes,
    resolved_precision,
    reset_peak_memory,
)
from bimix_bench.engine.optim import build_optimizer
from bimix_bench.engine.trainer import training_loss
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.task import TaskData
from bimix_bench.timing import timed_median


@dataclass
class DecodeWorkload:
    """The one definition of decode speed (run records, `speed`, `check`): `n_new` greedy steps
    after a prompt of the row's first T - 1 tokens, through a StaticDecoder (a CUDA graph per
    step on a GPU, eager elsewhere). `restore` (untimed) puts the state after the prompt back
    before every timed call, so every call decodes at the same context."""

    run: Callable[[], None]
    restore: Callable[[], None]
    units: int  # tokens one call generates (rows x n_new)
    mode: str  # "cuda-graph" or "eager"
    prompt_len: int
    n_new: int
    rows: int

    def describe(self) -> str:
        return (f"{self.n_new} greedy decode steps ({self.mode}) after a {self.prompt_len}-token "
                f"prompt, state restored per call")


def decode_workload(model: LanguageModel, tokens: torch.Tensor, n_new: int,
                    autocast: Callable[[], Any], use_graph: bool | None = None
                    ) -> DecodeWorkload | str:
    """The decode workload for rows `tokens` (B, T), or why there is none."""
    if n_new <= 0:
        return "decode_tokens is 0"
    from bimix_bench.models.static_decode import StaticDecoder

    rows, context = tokens.shape
    prompt = tokens[:, :-1] if context > 1 else tokens  # (B, T - 1)
    decoder = StaticDecoder(model, prompt.shape[1] + n_new, autocast, use_graph)
    try:
        decoder.prefill(prompt)
    except NotImplementedError as err:
        return f"no decode path: {err}"
    after_prompt = decoder.save()

    def steps() -> None:
        token = tokens[:, -1]  # (B,)
        for _ in range(n_new):
            token = decoder.step(token).argmax(-1)

    return DecodeWorkload(steps, lambda: decoder.restore(after_prompt), rows * n_new,
                          decoder.mode, prompt.shape[1], n_new, rows)


def make_train_step(model: torch.nn.Module, batch, objective: str, train: TrainConfig,
                    autocast: Callable[[], Any]) -> Callable[[], None]:
    """One fwd + bwd + AdamW step of `model` on `batch`, as a callable (updates `model`): the
    trainer's loss (logits at the scored positions, the mixers' auxiliary losses)."""
    optimizer = build_optimizer(model, train)

    def train_step() -> None:
        with autocast():
            loss = training_loss(model, model, batch, objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def _describe(device: torch.device, warmup: int, repeats: int, what: str, shape: str) -> str:
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, synchronized perf_counter"
    else:
        where = f"CPU, {torch.get_num_threads()} torch threads, perf_counter"
    return f"{what}; batch {shape}; median of {repeats} after {warmup} warm-up; {where}"


def full_length_batch(data: TaskData, batch_size: int, seed: int = 1234):
    """A (batch_size, context) batch with no padding: shorter rows (classification examples,
    whole LM examples) are tiled to length."""
    batch = next(data.train_batches(batch_size, seed))
    if batch.tokens.shape[1] < data.context or bool((batch.lengths < data.context).any()):
        rows, target_rows = [], []
        for row, target, length in zip(batch.tokens, batch.targets, batch.lengths):
            valid = row[: max(1, int(length))]
            reps = -(-data.context // len(valid))
            rows.append(valid.repeat(reps)[: data.context])
            if batch.targets.dim() == 2:  # LM rows (whole examples): targets are tiled alike
                target_rows.append(target[: len(valid)].repeat(reps)[: data.context])
        batch.tokens = torch.stack(rows)
        batch.lengths = torch.full_like(batch.lengths, data.context)
        if target_rows:
            batch.targets = torch.stack(target_rows)
    return batch


def measure_throughput(
    model: LanguageModel, data: TaskData, cfg: dict[str, Any], device: torch.device, batch_size: int
) -> dict[str, Any]:
    train, timing = train_config(cfg), throughput_config(cfg)
    warmup, repeats = timing.warmup, timing.repeats
    autocast = autocast_factory(device, train.precision)
    batch = full_length_batch(data, batch_size).to(device)
    n_tokens = batch.tokens.numel()
    shape = f"{tuple(batch.tokens.shape)} {resolved_precision(device, train.precision)}"
    out: dict[str, Any] = {}

    # Training step: forward + backward + AdamW on a copy.
    trainee = copy.deepcopy(model).train()
    train_step = make_train_step(trainee, batch, data.objective, train, autocast)

    reset_peak_memory(device)
    seconds = timed_median(train_step, device, warmup, repeats)
    out["peak_memory_bytes"] = peak_memory_bytes(device)
    out["train_tokens_per_s"] = {
        "value": n_tokens / seconds,
        "method": _describe(device, warmup, repeats, "fwd+bwd+AdamW step", shape),
        "backend": backend_label(trainee),  # what the training step ran (it may differ)
    }
    out["backends"] = {"train": (backend_label(trainee), trainee.mixers[0].backend_reason)}
    del trainee, train_step

    model.eval()

    def forward() -> None:
        with torch.no_grad(), autocast():
            model(batch.tokens, batch.lengths)

    seconds = timed_median(forward, device, warmup, repeats)
    out["inference_tokens_per_s"] = {
        "value": n_tokens / seconds,
        "method": _describe(device, warmup, repeats, "no-grad forward", shape),
        "backend": backend_label(model),
    }
    out["backends"]["inference"] = (backend_label(model), model.mixers[0].backend_reason)
    out["decode_tokens_per_s"] = measure_decode(model, batch.tokens, cfg, device, autocast)
    return out


def record_throughput(record: dict[str, Any], model: LanguageModel, data: TaskData,
                      cfg: dict[str, Any], device: torch.device, batch_size: int) -> None:
    """Measure `model` and fill the record's throughput, backends and peak memory."""
    throughput = measure_throughput(model, data, cfg, device, batch_size)
    record["backends"] = backends_entry(throughput.pop("backends"))
    record["peak_memory_bytes"] = throughput.pop("peak_memory_bytes")
    record["throughput"] = throughput


def backends_entry(seen: dict[str, tuple[str, str]]) -> dict[str, str]:
    """The record's `backends` from what training and inference ran ({mode: (label, reason)}):
    one label when both ran the same kernels, else "INFERENCE (train: TRAIN)"."""
    (train, train_why), (infer, infer_why) = seen["train"], seen["inference"]
    if train == infer:
        return {"mixer": train, "mixer_reason": train_why}
    return {"mixer": f"{infer} (train: {train})", "mixer_reason": f"inference: {infer_why}; "
            f"training: {train_why}", "mixer_train": train, "mixer_inference": infer}


def backend_label(model: LanguageModel, attr: str = "backend") -> str:
    """The kernels the model's mixers ran last (`backend`) or run to decode (`decode_backend`)."""
    return ",".join(sorted({str(getattr(m, attr)) for m in model.mixers}))


def measure_decode(model, tokens, cfg, device, autocast) -> dict[str, Any] | None:
    """Greedy generation speed after a prompt of the full context (DecodeWorkload)."""
    timing = throughput_config(cfg)
    warmup, repeats = timing.warmup, timing.repeats
    work = decode_workload(model, tokens, timing.decode_tokens, autocast)
    if isinstance(work, str):
        return None
    seconds = timed_median(work.run, device, max(1, warmup), repeats, setup=work.restore)
    return {
        "value": work.units / seconds,
        "method": _describe(device, warmup, repeats, work.describe(), f"({work.rows},)"),
        "backend": backend_label(model, "decode_backend"),
    }


def measure_ddp_train_throughput(model: LanguageModel, data: TaskData, cfg: dict[str, Any],
                                 device: torch.device, batch_size: int, dist) -> float:
    """Global training tokens/s of a data-parallel step (every rank calls this together):
    the same full-length global batch as the one-process figure, split across ranks."""
    from torch.nn.parallel import DistributedDataParallel

    from bimix_bench.engine.distributed import shard

    train, timing = train_config(cfg), throughput_config(cfg)
    autocast = autocast_factory(device, train.precision)
    batch = full_length_batch(data, batch_size)
    local = shard(batch, dist).to(device)
    trainee = DistributedDataParallel(
        copy.deepcopy(model).train(), device_ids=[dist.local_rank] if device.type == "cuda" else None,
        find_unused_parameters=any(m.has_conditional_parameters for m in model.mixers),
    )
    optimizer = build_optimizer(trainee.module, train)

    def train_step() -> None:
        with autocast():
            loss = training_loss(trainee, trainee.module, local, data.objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed_median(train_step, device, timing.warmup, timing.repeats)
    return batch.tokens.numel() / seconds
