"""Summary tables: headline-metric choice, per-record frame, seed aggregation with Student-t
confidence intervals, markdown rendering and the files a run folder gets."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pandas as pd
import pytest

from bimix_bench.results import tables
from bimix_bench.results.tables import (
    MAIN_METRIC,
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    aggregate,
    headline_metric,
    metric_direction,
    records_frame,
    t_quantile_975,
    to_markdown,
    write_tables,
)
from tests.test_records import make_record


def _lm(model: str, seed: int, bpb: float, **kw) -> dict:
    """A record of a language-modelling task, scored in bits per byte."""
    return make_record(task="long_code", subtask="python", model=model, seed=seed,
                       test={"bits_per_byte": bpb, "loss": bpb * math.log(2)}, **kw)


def _cls(model: str, seed: int, acc: float, **kw) -> dict:
    return make_record(model=model, seed=seed, test={"accuracy": acc, "loss": 1.0}, **kw)


def test_metric_direction_and_priority():
    assert metric_direction("accuracy") == "max"
    assert metric_direction("exact_match") == "max"
    assert metric_direction("f1") == "max"
    assert metric_direction("bits_per_byte") == "min"
    with pytest.raises(KeyError):
        metric_direction("mystery")
    assert list(MAIN_METRIC)[:4] == ["accuracy", "exact_match", "f1", "bits_per_byte"]
    assert headline_metric(["loss", "f1", "exact_match"]) == "exact_match"
    assert headline_metric(["bits_per_byte", "loss"]) == "bits_per_byte"
    assert headline_metric(["n"]) is None


def test_records_frame_one_row_per_record():
    recs = [_cls("transformer", 0, 0.5), _lm("bimix", 0, 1.25, speeds=(5e3, None, 8e3)),
            make_record(model="mamba2", status="skipped", params=None, arch=None,
                        metrics=None, throughput=None, peak_memory_bytes=None)]
    frame = records_frame(recs)
    assert list(frame.columns) == RECORD_COLUMNS
    assert len(frame) == 3
    first, second, skipped = (frame.iloc[i] for i in range(3))
    assert (first["metric"], first["metric_value"]) == ("accuracy", 0.5)
    assert (second["metric"], second["metric_value"]) == ("bits_per_byte", 1.25)
    assert second["train_tokens_per_s"] == 5e3 and math.isnan(second["inference_tokens_per_s"])
    assert second["decode_tokens_per_s"] == 8e3
    assert first["params_non_embedding"] == 102_000 and first["backend"] == "torch-reference"
    # The skipped cell keeps its task's headline metric name, with no value.
    assert skipped["metric"] == "accuracy" and math.isnan(skipped["metric_value"])
    assert skipped["status"] == "skipped" and math.isnan(skipped["train_tokens_per_s"])


def test_headline_metric_is_shared_within_a_task():
    # One model reports exact_match and f1, the other only f1: exact_match is preferred, so the
    # second model has no headline value rather than a different metric in the same column.
    recs = [make_record(model="a", test={"exact_match": 0.3, "f1": 0.5}),
            make_record(model="b", test={"f1": 0.6})]
    frame = records_frame(recs)
    assert list(frame["metric"]) == ["exact_match", "exact_match"]
    assert frame["metric_value"].iloc[0] == 0.3 and math.isnan(frame["metric_value"].iloc[1])


def test_aggregate_mean_std_and_ci_by_hand():
    recs = [_cls("transformer", s, v, speeds=(t, 2 * t, None))
            for s, v, t in [(0, 0.5, 100.0), (1, 0.6, 300.0), (2, 0.7, 200.0)]]
    recs.append(make_record(model="transformer", seed=3, status="oom", metrics={},
                            throughput={k: None for k in ("train_tokens_per_s",
                                                          "inference_tokens_per_s",
                                                          "decode_tokens_per_s")}))
    recs += [_cls("bimix", 0, 0.9), _cls("bimix", 1, 0.8)]
    summary = aggregate(records_frame(recs))
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["model"]) == ["bimix", "transformer"]  # higher accuracy first
    row = summary.set_index("model").loc["transformer"]
    assert row["n_seeds"] == 4 and row["n_ok"] == 3
    assert row["mean"] == pytest.approx(0.6)
    assert row["std"] == pytest.approx(0.1)
    # t_{0.975, 2} * 0.1 / sqrt(3) = 4.303 * 0.0577
    assert row["ci95"] == pytest.approx(0.2484, abs=1e-4)
    assert row["train_tokens_per_s"] == 200.0 and row["inference_tokens_per_s"] == 400.0
    assert math.isnan(row["decode_tokens_per_s"])
    assert row["not_ok"] == "oom:1" and row["direction"] == "max"
    bimix = summary.set_index("model").loc["bimix"]
    assert bimix["ci95"] == pytest.approx(12.7062 * math.sqrt(0.005) / math.sqrt(2), rel=1e-4)


def test_aggregate_lower_is_better_ordering_and_single_seed():
    recs = [_lm("transformer", 0, 1.3), _lm("bimix", 0, 1.1), _lm("mamba2", 0, 1.2)]
    summary = aggregate(records_frame(recs))
    assert list(summary["model"]) == ["bimix", "mamba2", "transformer"]  # lower bpb first
    assert (summary["direction"] == "min").all()
    assert summary["std"].isna().all() and summary["ci95"].isna().all()  # one seed: no spread


def test_aggregate_groups_by_budget_and_subtask():
    recs = [_cls("bimix", 0, 0.5), _cls("bimix", 0, 0.7, budget="small"),
            make_record(subtask="text", model="bimix", test={"accuracy": 0.6})]
    summary = aggregate(records_frame(recs))
    assert len(summary) == 3 and (summary["n_ok"] == 1).all()


def test_aggregate_of_nothing_is_empty():
    assert list(aggregate(records_frame([])).columns) == SUMMARY_COLUMNS


def test_t_quantiles_with_and_without_scipy(monkeypatch):
    expected = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042}
    scipy_present = True
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        scipy_present = False
    if scipy_present:
        for df, t in expected.items():
            assert t_quantile_975(df) == pytest.approx(t, abs=1e-3)
        assert t_quantile_975(200) == pytest.approx(1.972, abs=1e-3)

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("scipy hidden for this test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    for df, t in expected.items():
        assert t_quantile_975(df) == pytest.approx(t, abs=1e-3)
    assert t_quantile_975(31) == 1.96 and t_quantile_975(1000) == 1.96
    if scipy_present:  # the built-in table agrees with scipy to its printed precision
        monkeypatch.setattr(builtins, "__import__", real_import)
        table = {df: tables._T975[df - 1] for df in range(1, 31)}
        for df, t in table.items():
            assert t_quantile_975(df) == pytest.approx(t, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_to_markdown_github_format_and_number_formatting():
    df = pd.DataFrame({
        "model": ["bimix", "transformer"],
        "mean": [0.612345, math.nan],
        "train_tokens_per_s": [123456.7, 987.25],
        "peak_memory_bytes": [2_000_000_000, None],
        "seed": [0, 1],
    })
    text = to_markdown(df)
    lines = text.splitlines()
    assert lines[0].startswith("| model") and "train_tokens_per_s" in lines[0]
    assert set(lines[1].replace("|", "").replace(":", "").strip()) <= {"-", " "}
    mean_cell = lines[3].split("|")[2]  # numbers are right-aligned in their column
    assert mean_cell.strip() == "-" and mean_cell.endswith("- ") and mean_cell.startswith("  ")
    model_cell = lines[2].split("|")[1]  # text left-aligned
    assert model_cell.startswith(" bimix ")
    assert "0.6123" in lines[2] and "123,457" in lines[2] and "2,000,000,000" in lines[2]
    assert "987.2" in lines[3] and lines[3].count(" - |") == 2
    assert "nan" not in text.lower()
    # A pipe or line break inside text must not split the row.
    reason = to_markdown(pd.DataFrame({"reason": ["out of | memory\nat step 3"]})).splitlines()
    assert len(reason) == 3 and reason[2] == "| out of \\| memory at step 3 |"


def test_write_tables_writes_markdown_and_csv(tmp_path: Path):
    recs = [_cls("transformer", s, v) for s, v in [(0, 0.5), (1, 0.6), (2, 0.7)]]
    recs += [_cls("bimix", s, v) for s, v in [(0, 0.65), (1, 0.75)]]
    recs += [_lm("bimix", 0, 1.1), _lm("transformer", 0, 1.2)]
    paths = write_tables(tmp_path / "run", recs)
    assert set(paths) == {"markdown", "csv"}
    assert paths["markdown"] == tmp_path / "run" / "summary.md"
    assert paths["csv"] == tmp_path / "run" / "summary.csv"

    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == SUMMARY_COLUMNS
    assert len(csv) == 4
    row = csv[(csv["task"] == "lra") & (csv["model"] == "transformer")].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["ci95"] == pytest.approx(0.2484, abs=1e-4)

    md = paths["markdown"].read_text(encoding="utf-8")
    assert "## lra / listops (budget tiny): accuracy, higher is better" in md
    assert "## long_code / python (budget tiny): bits_per_byte, lower is better" in md
    assert "## All records" in md and md.count("| bimix") == 2 + 3  # 2 sections + 3 records
    assert list(tmp_path.joinpath("run").glob(".*.tmp")) == []  # no temporary files left

    # Rewriting replaces the files.
    write_tables(tmp_path / "run", recs[:1])
    assert len(pd.read_csv(paths["csv"])) == 1


def test_write_tables_without_records(tmp_path: Path):
    paths = write_tables(tmp_path, [])
    assert "No records." in paths["markdown"].read_text(encoding="utf-8")
    assert list(pd.read_csv(paths["csv"]).columns) == SUMMARY_COLUMNS


def test_terminal_table_drops_low_priority_columns_when_narrow():
    import pandas as pd

    from bimix_bench.cli.ui import RUN_VIEW, records_table

    frame = pd.DataFrame([{c: f"value-of-{c}" for c in RUN_VIEW}])
    wide = records_table(frame, "t", RUN_VIEW, width=1000)
    assert [c.header for c in wide.columns] == list(RUN_VIEW.values()) and wide.caption is None
    narrow = records_table(frame, "t", RUN_VIEW, width=120)
    headers = [c.header for c in narrow.columns]
    assert "model" in headers and "test" in headers and "time s" not in headers
    assert narrow.caption.startswith("not shown at this width: time s")


def test_terminal_table_keeps_the_seed_column_when_narrow():
    import pandas as pd

    from bimix_bench.cli.ui import RUN_VIEW, records_table

    frame = pd.DataFrame([{**{c: f"value-of-{c}" for c in RUN_VIEW}, "seed": s} for s in (0, 1)])
    for width in (120, 80, 40):
        headers = [c.header for c in records_table(frame, "t", RUN_VIEW, width=width).columns]
        assert "seed" in headers and "model" in headers  # two seeds never look like duplicates


def test_summary_files_are_readable_by_others(tmp_path: Path):
    import stat

    paths = write_tables(tmp_path, [_cls("transformer", 0, 0.5)])
    for path in (paths["markdown"], paths["csv"]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_progress_shows_no_loss_before_the_first_read():
    import math
    from types import SimpleNamespace

    from bimix_bench.cli.ui import RichReporter
    from bimix_bench.engine.trainer import StepInfo

    reporter = RichReporter()
    reporter.current = reporter.progress.add_task("cell", total=None, status="")
    cell = SimpleNamespace(subtask="s", seed=0, model="m")
    reporter.step(cell, StepInfo(3, 600, math.nan, 1e-3, 0.0))  # before the first loss read
    assert reporter.progress.tasks[0].fields["status"] == "loss -"
    reporter.step(cell, StepInfo(50, 600, 1.23456, 1e-3, 0.0))
    assert reporter.progress.tasks[0].fields["status"] == "loss 1.235"
