"""Training one model on one subtask: the same tokens, optimizer and schedule for every model."""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bimix_bench.config.sections import (TrainConfig, eval_config, sequences_per_step,
                                         train_config)
from bimix_bench.engine.batch_workers import batches_of, skipped
from bimix_bench.engine.device import autocast_factory
from bimix_bench.engine.distributed import DistContext, shard
from bimix_bench.engine.optim import build_optimizer, lr_at, set_lr
from bimix_bench.metrics.selection import reaches, selection_key
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.models.mixer import TrainProgress
from bimix_bench.task import TaskData, evaluate_split, scored_positions, sequence_loss


class Diverged(Exception):
    """The training loss became NaN or infinite."""


# Steps between reads of the training loss from the device. The loss is summed on the device
# and read (making the host wait for the GPU) only then and at validations, as nanoGPT reads it
# only every log interval; divergence is caught at the next read.
LOG_EVERY = 10


@dataclass
class StepInfo:
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_s: float
    val: dict[str, float] | None = None


@dataclass
class TrainResult:
    steps: int
    tokens_trained: int  # tokens the model read (padding excluded)
    tokens_trained_padded: int  # tokens including padding (what the kernels processed)
    best_step: int | None
    best_val: dict[str, float]
    best_state: dict[str, torch.Tensor]  # on CPU
    history: list[dict[str, Any]] = field(default_factory=list)
    # Summed over every process that trained this cell: a resumed run adds the time its saved
    # state carries (steps redone after an interruption are not counted twice).
    train_time_s: float = 0.0  # the whole loop, validation included
    validation_time_s: float = 0.0
    earlier_train_time_s: float = 0.0  # the part of train_time_s spent by earlier processes
    resumed_at_steps: list[int] = field(default_factory=list)  # where each resumption began
    planned_steps: int = 0  # what the protocol asked for (steps, or epochs over the data)
    stopped_early: bool = False  # validation reached train.early_stop_at before planned_steps


def batch_size_for(cfg: dict[str, Any], context: int) -> int:
    """Sequences per step of the run's train section (config.sections.sequences_per_step)."""
    train = train_config(cfg)
    return sequences_per_step(train.batch_sequences, train.batch_tokens, context)


def planned_steps(cfg: dict[str, Any], data: TaskData) -> int:
    """Optimizer steps of the protocol: train.steps, or train.epochs full passes over an
    example-indexed training set (partial last batches are dropped, as the batcher does)."""
    train = train_config(cfg)
    if train.epochs == 0:
        return train.steps
    if not hasattr(data.train, "__len__"):
        raise ValueError(f"{data.task}/{data.subtask}: train.epochs needs a training set of "
                         "examples; this task streams windows, so set train.steps")
    per_epoch = len(data.train) // batch_size_for(cfg, data.context)
    return max(1, train.epochs * per_epoch)


def validates_after(step: int, every: int, total: int) -> bool:
    """Whether train_model validates once `step` (1-based) of `total` steps is done: after
    every `every` steps and after the last."""
    return step % every == 0 or step == total


def validation_count(steps: int, every: int) -> int:
    """Validation passes of a training of `steps` steps (validates_after's rule; `run --plan`
    counts with it)."""
    return sum(validates_after(step, every, steps) for step in range(1, steps + 1))


def training_loss(forward: Callable[..., torch.Tensor], model: LanguageModel, batch,
                  objective: str) -> torch.Tensor:
    """The loss a training step minimises: the task's loss, with logits only at the scored
    positions, plus each mixer's auxiliary loss (BiMix's gate distillation). `forward` is the
    model or its DDP wrapper. The trainer and the throughput timing both call this, so the
    step that is timed is the step that is trained."""
    logits = forward(batch.tokens, batch.lengths, scored=scored_positions(objective, batch))
    loss = sequence_loss(objective, logits, batch)
    for mixer in model.mixers:
        extra = mixer.aux_loss()
        if extra is not None:
            loss = loss + extra
    return loss


def train_model(
    model: LanguageModel,
    data: TaskData,
    cfg: dict[str, Any],
    device: torch.device,
    seed: int,
    on_step: Callable[[StepInfo], None] | None = None,
    state_path: Path | None = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train for the budget's steps, validating every `eval_every` steps and keeping the best
    validation weights. With `state_path`, the full training state is saved there at every
    validation, and training resumes from it when the file exists (interrupted runs).
    With `dist`, each rank trains on its slice of the same global batch under DDP and only
    the main rank validates and saves."""
    train, evaluation = train_config(cfg), eval_config(cfg)
    total_steps = planned_steps(cfg, data)
    metric = data.selection_metric
    early_stop_at = train.early_stop_at
    eval_every = train.validation_interval(total_steps)
    autocast = autocast_factory(device, train.precision)
    optimizer = build_optimizer(model, train)
    forward = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        # Unused parameters exist by design (e.g. BiMix's gating network before distillation).
        forward = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=any(m.has_conditional_parameters for m in model.mixers),
        )
    is_main = dist is None or dist.is_main

    result = TrainResult(0, 0, 0, None, {}, copy.deepcopy(_cpu_state(model)),
                         planned_steps=total_steps)
    best_score = (-math.inf, -math.inf)
    first_step = 0
    if state_path is not None and Path(state_path).exists():
        first_step, best_score = _load_training_state(state_path, model, optimizer, result, device)
    # The data stream is a pure function of the seed: a resumed run skips the steps it trained.
    index_stream = skipped(data.train_index_stream(batch_size_for(cfg, data.context), seed), first_step)
    workers = data_workers(train, device)
    batches = batches_of(data.train, data.context, index_stream, workers, pin_memory=workers > 0)
    window_tokens, window_start = 0, time.perf_counter()
    start = time.perf_counter()

    def loop_time() -> float:
        return result.earlier_train_time_s + time.perf_counter() - start

    if result.stopped_early:  # resumed after the validation that ended training
        first_step = total_steps
    loss_sum, steps_summed, last_loss = torch.zeros((), device=device), 0, math.nan
    for step in range(first_step, total_steps):
        model.train()
        global_batch = next(batches)
        batch = shard(global_batch, dist).to(device, non_blocking=workers > 0)
        lr = lr_at(step, total_steps, train)
        set_lr(optimizer, lr)
        with autocast():
            loss = training_loss(forward, model, batch, data.objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        progress = TrainProgress(step + 1, total_steps, lr)
        for mixer in model.mixers:
            mixer.after_optimizer_step(progress)

        result.steps = step + 1
        result.tokens_trained += global_batch.n_tokens
        result.tokens_trained_padded += global_batch.tokens.numel()
        window_tokens += global_batch.n_tokens
        loss_sum += loss.detach().float()  # stays on the device: no wait for the GPU here
        steps_summed += 1
        validating = validates_after(step + 1, eval_every, total_steps)
        reading = validating or (step + 1) % LOG_EVERY == 0  # the host waits for the device only here
        info = StepInfo(step + 1, total_steps, last_loss, lr, 0.0)
        if reading:
            last_loss = info.loss = _read_mean_loss(loss_sum, steps_summed, step + 1, dist)
            loss_sum.zero_()
            steps_summed = 0
            elapsed = time.perf_counter() - window_start
            info.tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0

        if is_main and validating:
            validation_start = time.perf_counter()
            val = evaluate_split(
                model, data, "val", device, evaluation.batch_size,
                limit=evaluation.val_examples, autocast=autocast,
            )
            result.validation_time_s += time.perf_counter() - validation_start
            info.val = val
            result.history.append({"step": step + 1, "train_loss": info.loss, "val": val})
            score = selection_key(metric, val)
            if score > best_score:
                best_score = score
                result.best_step, result.best_val = step + 1, val
                result.best_state = _cpu_state(model)
            result.stopped_early = (early_stop_at > 0 and step + 1 < total_steps
                                    and reaches(metric, val.get(metric), early_stop_at))
            if state_path is not None and is_main:
                result.train_time_s = loop_time()
                _save_training_state(state_path, model, optimizer, result, best_score)
        if reading:
            window_tokens, window_start = 0, time.perf_counter()  # a new timing window
        if on_step:
            on_step(info)
        if early_stop_at > 0 and ((step + 1) % eval_every == 0) and _agree(result.stopped_early, dist, device):
            result.stopped_early = True
            break
    batches.close()  # stops the batch workers
    result.train_time_s = loop_time()
    return result


def data_workers(train: TrainConfig, device: torch.device) -> int:
    """Processes that build training batches ahead: train.data_workers on a GPU; none on a CPU
    device, where training itself uses every core."""
    return train.data_workers if device.type == "cuda" else 0


def _read_mean_loss(loss_sum: torch.Tensor, n: int, step: int, dist: DistContext | None) -> float:
    """The mean training loss of the last n steps, read from the device; raises Diverged
    when it is not finite on any rank (every rank checks at the same steps, so they agree)."""
    finite = torch.isfinite(loss_sum).to(torch.int32)
    if dist is not None:  # every rank must agree, or the others would wait forever
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        raise Diverged(f"the training loss became {float(loss_sum)} within steps {step - n + 1}-{step}")
    return float(loss_sum) / n


def _agree(flag: bool, dist: DistContext | None, device: torch.device) -> bool:
    """The main rank's decision, known to every rank (only the main rank validates)."""
    if dist is None:
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save_training_state(path: Path, model, optimizer, result: TrainResult, best_score: tuple[float, float]) -> None:
    """Everything needed to continue exactly: weights, optimizer moments, RNG, bookkeeping."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "step": result.steps, "model": _cpu_state(model), "optimizer": optimizer.state_dict(),
        "best_score": best_score, "best_step": result.best_step, "best_val": result.best_val,
        "best_state": result.best_state, "history": result.history,
        "tokens_trained": result.tokens_trained, "tokens_trained_padded": result.tokens_trained_padded,
        "torch_rng": torch.get_rng_state(),
        "train_time_s": result.train_time_s, "validation_time_s": result.validation_time_s,
        "resumed_at_steps": result.resumed_at_steps, "stopped_early": result.stopped_early,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)  # atomic: an interrupt never leaves a torn state file


def _load_training_state(path: Path, model, optimizer, result: TrainResult, device) -> tuple[int, float]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["torch_rng"])
    result.steps = blob["step"]
    result.best_step, result.best_val = blob["best_step"], blob["best_val"]
    result.best_state, result.history = blob["best_state"], blob["history"]
    result.tokens_trained = blob["tokens_trained"]
    result.tokens_trained_padded = blob["tokens_trained_padded"]
    result.earlier_train_time_s = blob.get("train_time_s", 0.0)  # absent in older state files
    result.validation_time_s = blob.get("validation_time_s", 0.0)
    result.resumed_at_steps = [*blob.get("resumed_at_steps", []), blob["step"]]
    result.stopped_early = blob.get("stopped_early", False)
    best = blob["best_score"]  # older state files hold one number, not the (value, loss) rank
    return blob["step"], tuple(best) if isinstance(best, (tuple, list)) else (best, -math.inf)
