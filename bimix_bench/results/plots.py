"""Figures for `compare --plot` and `speed --plot` (matplotlib, no display needed).

Every function returns a matplotlib Figure built without pyplot (no global state, renders with
Agg when saved), so callers and tests can inspect axes, labels and lines before `save_figure`.
  quality_vs_throughput   headline quality against training and inference tokens/s for one
                          (task, subtask, budget), Pareto front marked
  throughput_vs_context   tokens/s against context length per model, one panel per kind
  metric_by_bucket        a bucketed metric family ("em_depth_0.0-0.2", "bpb_pos_0-1024", ...)
                          per model, mean over seeds with 95% CI
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from matplotlib.figure import Figure

from bimix_bench.results.tables import t_quantile_975

SPEED_LABELS = {
    "train_tokens_per_s": "training tokens/s",
    "inference_tokens_per_s": "inference tokens/s",
    "decode_tokens_per_s": "decode tokens/s",
    "forward": "forward tokens/s",
    "train": "train-step tokens/s",
    "decode": "decode tokens/s",
}
METRIC_NAMES = {"em": "exact match", "f1": "F1", "bpb": "bits per byte", "acc": "accuracy"}
# Fractions in [0, 1]: drawn on the whole range so that plots of runs compare by eye.
FRACTION_METRICS = {"em", "f1", "acc"}
BUCKET_AXES = {
    "depth": "evidence depth (fraction of the context)",
    "pos": "position in the context (tokens)",
    "len": "sequence length (tokens)",
    "length": "sequence length (tokens)",
}


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def safe_name(*parts: Any) -> str:
    """A file-name stem from parts ("lra", "listops", "tiny" -> "lra_listops_tiny")."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "figure"


# ---------------------------------------------------------------------------------------------
# Quality against throughput


def pareto_front(points: list[tuple[float, float]], higher_y_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats: higher x (speed) and better y (quality),
    at least as good on both and strictly better on one. Sorted by x."""
    sign = 1.0 if higher_y_is_better else -1.0
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            x2 >= x and sign * y2 >= sign * y and (x2 > x or sign * y2 > sign * y)
            for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def quality_vs_throughput(group: pd.DataFrame,
                          speeds: tuple[str, ...] = ("train_tokens_per_s", "inference_tokens_per_s"),
                          title: str = "", seeds: pd.DataFrame | None = None) -> Figure:
    """One panel per speed column for one (task, subtask, budget) of a comparison table
    (columns model, metric, direction, mean, n_ok, ci95 and the speeds). With `seeds` (rows
    of tables.records_frame: model, status, metric_value), every seed is drawn as a small dot
    at its model's speed. Error bars (95% CI) are drawn from three seeds on: with two, the
    t-interval is wider than most metrics' range and says less than the two dots."""
    metric = next((m for m in group["metric"] if isinstance(m, str)), "quality")
    higher = next((d for d in group["direction"] if isinstance(d, str)), "max") == "max"
    fig = Figure(figsize=(5.2 * len(speeds), 4.2), layout="constrained")
    axes = fig.subplots(1, len(speeds), squeeze=False)[0]
    for ax, speed in zip(axes, speeds):
        rows = group[group[speed].notna() & group["mean"].notna()]
        points = [(float(r[speed]), float(r["mean"])) for _, r in rows.iterrows()]
        for (_, r), (x, y) in zip(rows.iterrows(), points):
            ci = r.get("ci95")
            err = float(ci) if r.get("n_ok", 0) >= 3 and isinstance(ci, float) and not math.isnan(ci) else 0.0
            line = ax.errorbar([x], [y], yerr=[err], fmt="o", capsize=3, label=r["model"])
            if seeds is not None:
                mine = seeds[(seeds["model"] == r["model"]) & (seeds["status"] == "ok")]
                values = mine["metric_value"].dropna().astype(float).tolist()
                if len(values) > 1:
                    ax.scatter([x] * len(values), values, s=160, alpha=0.7, marker="_", linewidths=2,
                               color=line.lines[0].get_color())
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(points, higher)
        if front:
            ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--",
                    color="0.4", linewidth=1, label="Pareto front (means)")
        ax.set_xscale("log")
        _readable_log_ticks(ax.xaxis)
        ax.set_xlabel(SPEED_LABELS.get(speed, speed))
        ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
        ax.grid(True, alpha=0.3)
        if points:
            ax.legend(fontsize=7)
    if seeds is not None and (group["n_ok"] > 1).any():
        title = f"{title or 'quality vs throughput'}: dot = mean, dashes = single seeds, bars = 95% CI (3+ seeds)"
    fig.suptitle(title or "quality vs throughput", fontsize=10 if seeds is not None else None)
    return fig


def _readable_log_ticks(axis) -> None:
    """Ticks at 1, 1.5, 2, 3, 5 and 7 per decade, labelled "400k"/"1.5M", and no minor labels:
    models' speeds often span less than a decade, where matplotlib's default labels every
    minor tick in scientific notation and the labels run into each other."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    axis.set_major_formatter(ticker.EngFormatter(sep=""))
    axis.set_minor_formatter(ticker.NullFormatter())


# ---------------------------------------------------------------------------------------------
# Throughput against context length


def speed_document_series(doc: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float | None]]]]:
    """{series label: {kind: [(context, tokens/s or None when out of memory)]}} of a speed
    document; a label names the model and the kernels of its forward and training step (the
    decode path is a separate choice and would split one model's line between documents)."""
    from bimix_bench.speed.document import iter_cells

    out: dict[str, dict[str, list[tuple[int, float | None]]]] = {}
    labels: dict[str, str] = {}
    for model, cell in iter_cells(doc):
        figures = cell.get("figures") or {}
        if model not in labels:
            backends = sorted({f["backend"] for kind, f in figures.items()
                               if kind != "decode" and f.get("backend")})
            labels[model] = f"{model} [{', '.join(backends)}]" if backends else model
        for kind in doc["settings"]["kinds"]:
            if kind in figures:
                value = figures[kind]["tokens_per_s"]
            elif cell["status"] == "oom":
                value = None
            else:
                continue
            out.setdefault(labels[model], {}).setdefault(kind, []).append((cell["context"], value))
    return out


def merge_series(into: dict[str, dict[str, list]], more: dict[str, dict[str, list]]) -> None:
    """Add `more`'s points to `into` (same label and kind: one line over the union of contexts,
    `more` winning where both have a context), keeping each line sorted by context."""
    for label, by_kind in more.items():
        for kind, points in by_kind.items():
            merged = dict(into.setdefault(label, {}).get(kind, []))
            merged.update(points)
            into[label][kind] = sorted(merged.items())


def record_context_series(records: list[dict]) -> dict[tuple[str, str, str], dict[str, dict[str, list]]]:
    """From run records at several contexts: {(task, subtask, budget): {model: {speed column:
    [(context, median tokens/s over ok seeds)]}}}, only for groups where some model has at
    least two contexts."""
    values: dict[tuple, dict[str, dict[str, dict[int, list[float]]]]] = {}
    for rec in records:
        context = (rec.get("arch") or {}).get("max_seq_len")
        if rec["status"] != "ok" or not context:
            continue
        key = (rec["task"], rec["subtask"], rec["budget"])
        for column in ("train_tokens_per_s", "inference_tokens_per_s", "decode_tokens_per_s"):
            fig = (rec.get("throughput") or {}).get(column)
            if fig:
                (values.setdefault(key, {}).setdefault(rec["model"], {})
                 .setdefault(column, {}).setdefault(int(context), []).append(float(fig["value"])))
    out = {}
    for key, models in values.items():
        series = {m: {c: sorted((ctx, statistics.median(v)) for ctx, v in by_ctx.items())
                      for c, by_ctx in cols.items()} for m, cols in models.items()}
        if any(len(points) >= 2 for cols in series.values() for points in cols.values()):
            out[key] = series
    return out


def throughput_vs_context(series: dict[str, dict[str, list[tuple[int, float | None]]]],
                          title: str = "") -> Figure:
    """One panel per kind; a line per series; contexts that ran out of memory are marked with
    an x on the panel's floor and named in the legend."""
    kinds = list(dict.fromkeys(k for by_kind in series.values() for k in by_kind))
    fig = Figure(figsize=(5.0 * max(1, len(kinds)), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        floor = min((v for by_kind in series.values() for c, v in by_kind.get(kind, []) if v),
                    default=1.0)
        for label, by_kind in series.items():
            points = by_kind.get(kind, [])
            ok = [(c, v) for c, v in points if v is not None]
            oom = [c for c, v in points if v is None]
            name = label + (f" (oom from {min(oom)})" if oom else "")
            line = ax.plot([c for c, _ in ok], [v for _, v in ok], "o-", label=name)
            if oom:
                ax.plot(oom, [floor / 2] * len(oom), "x", color=line[0].get_color(), markersize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(SPEED_LABELS.get(kind, kind))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "throughput vs context length")
    return fig


# ---------------------------------------------------------------------------------------------
# Bucketed metrics (quality against evidence depth, position or length)


_BUCKET_RE = re.compile(r"^(?P<prefix>.+?)_(?P<bucket>[0-9][^_]*)$")


def bucket_families(metric_names: Iterable[str]) -> dict[str, list[str]]:
    """Metric families named "<prefix>_<bucket>" with a bucket label that starts with a number
    ("em_depth_0.0-0.2", "bpb_pos_1024-2048"): {prefix: bucket labels in numeric order}, for
    prefixes with at least two buckets."""
    found: dict[str, set[str]] = {}
    for name in metric_names:
        m = _BUCKET_RE.match(name)
        if m and not m["prefix"].startswith("n_"):  # "n_depth_*": example counts, not quality
            found.setdefault(m["prefix"], set()).add(m["bucket"])
    return {p: sorted(b, key=_bucket_order) for p, b in found.items() if len(b) >= 2}


def _bucket_order(label: str) -> tuple[float, str]:
    m = re.match(r"[0-9]+(\.[0-9]+)?", label)
    return (float(m.group(0)) if m else math.inf, label)


def metric_by_bucket(records: list[dict], prefix: str, buckets: list[str] | None = None,
                     xlabel: str | None = None, ylabel: str | None = None,
                     split: str = "test", title: str = "") -> Figure:
    """Mean over ok seeds (95% CI error bars) of metrics "<prefix>_<bucket>" per model."""
    per_model: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        if rec["status"] != "ok":
            continue
        for name, value in ((rec.get("metrics") or {}).get(split) or {}).items():
            if name.startswith(prefix + "_"):
                bucket = name[len(prefix) + 1:]
                per_model.setdefault(rec["model"], {}).setdefault(bucket, []).append(float(value))
    if buckets is None:
        buckets = sorted({b for by_bucket in per_model.values() for b in by_bucket}, key=_bucket_order)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    positions = range(len(buckets))
    for model, by_bucket in sorted(per_model.items()):
        means, errs = [], []
        for b in buckets:
            vals = by_bucket.get(b, [])
            means.append(statistics.fmean(vals) if vals else math.nan)
            errs.append(t_quantile_975(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
                        if len(vals) >= 2 else 0.0)
        ax.errorbar(list(positions), means, yerr=errs, fmt="o-", capsize=3, label=model)
    ax.set_xticks(list(positions))
    ax.set_xticklabels(buckets, rotation=30 if len(buckets) > 6 else 0)
    metric, _, axis = prefix.rpartition("_") if "_" in prefix else (prefix, "", "")
    ax.set_xlabel(xlabel or BUCKET_AXES.get(axis, axis or "bucket"))
    name = METRIC_NAMES.get(metric, metric or prefix)
    ax.set_ylabel(ylabel or f"{name} ({split}, mean over seeds, 95% CI)")
    if metric in FRACTION_METRICS:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title or prefix)
    return fig
