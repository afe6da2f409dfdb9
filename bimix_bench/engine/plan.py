"""What a run would cost on this machine before it trains: `bimix-bench run --plan`.

Per (model, subtask) of the run: the cells still to train, each cell's step cap, and one
training step and one validation pass timed here with the run's own sizing, batch and
precision. The step is the trainer's (engine/throughput.make_train_step, the step the run
records time) and the timing is the project's one method (timing.timed_median). The worst case
is every cell trained to its cap, which early stopping only shortens; test scoring and
throughput timing come on top. Nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bimix_bench.config import subtask_train
from bimix_bench.config.sections import TrainConfig, eval_config, train_config
from bimix_bench.engine.cells import Cell
from bimix_bench.engine.device import autocast_factory
from bimix_bench.engine.throughput import full_length_batch, make_train_step
from bimix_bench.engine.trainer import batch_size_for, planned_steps, validation_count
from bimix_bench.env import cpu_model
from bimix_bench.errors import SkipCell
from bimix_bench.models.backbone import LanguageModel
from bimix_bench.task import TaskData, evaluate_split
from bimix_bench.timing import timed_median


@dataclass
class CellCost:
    """One (model, subtask) of a plan: how many cells, and what one of them costs here."""

    model: str
    subtask: str
    cells: int
    steps: int  # the protocol's cap per cell (train.steps, or the epochs' steps)
    validation_every: int  # steps between validations (and one at the end)
    tokens_per_step: int  # batch x context of a full-length training batch
    step_s: float  # median seconds of one training step (fwd + bwd + optimizer)
    validation_s: float  # seconds of one validation pass
    skipped: str | None = None  # why the subtask's data could not be built here

    def cell_s(self, steps: int | None = None) -> float:
        """Seconds of one cell's training and validation over `steps` steps (default: the
        cap; a record's `steps` where it stopped early)."""
        steps = self.steps if steps is None else steps
        validations = validation_count(steps, self.validation_every)
        return steps * self.step_s + validations * self.validation_s

    @property
    def worst_case_s(self) -> float:
        """Every cell trained to its cap."""
        return self.cells * self.cell_s()


@dataclass
class TimingSetup:
    """A cell's model and one full-length training batch, built as the run builds them."""

    model: LanguageModel
    batch: Any  # the task's Batch on the device: (batch_size, context) tokens, no padding
    train: TrainConfig
    autocast: Callable[[], Any]


def timing_setup(cell: Cell, data: TaskData, cell_cfg: dict[str, Any], device: torch.device
                 ) -> TimingSetup:
    """`cell`'s model (the width solved for the budget, initialised from the cell's seed) and a
    full-length training batch; `cell_cfg` is the cell's config (its subtask's train keys)."""
    from bimix_bench.engine.runner import SilentReporter, _build

    model, _ = _build(cell, data, cell_cfg, device, {}, SilentReporter())
    train = train_config(cell_cfg)
    batch = full_length_batch(data, batch_size_for(cell_cfg, data.context)).to(device)
    return TimingSetup(model, batch, train, autocast_factory(device, train.precision))


def time_cell(cell: Cell, data: TaskData, cell_cfg: dict[str, Any], device: torch.device,
              repeats: int = 3, warmup: int = 1) -> tuple[float, float]:
    """(seconds of one training step, seconds of one validation pass) of `cell`'s model on
    `data`, built as the run builds it and timed on a full-length training batch."""
    setup = timing_setup(cell, data, cell_cfg, device)
    trainee = copy.deepcopy(setup.model).train()
    step = make_train_step(trainee, setup.batch, data.objective, setup.train, setup.autocast)
    step_s = timed_median(step, device, warmup, repeats)
    evaluation = eval_config(cell_cfg)

    def validate() -> None:
        evaluate_split(setup.model, data, "val", device, evaluation.batch_size,
                       limit=evaluation.val_examples, autocast=setup.autocast)

    validation_s = timed_median(validate, device, 1, 1)
    return step_s, validation_s


def timing_place(device: torch.device) -> str:
    """Where a plan's figures were timed: the GPU's name, or the CPU and its torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}), {torch.get_num_threads()} torch threads"


def plan_costs(cfg: dict[str, Any], cells: list[Cell], task: Any, device: torch.device,
               data_dir=None, repeats: int = 3, progress=None) -> list[CellCost]:
    """A CellCost per (model, subtask) of `cells`, in run order. `progress(text)`, when given,
    is told which model it times."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.subtask), []).append(cell)
    data_of: dict[str, TaskData | SkipCell] = {}
    costs = []
    for (model, subtask), group in groups.items():
        if subtask not in data_of:
            try:
                data_of[subtask] = task.load(subtask, cfg["task"], group[0].seed, data_dir)
            except SkipCell as skip:
                data_of[subtask] = skip
        data = data_of[subtask]
        if isinstance(data, SkipCell):
            costs.append(CellCost(model, subtask, len(group), 0, 1, 0, 0.0, 0.0, str(data)))
            continue
        if progress is not None:
            progress(f"timing {model} on {subtask}")
        cell_cfg = {**cfg, "train": subtask_train(cfg, subtask)}
        steps = planned_steps(cell_cfg, data)
        interval = train_config(cell_cfg).validation_interval(steps)
        step_s, validation_s = time_cell(group[0], data, cell_cfg, device, repeats)
        tokens = batch_size_for(cell_cfg, data.context) * data.context
        costs.append(CellCost(model, subtask, len(group), steps, interval, tokens, step_s,
                              validation_s))
    return costs
