"""Length generalization: a model trained at context L and tested at L, 2L, 4L, ... (test
metrics `<metric>_len<F>x`, engine/runner._longer_lengths). Per (task, subtask, budget, model)
the mean over seeds at each length, and the effective length in RULER's sense: the longest
evaluation length up to which the model's score stays at or above a fixed threshold at every
length tested (`compare --length-threshold`, 0.9 accuracy by default).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from bimix_bench.metrics.selection import metric_direction

_LENGTH_RE = re.compile(r"^(?P<metric>accuracy|bits_per_byte)_len(?P<factor>\d+)x$")
CURVE_COLUMNS = ["task", "subtask", "budget", "model", "metric", "context", "factor", "length",
                 "mean", "n"]


def length_curves(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (task, subtask, budget, model, length): the mean test metric over the seeds
    that finished ok, the training length (factor 1) included."""
    from bimix_bench.results.tables import counted_records

    values: dict[tuple, list[float]] = {}
    for rec in counted_records(records)[0]:
        if rec["status"] != "ok":
            continue
        test = (rec.get("metrics") or {}).get("test") or {}
        context = (rec.get("arch") or {}).get("max_seq_len")
        found = [(m.group("metric"), int(m.group("factor")), v) for k, v in test.items()
                 if (m := _LENGTH_RE.match(k))]
        if not found or not context:
            continue
        metrics = {metric for metric, _, _ in found}
        found += [(metric, 1, test[metric]) for metric in metrics if metric in test]
        for metric, factor, value in found:
            key = (rec["task"], rec["subtask"], rec["budget"], rec["model"], metric, int(context), factor)
            values.setdefault(key, []).append(float(value))
    rows = [{**dict(zip(CURVE_COLUMNS[:7], key)), "length": key[5] * key[6],
             "mean": sum(v) / len(v), "n": len(v)} for key, v in values.items()]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values(["task", "subtask", "budget", "model", "factor"]).reset_index(drop=True)


def effective_lengths(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (task, subtask, budget, model, metric): the longest length up to which the mean
    stays at least as good as `threshold` at every tested length (0 when the training length
    already misses it), and the longest length tested."""
    rows = []
    for key, group in curves.groupby(["task", "subtask", "budget", "model", "metric"], sort=False):
        better_is_max = metric_direction(key[4]) == "max"
        effective = 0
        for _, row in group.sort_values("length").iterrows():
            good = row["mean"] >= threshold if better_is_max else row["mean"] <= threshold
            if not good or not math.isfinite(row["mean"]):
                break
            effective = int(row["length"])
        rows.append({**dict(zip(["task", "subtask", "budget", "model", "metric"], key)),
                     "trained_at": int(group["context"].iloc[0]), "tested_up_to": int(group["length"].max()),
                     "threshold": threshold, "effective_length": effective})
    return pd.DataFrame(rows)


def length_figure(curves: pd.DataFrame, title: str):
    """The metric against log2 evaluation length, one line per model, the training length
    marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for model, group in curves.groupby("model", sort=True):
        ax.plot(group["length"], group["mean"], "o-", label=model)
    ax.axvline(int(curves["context"].iloc[0]), color="grey", linestyle="--", linewidth=1,
               label="training length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel(curves["metric"].iloc[0].replace("_", " "))
    if curves["metric"].iloc[0] == "accuracy":
        ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig
