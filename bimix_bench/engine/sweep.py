"""A sweep: the runs of a plan file, each in its own folder, resumable, within a time limit.

For time-limited machines (a preemptible cluster slot, a lease of minutes): `bimix-bench sweep
PLAN.yaml --time-limit 25m` starts or resumes each run of the plan in turn, stops cleanly at
the first cell boundary after the limit, and says what is left. Running the same command again
continues where it stopped: a run folder that exists is resumed with its saved config.

Plan file:
    out: runs/my-sweep            # folder that holds one run folder per entry (required)
    runs:                         # in order (required)
      - name: mqar_cpu            # the run folder's name under `out` (required, unique)
        task: mqar                # required
        budget: cpu               # default: tiny
        models: [transformer, bimix]   # default: every registered model
        seeds: [0, 1, 2]          # default: the budget's
        subtasks: [T64_kv4]       # default: the task's for the budget
        set: ["train.steps=200"]  # --set overrides
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bimix_bench.errors import UsageError

_RUN_KEYS = {"name", "task", "budget", "models", "seeds", "subtasks", "set"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smh]?)$")


@dataclass
class PlannedRun:
    name: str
    task: str
    budget: str = "tiny"
    models: list[str] | None = None
    seeds: list[int] | None = None
    subtasks: list[str] | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Plan:
    out: Path
    runs: list[PlannedRun]


def parse_duration(text: str) -> float:
    """"90s", "25m", "2h" or a plain number of seconds -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"--time-limit expects a duration such as 90s, 25m or 2h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def load_plan(path: Path) -> Plan:
    from bimix_bench.config import load_yaml

    raw = load_yaml(path, "sweep plan")
    if not isinstance(raw.get("out"), str) or not raw["out"]:
        raise UsageError(f"sweep plan {path}: `out` (the folder for the run folders) is required")
    entries = raw.get("runs")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"sweep plan {path}: `runs` must be a non-empty list")
    unknown_top = set(raw) - {"out", "runs"}
    if unknown_top:
        raise UsageError(f"sweep plan {path}: unknown key(s) {', '.join(sorted(unknown_top))}; valid: out, runs")
    runs, names = [], set()
    for i, entry in enumerate(entries):
        where = f"sweep plan {path}, run {i + 1}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a mapping with name, task, ...")
        unknown = set(entry) - _RUN_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                             f"{', '.join(sorted(_RUN_KEYS))}")
        name, task = entry.get("name"), entry.get("task")
        if not isinstance(name, str) or not _NAME.match(name):
            raise UsageError(f"{where}: `name` must be a folder name (letters, digits, . _ -), got {name!r}")
        if name in names:
            raise UsageError(f"{where}: the name {name!r} is used twice")
        if not isinstance(task, str):
            raise UsageError(f"{where}: `task` is required")
        names.add(name)
        runs.append(PlannedRun(
            name=name, task=task, budget=str(entry.get("budget", "tiny")),
            models=_str_list(entry.get("models"), f"{where}: models"),
            seeds=_int_list(entry.get("seeds"), f"{where}: seeds"),
            subtasks=_str_list(entry.get("subtasks"), f"{where}: subtasks"),
            overrides=_str_list(entry.get("set"), f"{where}: set") or [],
        ))
    return Plan(Path(raw["out"]), runs)


def _str_list(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where} must be a list of strings, got {value!r}")
    return value


def _int_list(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UsageError(f"{where} must be a list of integers, got {value!r}")
    return value


@dataclass
class RunProgress:
    name: str
    folder: Path
    cells: int
    recorded: int

    @property
    def state(self) -> str:
        if self.recorded >= self.cells:
            return "complete"
        return "started" if self.recorded else "to run"


def run_sweep(plan: Plan, time_limit_s: float | None, device: str, reporter) -> list[RunProgress]:
    """Start or resume every run of the plan in order until the time limit; the progress of
    each run afterwards."""
    from bimix_bench.engine.runner import execute, prepare, record_cell_key
    from bimix_bench.results.records import run_records

    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    for run in plan.runs:
        if deadline is not None and time.monotonic() >= deadline:
            break
        execute(_request(plan, run, device, deadline), reporter)
    progress = []
    for run in plan.runs:
        folder = plan.out / run.name
        _, cells, _ = prepare(_request(plan, run, device, None))
        recorded = {record_cell_key(r) for r in run_records(folder)} if folder.exists() else set()
        progress.append(RunProgress(run.name, folder, len(cells),
                                    sum(1 for c in cells if c.key in recorded)))
    return progress


def _request(plan: Plan, run: PlannedRun, device: str, deadline: float | None):
    from bimix_bench.engine.runner import RunRequest

    folder = plan.out / run.name
    if (folder / "config.yaml").exists():  # started before: continue it as it was configured
        return RunRequest(task=run.task, resume=folder, device=device, deadline=deadline)
    return RunRequest(task=run.task, budget=run.budget, models=run.models, seeds=run.seeds,
                      subtasks=run.subtasks, overrides=list(run.overrides), out_dir=folder,
                      device=device, deadline=deadline)
