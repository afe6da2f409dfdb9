"""Summary tables from result records: one row per record, then one row per
(task, subtask, model, budget) with the headline metric's mean and 95% confidence interval over
seeds, and markdown/CSV renderings of both.

The headline metric of a (task, subtask) is the first of MAIN_METRIC that its records report on
the test split, so every model of a task is compared on the same number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tabulate import tabulate

from bimix_bench.files import write_text_atomic
from bimix_bench.metrics.selection import MAIN_METRIC, headline_metric, metric_direction  # noqa: F401
from bimix_bench.results.records import as_compared

RECORD_COLUMNS = [
    "task", "subtask", "model", "seed", "budget", "status", "reason", "lr", "lr_role", "counted",
    "params_non_embedding", "metric", "metric_value", "train_tokens_per_s", "inference_tokens_per_s",
    "decode_tokens_per_s", "peak_memory_bytes", "backend", "wall_time_s",
]
GROUP_COLUMNS = ["task", "subtask", "model", "budget"]
SPEED_COLUMNS = ["train_tokens_per_s", "inference_tokens_per_s", "decode_tokens_per_s"]
SUMMARY_COLUMNS = [
    "task", "subtask", "budget", "model", "metric", "direction", "n_seeds", "n_ok", "mean",
    "std", "ci95", "lr", *SPEED_COLUMNS, "peak_memory_bytes", "wall_time_s", "backend", "not_ok",
]

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30, used when scipy is absent;
# beyond 30 degrees of freedom the normal quantile is close enough.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
_Z975 = 1.96


def t_quantile_975(df: int) -> float:
    """t_{0.975} with `df` degrees of freedom (the 95% two-sided CI multiplier)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return _T975[df - 1] if df <= len(_T975) else _Z975
    return float(student_t.ppf(0.975, df))


# ---------------------------------------------------------------------------------------------
# Frames


def counted_records(records: list[dict]) -> tuple[list[dict], list[str]]:
    """The records that count as results, and notes on what was left out:
    - the cells of a learning-rate grid at a rate that was not chosen (lr_selection.py);
    - fixed-rate runs of one cell at rates other than the one validation chooses among them
      (lr_selection.at_chosen_fixed_rates);
    - repeats of one seed: the same (task, subtask, budget, model, seed) found more than once,
      e.g. in two run folders given to `compare`, is one seed, not several independent ones.
      The latest record that finished ok is kept (else the latest).
    A grid that has not tried every rate yet is named in the notes too."""
    from bimix_bench.results.lr_selection import (
        at_chosen_fixed_rates,
        at_chosen_rates,
        incomplete_grids,
    )

    best: dict[tuple, dict] = {}
    repeats: dict[tuple, int] = {}
    kept, fixed_notes = at_chosen_fixed_rates(at_chosen_rates(records))
    for rec in kept:
        key = (rec["task"], rec["subtask"], rec["budget"], rec["model"], rec["seed"])
        old = best.get(key)
        repeats[key] = repeats.get(key, 0) + 1
        rank = (rec["status"] == "ok", str(rec.get("created_at", "")))
        if old is None or rank >= (old["status"] == "ok", str(old.get("created_at", ""))):
            best[key] = rec
    notes = [f"{'/'.join(str(k) for k in key[:4])} seed {key[4]}: {n} records of the same seed, "
             "counted once (the latest that finished ok)" for key, n in repeats.items() if n > 1]
    return list(best.values()), fixed_notes + notes + incomplete_grids(records)


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record with the columns of RECORD_COLUMNS. `counted` is False for records
    that counted_records leaves out (a grid's rates that were not chosen, repeats of a seed):
    they stay in the frame as evidence, and `aggregate` leaves them out."""
    from bimix_bench.results.lr_selection import lr_role, record_lr

    counted = {id(rec) for rec in counted_records(records)[0]}
    # The headline metric is chosen per (task, subtask) from every record's test metrics.
    names: dict[tuple[str, str], set[str]] = {}
    for rec in records:
        names.setdefault((rec["task"], rec["subtask"]), set()).update(_test_metrics(rec))
    chosen = {key: headline_metric(found) for key, found in names.items()}

    rows = []
    for rec in records:
        metric = chosen[(rec["task"], rec["subtask"])]
        value = _test_metrics(rec).get(metric) if metric else None
        throughput = rec.get("throughput") or {}
        backends = rec.get("backends") or {}
        rows.append({
            "task": rec["task"],
            "subtask": rec["subtask"],
            "model": rec["model"],
            "seed": rec["seed"],
            "budget": rec["budget"],
            "status": rec["status"],
            "reason": rec.get("reason"),
            "lr": _float_or_nan(record_lr(rec)),
            "lr_role": lr_role(rec),
            "counted": id(rec) in counted,
            "params_non_embedding": (rec.get("params") or {}).get("non_embedding"),
            "metric": metric,
            "metric_value": _float_or_nan(value),
            **{kind: _float_or_nan((throughput.get(kind) or {}).get("value"))
               for kind in SPEED_COLUMNS},
            "peak_memory_bytes": rec.get("peak_memory_bytes"),
            "backend": backends.get("mixer") or _throughput_backend(throughput),
            "wall_time_s": _float_or_nan(rec.get("wall_time_s")),
        })
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, subtask, model, budget), with the columns of SUMMARY_COLUMNS.

    mean / std / ci95 are over the seeds with status "ok" and a headline value: std is the
    sample standard deviation, ci95 the half-width t_{0.975, n-1} * std / sqrt(n) (both NaN for
    a single seed). Speeds, peak memory and wall time are medians over the same seeds. `lr` is
    the learning rate(s) those seeds trained at (the chosen rate, where a grid chose it).
    Records with `counted` False (see counted_records) are left out."""
    rows = []
    frame = frame[frame["counted"].astype(bool)]
    for key, group in frame.groupby(GROUP_COLUMNS, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        values = ok["metric_value"].dropna().astype(float)
        n = len(values)
        mean = float(values.mean()) if n else math.nan
        std = float(values.std(ddof=1)) if n >= 2 else math.nan
        ci95 = t_quantile_975(n - 1) * std / math.sqrt(n) if n >= 2 else math.nan
        metric = next((m for m in group["metric"] if isinstance(m, str)), None)
        not_ok = group.loc[group["status"] != "ok", "status"].value_counts().sort_index()
        rows.append({
            **dict(zip(GROUP_COLUMNS, key)),
            "metric": metric,
            "direction": metric_direction(metric) if metric else None,
            "n_seeds": len(group),
            "n_ok": n,
            "mean": mean,
            "std": std,
            "ci95": ci95,
            "lr": ", ".join(f"{lr:g}" for lr in sorted(set(ok["lr"].dropna()))),
            **{col: _median(ok[col]) for col in SPEED_COLUMNS},
            "peak_memory_bytes": _median(ok["peak_memory_bytes"]),
            "wall_time_s": _median(ok["wall_time_s"]),
            "backend": ", ".join(sorted({b for b in ok["backend"] if isinstance(b, str)})),
            "not_ok": ", ".join(f"{status}:{count}" for status, count in not_ok.items()),
        })
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if summary.empty:
        return summary
    # Best model first within each (task, subtask, budget); models without a value last.
    sign = summary["direction"].map({"max": -1.0, "min": 1.0}).fillna(1.0)
    summary["_rank"] = (summary["mean"] * sign).fillna(math.inf)
    summary = summary.sort_values(["task", "subtask", "budget", "_rank", "model"], kind="stable")
    return summary.drop(columns="_rank").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Rendering


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table; numbers right-aligned with a sensible precision,
    missing values shown as "-"."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) or _all_numbers(df[c]) for c in df.columns]
    cells = [[_format_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    return tabulate(
        cells, headers=[str(c) for c in df.columns], tablefmt="github", disable_numparse=True,
        colalign=["right" if is_num else "left" for is_num in numeric] or None,
    )


def write_tables(run_dir: Path, records: list[dict]) -> dict[str, Path]:
    """Write summary.md (per-task sections and all records) and summary.csv (the aggregate)
    into `run_dir`; each file is replaced atomically. Returns {"markdown": ..., "csv": ...}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    frame = records_frame(as_compared(records))
    summary = aggregate(frame)
    paths = {"markdown": run_dir / "summary.md", "csv": run_dir / "summary.csv"}
    write_text_atomic(paths["markdown"], summary_markdown(frame, summary))
    write_text_atomic(paths["csv"], summary.to_csv(index=False))
    return paths


def summary_markdown(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The summary.md document: one section per (task, subtask, budget), then every record."""
    parts = ["# Results", ""]
    if frame.empty:
        return "\n".join(parts + ["No records.", ""])
    parts += [
        "Headline metric on the test split: mean and 95% confidence half-width (Student t) over "
        "the seeds that finished (`n_ok` of `n_seeds`). Speeds, peak memory and wall time are "
        "medians over the same seeds. Best model first.",
        "",
    ]
    section_cols = [c for c in SUMMARY_COLUMNS
                    if c not in ("task", "subtask", "budget", "metric", "direction")]
    for (task, subtask, budget), part in summary.groupby(["task", "subtask", "budget"],
                                                          sort=False, dropna=False):
        metric, direction = part["metric"].iloc[0], part["direction"].iloc[0]
        name = f"{task} / {subtask}" if subtask else str(task)
        better = {"max": "higher is better", "min": "lower is better"}.get(direction, "")
        headline = f"{metric}, {better}" if isinstance(metric, str) else "no headline metric"
        parts += [f"## {name} (budget {budget}): {headline}", "",
                  to_markdown(part[section_cols]), ""]
    parts += ["## All records", "", to_markdown(frame), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Helpers


def _test_metrics(rec: dict) -> dict[str, Any]:
    return (rec.get("metrics") or {}).get("test") or {}


def _throughput_backend(throughput: dict) -> str | None:
    return next((m["backend"] for m in throughput.values() if m and m.get("backend")), None)


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _median(column: pd.Series) -> float:
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _is_number(value: Any) -> bool:
    return pd.api.types.is_number(value) and not pd.api.types.is_bool(value)


def _all_numbers(column: pd.Series) -> bool:
    present = [v for v in column if not _missing(v)]
    return bool(present) and all(_is_number(v) for v in present)


def _missing(value: Any) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _format_cell(value: Any) -> str:
    if _missing(value):
        return "-"
    if not _is_number(value):
        # A pipe or line break inside a cell would end the row early.
        return " ".join(str(value).split()).replace("|", "\\|")
    value = value.item() if hasattr(value, "item") else value  # numpy scalar -> Python number
    if isinstance(value, float) and not value.is_integer() and abs(value) < 1000:
        return f"{value:.4g}"
    # Whole numbers and large values (counts, tokens/s, bytes): digits grouped once long.
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.0f}"


