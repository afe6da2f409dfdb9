"""Figures: the Pareto front, axis labels and plotted values, checked on the returned figure
objects; PNG files written and non-empty."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bimix_bench.results.plots import (
    bucket_families,
    metric_by_bucket,
    pareto_front,
    quality_vs_throughput,
    record_context_series,
    save_figure,
    merge_series,
    speed_document_series,
    throughput_vs_context,
)
from tests.test_records import make_record


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.45), (0.5, 0.7), (3.0, 0.45)]
    # (2, 0.4) is beaten by (3, 0.45) on both; the duplicate (3, 0.45) points tie, both stay.
    assert pareto_front(points) == [3, 0, 2, 4]
    # Lower is better (bits per byte): (2, 0.4) now wins on quality against (1, 0.5).
    assert pareto_front(points, higher_y_is_better=False) == [1, 2, 4]


def _summary() -> pd.DataFrame:
    return pd.DataFrame({
        "model": ["transformer", "bimix", "mamba2"],
        "metric": ["accuracy"] * 3, "direction": ["max"] * 3,
        "mean": [0.60, 0.65, 0.55], "ci95": [0.02, math.nan, 0.9], "n_ok": [3, 1, 2],
        "train_tokens_per_s": [1.0e4, 1.8e4, 2.0e4], "inference_tokens_per_s": [3e4, 6e4, 2e4],
    })


def test_quality_vs_throughput_labels_and_front(tmp_path):
    fig = quality_vs_throughput(_summary(), title="lra/listops (tiny)")
    train_ax, infer_ax = fig.axes
    assert train_ax.get_xlabel() == "training tokens/s"
    assert infer_ax.get_xlabel() == "inference tokens/s"
    assert train_ax.get_ylabel() == "accuracy (higher is better)"
    assert train_ax.get_xscale() == "log"
    front = next(line for line in train_ax.get_lines() if line.get_label() == "Pareto front (means)")
    # Training speed: transformer (1e4, .60) is beaten by bimix (1.8e4, .65); mamba2 is fastest.
    assert list(front.get_xdata()) == [1.8e4, 2.0e4]
    assert list(front.get_ydata()) == [0.65, 0.55]
    front = next(line for line in infer_ax.get_lines() if line.get_label() == "Pareto front (means)")
    assert list(front.get_xdata()) == [6e4]  # bimix is fastest and best at inference
    path = save_figure(fig, tmp_path / "q.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_speed_axis_labels_stay_readable_within_one_decade():
    # Speeds of 1e4-2e4: the default log axis labels every minor tick as 10^4-style text,
    # which overlaps; compact labels on a few ticks per decade stay legible.
    fig = quality_vs_throughput(_summary(), title="narrow")
    fig.canvas.draw()
    axis = fig.axes[0].xaxis
    major = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    minor = [t.get_text() for t in axis.get_ticklabels(minor=True) if t.get_text()]
    assert major and all(text.endswith("k") for text in major), major
    assert minor == []


def test_quality_vs_throughput_draws_each_seed_and_ci_only_from_three_seeds():
    seeds = pd.DataFrame({
        "model": ["transformer"] * 3 + ["mamba2"] * 2 + ["bimix"],
        "status": ["ok"] * 5 + ["ok"],
        "metric_value": [0.58, 0.60, 0.62, 0.2, 0.9, 0.65],
    })
    fig = quality_vs_throughput(_summary(), title="t", seeds=seeds)
    train_ax = fig.axes[0]
    dashes = [c for c in train_ax.collections if c.get_offsets().shape[0] > 1]
    drawn = sorted(sorted(float(y) for _, y in c.get_offsets()) for c in dashes)
    assert drawn == [[0.2, 0.9], [0.58, 0.60, 0.62]]  # one seed alone is just the mean
    bars = [c for c in train_ax.collections if c not in dashes and len(c.get_segments())]
    spans = sorted(round(float(seg[1][1] - seg[0][1]), 6) for c in bars for seg in c.get_segments())
    assert [s for s in spans if s > 0] == [0.04]  # transformer's 3-seed CI; mamba2's 2-seed interval is not drawn
    assert "single seeds" in fig._suptitle.get_text()


def _speed_doc() -> dict:
    def cell(context, status="ok", fwd=None):
        c = {"context": context, "status": status, "reason": None if status == "ok" else "x"}
        if fwd:
            c["figures"] = {"forward": {"tokens_per_s": fwd, "ratio": 1.0, "backend": "sdpa"}}
        return c
    return {
        "settings": {"kinds": ["forward"]},
        "models": {
            "transformer": {"cells": [cell(1024, fwd=5e5), cell(2048, fwd=4e5), cell(4096, "oom")]},
            "bimix": {"cells": [cell(1024, fwd=6e5), cell(4096, fwd=6e5), cell(2048, fwd=6e5)]},
        },
    }


def test_a_sweep_split_over_documents_plots_as_one_line_per_model():
    first, second = _speed_doc(), _speed_doc()
    del second["models"]["bimix"]
    second["models"]["transformer"]["cells"] = [
        {"context": 4096, "status": "ok", "reason": None, "figures": {
            "forward": {"tokens_per_s": 3e5, "backend": "sdpa"},
            "decode": {"tokens_per_s": 9e2, "backend": "kv-cache+sdpa"}}},  # decode path: not in label
        {"context": 8192, "status": "ok", "reason": None,
         "figures": {"forward": {"tokens_per_s": 2e5, "backend": "sdpa"}}}]
    second["settings"]["kinds"] = ["forward", "decode"]
    merged: dict = {}
    merge_series(merged, speed_document_series(first))
    merge_series(merged, speed_document_series(second))
    assert sorted(merged) == ["bimix [sdpa]", "transformer [sdpa]"]
    # 4096 was out of memory in the first document and measured in the second: the later wins.
    assert merged["transformer [sdpa]"]["forward"] == [(1024, 5e5), (2048, 4e5), (4096, 3e5), (8192, 2e5)]
    assert merged["transformer [sdpa]"]["decode"] == [(4096, 9e2)]


def test_throughput_vs_context_marks_out_of_memory(tmp_path):
    series = speed_document_series(_speed_doc())
    assert series["transformer [sdpa]"]["forward"] == [(1024, 5e5), (2048, 4e5), (4096, None)]
    assert series["bimix [sdpa]"]["forward"] == [(1024, 6e5), (2048, 6e5), (4096, 6e5)]
    fig = throughput_vs_context(series)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "context length (tokens)"
    assert ax.get_ylabel() == "forward tokens/s"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert "transformer [sdpa] (oom from 4096)" in labels
    oom_marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in oom_marks] == [[4096]]
    assert save_figure(fig, tmp_path / "t.png").stat().st_size > 1000


def test_record_context_series_needs_two_contexts():
    def rec(model, context, value, seed=0):
        r = make_record(model=model, seed=seed, speeds=(value, 2 * value, None))
        r["arch"] = {**r["arch"], "max_seq_len": context}
        return r
    records = [rec("transformer", 512, 100.0), rec("transformer", 512, 300.0, seed=1),
               rec("transformer", 1024, 50.0), rec("bimix", 512, 80.0)]
    series = record_context_series(records)[("lra", "listops", "tiny")]
    assert series["transformer"]["train_tokens_per_s"] == [(512, 200.0), (1024, 50.0)]  # median
    assert series["bimix"]["inference_tokens_per_s"] == [(512, 160.0)]
    assert record_context_series(records[:2] + records[3:]) == {}  # one context each: no plot


def _bucket_record(model: str, seed: int, values: list[float]) -> dict:
    labels = ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    test = {"exact_match": 0.5, **{f"em_depth_{b}": v for b, v in zip(labels, values)}}
    return make_record(model=model, seed=seed, test=test)


def test_metric_by_bucket_generic_over_prefix(tmp_path):
    names = ["exact_match", "f1", "n_depth_0.0-0.2", "n_depth_0.2-0.4", "bpb_len2x", "em_depth_0.6-0.8", "em_depth_0.0-0.2", "em_depth_0.2-0.4",
             "bpb_pos_1024-2048", "bpb_pos_0-1024", "bpb_pos_10240-20480", "acc_1"]
    assert bucket_families(names) == {
        "em_depth": ["0.0-0.2", "0.2-0.4", "0.6-0.8"],
        "bpb_pos": ["0-1024", "1024-2048", "10240-20480"],  # numeric, not string, order
    }
    records = [_bucket_record("bimix", 0, [0.9, 0.8, 0.7, 0.6, 0.5]),
               _bucket_record("bimix", 1, [0.7, 0.8, 0.7, 0.6, 0.5]),
               _bucket_record("transformer", 0, [0.9, 0.9, 0.9, 0.9, 0.9])]
    fig = metric_by_bucket(records, "em_depth")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "evidence depth (fraction of the context)"
    assert ax.get_ylabel().startswith("exact match (test, mean over seeds")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0-0.2", "0.2-0.4", "0.4-0.6",
                                                            "0.6-0.8", "0.8-1.0"]
    bimix = next(c for c in ax.containers if c.get_label() == "bimix")  # errorbar: line + bars
    assert list(bimix.lines[0].get_ydata()) == pytest.approx([0.8, 0.8, 0.7, 0.6, 0.5])
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))  # fractions: the whole range
    assert save_figure(fig, tmp_path / "d.png").stat().st_size > 1000
