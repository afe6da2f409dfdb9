"""The cells of a run and the learning rate each trains at: every (subtask, seed, model), with
the cells of a learning-rate grid on the first seed and the later seeds at the grid's choice,
or at the choice an earlier run's grid made (`run --lr-from`, engine/lr_transfer.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bimix_bench.config import subtask_train
from bimix_bench.config.sections import train_config
from bimix_bench.engine.checkpoint import grid_tag
from bimix_bench.engine.lr_transfer import rate_key
from bimix_bench.errors import SkipCell


@dataclass
class Cell:
    subtask: str
    seed: int
    model: str
    # Learning rate: "fixed" cells train at the config's rate; "grid" cells at `lr`, one rate
    # of train.lr_grid on the run's first seed; "chosen" cells (later seeds) at the grid's best
    # rate on validation, known only once the grid has finished (results/lr_selection.py).
    role: str = "fixed"
    lr: float | None = None

    @property
    def key(self) -> tuple[str, int, str, float | None]:
        """Identity of the cell in a run folder: a grid has one cell per rate."""
        return (self.subtask, self.seed, self.model, self.lr if self.role == "grid" else None)

    @property
    def tag(self) -> str:
        """File-name suffix that keeps the cells of one grid apart."""
        return grid_tag(self.role, self.lr)



def plan_cells(cfg: dict[str, Any]) -> list[Cell]:
    """Per subtask: with a grid of two or more rates, per model every rate on the first seed,
    then the other seeds at that model's chosen rate (so an interrupted run has whole models
    finished); else every seed at the one rate."""
    grid = lr_grid(cfg)
    models, seeds = cfg["run"]["models"], cfg["seeds"]
    transferred = (cfg["run"].get("lr_from") or {}).get("rates")
    cells = []
    for sub in cfg["task"]["subtasks"]:
        if transferred is not None:  # every seed at the rate an earlier run's grid chose
            cells += [Cell(sub, seed, m, "chosen", transferred[rate_key(sub, m)]["lr"])
                      for seed in seeds for m in models]
            continue
        if len(grid) < 2:
            cells += [Cell(sub, seed, m, "fixed", grid[0]) for seed in seeds for m in models]
            continue
        for m in models:
            cells += [Cell(sub, seeds[0], m, "grid", lr) for lr in grid]
            cells += [Cell(sub, seed, m, "chosen") for seed in seeds[1:]]
    return cells


def ready_to_train(cells: list[Cell], recorded: set[tuple[str, int, str, float | None]]
                   ) -> list[Cell]:
    """The cells that can train now, side by side with one another (`run --gpus`): all but a
    later seed whose rate its model's grid has still to choose, because a rate of that grid
    is not recorded yet. `recorded`: the Cell.key of every record in the run folder."""
    open_grids = {(c.subtask, c.model) for c in cells if c.role == "grid" and c.key not in recorded}
    return [c for c in cells
            if not (c.role == "chosen" and c.lr is None and (c.subtask, c.model) in open_grids)]


def lr_grid(cfg: dict[str, Any]) -> list[float]:
    """The run's learning-rate grid: train.lr_grid, or the one rate train.lr."""
    return train_config(cfg).rates()


def record_cell_key(rec: dict[str, Any]) -> tuple[str, int, str, float | None]:
    """The Cell.key of the cell a record finished."""
    from bimix_bench.results.lr_selection import lr_role, record_lr

    grid = lr_role(rec) == "grid"
    return (rec["subtask"], rec["seed"], rec["model"], record_lr(rec) if grid else None)


def cell_config(cfg: dict[str, Any], cell: Cell, records: list[dict[str, Any]]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config this cell trains with (its learning rate set) and its record's
    "learning_rate" entry. Raises SkipCell when a later seed's grid has no finished rate."""
    from bimix_bench.results.lr_selection import chosen_rates, grid_results

    grid = lr_grid(cfg)
    lr, entry = cell.lr, {"lr": cell.lr, "grid": grid, "role": cell.role}
    lr_from = cfg["run"].get("lr_from")
    if cell.role == "chosen" and lr_from is not None:
        chosen = lr_from["rates"][rate_key(cell.subtask, cell.model)]
        entry.update(grid=chosen["grid"], chosen_from=chosen["chosen_from"],
                     chosen_in=lr_from["folder"])
    elif cell.role == "chosen":
        # Every record of the folder is this run's: match on all but the run id.
        cell_of_run = (cfg["task"]["family"], cell.subtask, cfg["budget"]["name"], cell.model)
        found = [(key, lr) for key, lr in chosen_rates(records).items() if key[1:] == cell_of_run]
        if not found:
            raise SkipCell(f"no rate of the learning-rate grid {grid} finished ok on seed "
                           f"{cfg['seeds'][0]}, so there is no chosen rate to train seed {cell.seed} at")
        key, lr = found[0]
        entry.update(lr=lr, chosen_from=grid_results(records, key))
    cell_cfg = {**cfg, "train": {**subtask_train(cfg, cell.subtask), "lr": lr}}
    return cell_cfg, entry
