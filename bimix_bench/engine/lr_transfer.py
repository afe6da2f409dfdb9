"""`run --lr-from RUN`: train the later seeds of a model at the learning rate that an earlier
run's grid chose for it, when the grid and the seeds cannot share one process (the grid ran in
an earlier session, or on another machine). The choice is the one `compare` and the runner make
(results/lr_selection.py), read from the earlier run's records once, when the new run is
configured, and kept in its config.yaml, so a resumed run trains at the same rates.

It refuses whatever would pool cells that were not trained alike: a grid that is missing,
unfinished or failed; an earlier protocol that differs (train, task, evaluation, parameters or
depth); a model whose options differ; a seed that the grid itself trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bimix_bench.config import subtask_train
from bimix_bench.errors import UsageError

# Config sections that must be equal for two runs' cells to be one protocol; the rate itself
# (train.lr, train.lr_grid) and the run's own selection (subtasks, models, seeds) may differ.
# A subtask's own protocol (task.subtask_protocol) is compared as part of its train section.
_UNCOMPARED = {"train": {"lr", "lr_grid"}, "task": {"subtasks", "subtask_protocol"}}
_COMPARED_SECTIONS = ("train", "task", "eval", "params", "arch", "budget")


def rate_key(subtask: str, model: str) -> str:
    return f"{subtask}/{model}"


def transferred_rates(folder: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """{"folder", "rates": {"<subtask>/<model>": {lr, grid, seed, chosen_from}}} for every
    subtask and model of `cfg` (a resolved run config), read from the grids in `folder` (a run
    folder, or a folder of run folders). Raises UsageError with the first reason it cannot."""
    from bimix_bench.results.lr_selection import chosen_rates, grid_results, lr_role
    from bimix_bench.results.records import model_label, run_folders, run_records

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--lr-from {folder}: no such folder")
    records = [r for path in run_folders(folder) for r in run_records(path)]
    family, budget = cfg["task"]["family"], cfg["budget"]["name"]
    variants = cfg["run"].get("variants") or {}
    rates: dict[str, Any] = {}
    for subtask in cfg["task"]["subtasks"]:
        for model in cfg["run"]["models"]:
            label = model_label({"model": model, "variant": variants.get(model)})
            what = f"{label} on {family}/{subtask} ({budget})"
            grid = [r for r in records if lr_role(r) == "grid" and r["task"] == family
                    and r["subtask"] == subtask and r["budget"] == budget and r["model"] == model
                    and r.get("variant") == variants.get(model)]
            if not grid:
                raise UsageError(f"--lr-from {folder}: no learning-rate grid of {what} there")
            chosen = chosen_rates(grid)
            if len({r.get("run_id") for r in grid}) > 1:
                raise UsageError(f"--lr-from {folder}: several grids of {what} there; name the "
                                 "run folder that holds the one to follow")
            planned = [float(x) for x in grid[0]["learning_rate"]["grid"]]
            tried = {float(r["learning_rate"]["lr"]) for r in grid}
            if not set(planned) <= tried:
                raise UsageError(f"--lr-from {folder}: the grid of {what} has tried "
                                 f"{len(tried)} of its {len(planned)} rates; finish it first")
            if not chosen:
                raise UsageError(f"--lr-from {folder}: no rate of the grid of {what} finished ok")
            (key, lr), = chosen.items()
            _same_protocol(grid[0]["config"], cfg, model, subtask, folder, what)
            seed = grid[0]["seed"]
            if seed in cfg["seeds"]:
                raise UsageError(f"--lr-from {folder}: seed {seed} of {what} was trained by that "
                                 "grid already; run the other seeds")
            rates[rate_key(subtask, model)] = {"lr": lr, "grid": planned, "seed": seed,
                                               "chosen_from": grid_results(grid, key)}
    return {"folder": str(folder), "rates": rates}


def _same_protocol(earlier: dict[str, Any], cfg: dict[str, Any], model: str, subtask: str,
                   folder: Path, what: str) -> None:
    """UsageError naming the first config key in which the grid's run differs from this one
    (the train section as the subtask's cells train: config.subtask_train)."""
    if (earlier.get("models") or {}).get(model) != cfg["models"][model]:
        raise UsageError(f"--lr-from {folder}: the grid of {what} ran with the model options "
                         f"{(earlier.get('models') or {}).get(model)}, this run has "
                         f"{cfg['models'][model]}")
    def read(c: dict[str, Any], section: str) -> dict[str, Any]:
        return subtask_train(c, subtask) if section == "train" else c.get(section) or {}

    for section in _COMPARED_SECTIONS:
        skip = _UNCOMPARED.get(section, set())
        a = {k: v for k, v in read(earlier, section).items() if k not in skip}
        b = {k: v for k, v in read(cfg, section).items() if k not in skip}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise UsageError(f"--lr-from {folder}: the grid of {what} ran with "
                                 f"{section}.{key}={a.get(key)!r}, this run has {b.get(key)!r}; "
                                 "its rate belongs to another protocol")
