"""One model against each of the others (`compare --versus MODEL`): per cell (task, subtask,
budget) its quality difference and its speeds as multiples of the other's, then the ranges of
those multiples by context length, so a summary such as "1.2-1.5x faster in training at
1K-4K" is read off the records rather than worked out by hand.

Quality verdicts are deliberately cautious:
  - both models with two or more ok seeds: "better"/"worse" only when the 95% intervals
    (mean ± ci95) do not overlap, else "level";
  - otherwise (a single seed on either side): "equal" when the means are identical (as when
    every model sits at 0 exact match); for a proportion (accuracy, exact match) whose records
    say how many test items it counts, "level" when the difference is within 1.96 binomial
    standard errors of the two test sets, since then not even the test set separates them;
    else "better (1 seed)"/"worse (1 seed)", which no spread over seeds backs.
"""

from __future__ import annotations

import math

import pandas as pd

from bimix_bench.results.comparison import KEY, same_processor
from bimix_bench.results.verdicts import PROPORTIONS, test_counts
from bimix_bench.results.verdicts import finite_number as _finite


SPEEDS = {"train_tokens_per_s": "train", "inference_tokens_per_s": "inference",
          "decode_tokens_per_s": "decode"}
CELL_COLUMNS = ["task", "subtask", "budget", "context", "model", "versus", "metric", "quality",
                "quality_versus", "delta", "verdict", *[f"{s}_ratio" for s in SPEEDS.values()]]
RANGE_COLUMNS = ["versus", "context", "cells", "better", "level_or_equal", "worse", "one_seed",
                 *[f"{s}_ratio_{e}" for s in SPEEDS.values() for e in ("min", "max")]]


def versus_cells(table: pd.DataFrame, model: str, records: list[dict]) -> pd.DataFrame:
    """One row per (cell, other model) where both `model` and the other have a row in the
    comparison `table`; ratios are model / other, delta is signed so that > 0 favours `model`.
    `records` (those behind `table`) give the test-set sizes."""
    counts = test_counts(records)
    rows = []
    for key, group in table.groupby(KEY, sort=False, dropna=False):
        mine = group[group["model"] == model]
        if mine.empty:
            continue
        a = mine.iloc[0]
        for _, b in group[group["model"] != model].iterrows():
            delta = _signed_delta(a, b)
            rows.append({
                **dict(zip(KEY, key)),
                "context": a["context"], "model": model, "versus": b["model"],
                "metric": a["metric"], "quality": a["mean"], "quality_versus": b["mean"],
                "delta": delta, "verdict": _verdict(a, b, delta, counts),
                # A ratio across processors measures the machines, not the models: left out.
                **{f"{name}_ratio": _ratio(a[col], b[col])
                   if same_processor(a["processor"], b["processor"]) else math.nan
                   for col, name in SPEEDS.items()},
            })
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def versus_ranges(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (other model, context length): how many cells, the quality verdicts counted, and the
    smallest and largest speed multiple over those cells."""
    rows = []
    for (versus, context), group in cells.groupby(["versus", "context"], sort=True, dropna=False):
        verdicts = group["verdict"].str.split(" ").str[0]
        row = {"versus": versus, "context": context, "cells": len(group),
               "better": int((verdicts == "better").sum()),
               "level_or_equal": int(verdicts.isin(["level", "equal"]).sum()),
               "worse": int((verdicts == "worse").sum()),
               "one_seed": int(group["verdict"].str.endswith("(1 seed)").sum())}
        for name in SPEEDS.values():
            values = group[f"{name}_ratio"].dropna()
            row[f"{name}_ratio_min"] = float(values.min()) if len(values) else math.nan
            row[f"{name}_ratio_max"] = float(values.max()) if len(values) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=RANGE_COLUMNS)


def _signed_delta(a: pd.Series, b: pd.Series) -> float:
    if not (_finite(a["mean"]) and _finite(b["mean"])):
        return math.nan
    sign = -1.0 if a["direction"] == "min" else 1.0  # lower bits/byte is better
    return sign * (float(a["mean"]) - float(b["mean"]))


def _verdict(a: pd.Series, b: pd.Series, delta: float, counts: dict[tuple, int]) -> str:
    if not _finite(delta):
        return "no value"
    if a["n_ok"] >= 2 and b["n_ok"] >= 2:
        reach = float(a["ci95"]) + float(b["ci95"])
        if abs(delta) <= reach:
            return "level"
        return "better" if delta > 0 else "worse"
    if delta == 0:
        return "equal"
    if a["metric"] in PROPORTIONS and abs(delta) <= 1.96 * _binomial_se(a, b, counts):
        return "level"
    return "better (1 seed)" if delta > 0 else "worse (1 seed)"


def _binomial_se(a: pd.Series, b: pd.Series, counts: dict[tuple, int]) -> float:
    """Standard error of the difference of two test-set proportions; NaN without counts."""
    variance = 0.0
    for row in (a, b):
        n = counts.get((row["task"], row["subtask"], row["budget"], row["model"]))
        if not n:
            return math.nan
        p = float(row["mean"])
        variance += p * (1.0 - p) / n
    return math.sqrt(variance)


def _ratio(mine, other) -> float:
    return float(mine) / float(other) if _finite(mine) and _finite(other) and other else math.nan


# ---------------------------------------------------------------------------------------------
# Display


def versus_markdown(cells: pd.DataFrame, ranges: pd.DataFrame, model: str) -> str:
    """The two tables as Markdown, ratios as "1.23x" and ranges as "0.85-1.05x"."""
    from bimix_bench.results.tables import to_markdown

    shown_cells = pd.DataFrame([{
        "task": f"{r['task']}/{r['subtask']}" if r["subtask"] else r["task"],
        "budget": r["budget"], "context": _int(r["context"]), "versus": r["versus"],
        "metric": r["metric"],
        model: _value(r["quality"]), "other": _value(r["quality_versus"]),
        "Δ (+ favours " + model + ")": f"{r['delta']:+.3g}" if _finite(r["delta"]) else "-",
        "verdict": r["verdict"],
        **{f"{name} x": _times(r[f"{name}_ratio"]) for name in SPEEDS.values()},
    } for _, r in cells.iterrows()])
    shown_ranges = pd.DataFrame([{
        "versus": r["versus"], "context": _int(r["context"]), "cells": r["cells"],
        "better / level / worse": f"{r['better']} / {r['level_or_equal']} / {r['worse']}",
        "better or worse on 1 seed only": r["one_seed"],
        **{f"{name} x": _span(r[f"{name}_ratio_min"], r[f"{name}_ratio_max"])
           for name in SPEEDS.values()},
    } for _, r in ranges.iterrows()])
    return (f"## {model} against each model, per cell\n\n"
            f"Speeds are {model}'s tokens/s as a multiple of the other model's (medians over "
            "seeds).\n\n" + to_markdown(shown_cells) + "\n\n"
            f"## {model} against each model, by context length\n\n" + to_markdown(shown_ranges) + "\n")


def _int(value) -> str:
    return f"{int(value)}" if _finite(value) else "-"


def _value(value) -> str:
    return f"{value:.4g}" if _finite(value) else "-"


def _times(value) -> str:
    return f"{value:.2f}x" if _finite(value) else "-"


def _span(low, high) -> str:
    if not (_finite(low) and _finite(high)):
        return "-"
    return f"{low:.2f}x" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}x"
