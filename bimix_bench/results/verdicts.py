"""What a comparison can say: per (task, subtask, budget) whether any model beats the task's
chance level, and per published anchor whether the reference model reproduced it.

A model beats chance when its mean is better than the chance level
  - by more than its uncertainty: the 95% seed interval with two or more seeds; with one seed,
    1.96 binomial standard errors of its test set for a proportion (nothing for other metrics),
  - and by at least MIN_GAIN of the way from chance to a perfect score (1 for accuracy and
    exact match, 0 for bits per byte). With 96,000 scored MQAR queries a model 0.005 above
    1/N clears the binomial noise by nine standard errors, yet it recalls next to nothing;
    such a cell cannot rank models on the ability the task measures.
A cell (task, subtask, budget) in which no model beats chance is uninformative: its
differences between models say nothing about the task, whatever the means say.

An anchor is reproduced when every ok seed of its model reaches `reproduced_at`; it is "not
run" when the table has no record of its model on its subtask at one of its budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bimix_bench.metrics.selection import reaches
from bimix_bench.results.records import budget_of_label
from bimix_bench.task import Anchor, Chance

KEY = ["task", "subtask", "budget"]
PROPORTIONS = ("accuracy", "exact_match")
MIN_GAIN = 0.05  # share of the distance from chance to a perfect score a model must cover
# Test-split metric holding how many items a proportion counts, per task family.
_COUNT_KEYS = ("n", "n_queries", "n_questions")


@dataclass(frozen=True)
class AnchorLine:
    task: str
    anchor: Anchor
    budget: str
    status: str  # "reproduced", "not reproduced" or "not run"
    seeds: tuple[float, ...]  # the model's ok test values, one per seed

    def text(self) -> str:
        a = self.anchor
        got = ", ".join(f"{v:.3g}" for v in self.seeds) or "no finished seed"
        return (f"{self.task}/{a.subtask} ({self.budget}): reference {self.status}: {a.model} "
                f"{a.metric} {got} (reproduced at {a.reproduced_at:g}; published {a.published:g}, "
                f"{a.source})")

    def as_dict(self) -> dict[str, Any]:
        a = self.anchor
        return {"task": self.task, "subtask": a.subtask, "budget": self.budget, "model": a.model,
                "metric": a.metric, "published": a.published, "reproduced_at": a.reproduced_at,
                "source": a.source, "status": self.status, "seeds": list(self.seeds)}


def test_counts(records: list[dict]) -> dict[tuple, int]:
    """(task, subtask, budget, model) -> test items behind a proportion (smallest over seeds)."""
    counts: dict[tuple, int] = {}
    for rec in records:
        test = ((rec.get("metrics") or {}).get("test") or {})
        n = next((test[k] for k in _COUNT_KEYS if isinstance(test.get(k), int)), None)
        key = (rec["task"], rec["subtask"], rec["budget"], rec["model"])
        if n:
            counts[key] = min(n, counts.get(key, n))
    return counts


def task_plugin(name: str):
    """The registered task family, or None (records of a family not installed here)."""
    from bimix_bench.registry import TASKS

    try:
        return TASKS.get(name).obj
    except Exception:  # an unknown family: no chance level or anchors to apply
        return None


def chance_levels(records: list[dict]) -> dict[tuple, Chance]:
    """(task, subtask, budget) -> the family's chance level, from the first record's data facts."""
    levels: dict[tuple, Chance] = {}
    for rec in records:
        key = (rec["task"], rec["subtask"], rec["budget"])
        if key in levels:
            continue
        task = task_plugin(rec["task"])
        level = task.chance(rec["subtask"], rec.get("data") or {}) if task else None
        if level is not None:
            levels[key] = level
    return levels


def mark_chance(table: pd.DataFrame, records: list[dict], counts: dict[tuple, int]) -> pd.DataFrame:
    """Adds `chance` (the level), `above_chance` (True/False/None per row) and `informative`
    (per cell: True, False, or None without a chance level) to a comparison table."""
    levels = chance_levels(records)
    table = table.copy()
    table["chance"] = math.nan
    table["chance_basis"] = ""
    table["above_chance"] = None
    table["informative"] = None
    for key, index in table.groupby(KEY, sort=False, dropna=False).groups.items():
        level = levels.get(tuple(key))
        if level is None:
            continue
        above = []
        for i in index:
            row = table.loc[i]
            if row["metric"] != level.metric:
                continue
            n = counts.get((row["task"], row["subtask"], row["budget"], row["model"]))
            verdict = beats_chance(row, level, n)
            table.at[i, "above_chance"] = verdict
            above.append(verdict)
            table.at[i, "chance"] = level.value
            table.at[i, "chance_basis"] = level.basis
        if above:
            table.loc[index, "informative"] = any(above)
    return table


def beats_chance(row: pd.Series, level: Chance, n_test: int | None) -> bool:
    mean = row["mean"]
    if not finite_number(mean):
        return False
    higher_is_better = row["direction"] != "min"
    margin = (float(mean) - level.value) * (1.0 if higher_is_better else -1.0)
    perfect = 1.0 if higher_is_better else 0.0
    if margin < MIN_GAIN * abs(perfect - level.value):
        return False
    if row["n_ok"] >= 2 and finite_number(row["ci95"]):
        reach = float(row["ci95"])
    elif row["metric"] in PROPORTIONS and n_test:
        p = min(max(float(mean), 0.0), 1.0)
        reach = 1.96 * math.sqrt(max(p * (1 - p), level.value * (1 - level.value)) / n_test)
    else:
        reach = 0.0
    return margin > reach


def anchor_lines(records: list[dict], frame: pd.DataFrame) -> list[AnchorLine]:
    """One line per anchor of every family in `records`, at each anchor budget present.
    `frame` is records_frame(records) (per-seed values, grid cells marked)."""
    lines = []
    budgets_of = {}
    for rec in records:
        budgets_of.setdefault(rec["task"], set()).add(rec["budget"])
    for task_name in sorted(budgets_of):
        task = task_plugin(task_name)
        for anchor in (task.anchors() if task else []):
            for budget in sorted(budgets_of[task_name]):
                if anchor.budgets and budget_of_label(budget) not in anchor.budgets:
                    continue
                cell = frame[(frame["task"] == task_name) & (frame["subtask"] == anchor.subtask)
                             & (frame["budget"] == budget)]
                if cell.empty:
                    continue
                mine = cell[(cell["model"] == anchor.model) & cell["counted"].astype(bool)]
                ok = mine[(mine["status"] == "ok") & (mine["metric"] == anchor.metric)]
                values = tuple(float(v) for v in ok["metric_value"].dropna())
                if mine.empty:
                    status = "not run"
                elif values and all(reaches(anchor.metric, v, anchor.reproduced_at) for v in values) and len(values) == len(mine):
                    status = "reproduced"
                else:
                    status = "not reproduced"
                lines.append(AnchorLine(task_name, anchor, budget, status, values))
    return lines


def finite_number(value: Any) -> bool:
    """A real, finite number (not a bool, None, NaN or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
