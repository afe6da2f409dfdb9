"""Training one model on one subtask: the same tokens, optimizer and schedule for every model."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bimix_bench.engine.device import autocast_factory, synchronize
from bimix_bench.engine.optim import build_optimizer, lr_at, set_lr
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.models.mixer import TrainProgress
from bimix_bench.task import TaskData, evaluate_split, sequence_loss


class Diverged(Exception):
    """The training loss became NaN or infinite."""


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
    train_time_s: float = 0.0


def batch_size_for(cfg: dict[str, Any], context: int) -> int:
    """Sequences per step from the budget's tokens per step; at least one."""
    return max(1, int(cfg["train"]["batch_tokens"]) // context)


def selection_score(objective: str, metrics: dict[str, float]) -> float:
    """Higher is better: validation accuracy, or minus validation bits per byte."""
    if objective == "classify":
        return metrics.get("accuracy", 0.0) - 1e-6 * metrics.get("loss", 0.0)
    return -metrics.get("bits_per_byte", math.inf)


def train_model(
    model: LanguageModel,
    data: TaskData,
    cfg: dict[str, Any],
    device: torch.device,
    seed: int,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    train_cfg, eval_cfg = cfg["train"], cfg["eval"]
    total_steps = int(train_cfg["steps"])
    eval_every = max(1, int(train_cfg.get("eval_every", total_steps)))
    autocast = autocast_factory(device, train_cfg.get("precision", "auto"))
    optimizer = build_optimizer(model, train_cfg)
    batches = data.train_batches(batch_size_for(cfg, data.context), seed)

    result = TrainResult(0, 0, 0, None, {}, copy.deepcopy(_cpu_state(model)))
    best_score = -math.inf
    window_tokens, window_start = 0, time.perf_counter()
    start = time.perf_counter()
    for step in range(total_steps):
        model.train()
        batch = next(batches).to(device)
        lr = lr_at(step, total_steps, train_cfg)
        set_lr(optimizer, lr)
        with autocast():
            logits = model(batch.tokens, batch.lengths)
            loss = sequence_loss(data.objective, logits, batch)
            for mixer in model.mixers:
                extra = mixer.aux_loss()
                if extra is not None:
                    loss = loss + extra
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(train_cfg["grad_clip"]))
        optimizer.step()
        progress = TrainProgress(step + 1, total_steps, lr)
        for mixer in model.mixers:
            mixer.after_optimizer_step(progress)

        result.steps = step + 1
        result.tokens_trained += batch.n_tokens
        result.tokens_trained_padded += batch.tokens.numel()
        window_tokens += batch.n_tokens
        info = StepInfo(step + 1, total_steps, float(loss.item()), lr, 0.0)

        if (step + 1) % eval_every == 0 or step + 1 == total_steps:
            val = evaluate_split(
                model, data, "val", device, int(eval_cfg["batch_size"]),
                limit=int(eval_cfg["val_examples"]), autocast=autocast,
            )
            info.val = val
            result.history.append({"step": step + 1, "train_loss": info.loss, "val": val})
            score = selection_score(data.objective, val)
            if score > best_score:
                best_score = score
                result.best_step, result.best_val = step + 1, val
                result.best_state = _cpu_state(model)
            window_tokens, window_start = 0, time.perf_counter()  # don't time evaluation
        else:
            synchronize(device)
            elapsed = time.perf_counter() - window_start
            info.tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0
        if on_step:
            on_step(info)
    result.train_time_s = time.perf_counter() - start
    return result


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
