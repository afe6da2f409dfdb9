"""`compare --versus MODEL`: ratios and signed differences checked by hand, the cautious
verdicts (seed intervals, test-set noise for a single seed, identical values), the ranges by
context length, and what the command writes."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app, main
from bimix_bench.results.comparison import comparison_frame
from bimix_bench.results.records import append_record
from bimix_bench.results.versus import versus_cells, versus_ranges
from tests.test_records import make_record


def _rec(model: str, seed: int, value: float, speeds=(1.0e4, 3.0e4, 100.0), subtask="listops",
         metric="accuracy", n_test=2000, context=512, task="lra") -> dict:
    test = {metric: value, "loss": 1.0, "n": n_test}
    rec = make_record(task=task, subtask=subtask, model=model, seed=seed, test=test, speeds=speeds)
    rec["arch"] = {**rec["arch"], "max_seq_len": context}
    return rec


def _cells(records, model="bimix"):
    table, _ = comparison_frame(records)
    return versus_cells(table, model, records)


def _cell(cells, versus, subtask="listops"):
    return cells[(cells["versus"] == versus) & (cells["subtask"] == subtask)].iloc[0]


def test_ratios_are_model_over_other_and_delta_favours_model():
    records = [_rec("bimix", 0, 0.30, speeds=(2.0e4, 6.0e4, 50.0)),
               _rec("transformer", 0, 0.20, speeds=(1.0e4, 4.0e4, 200.0))]
    c = _cell(_cells(records), "transformer")
    assert (c["train_ratio"], c["inference_ratio"], c["decode_ratio"]) == pytest.approx((2.0, 1.5, 0.25))
    assert c["delta"] == pytest.approx(0.10)


def test_no_speed_ratio_between_rows_of_different_processors():
    records = [_rec("bimix", 0, 0.30, speeds=(2.0e4, 6.0e4, 50.0)),
               _rec("transformer", 0, 0.20, speeds=(1.0e4, 4.0e4, 200.0))]
    records[0]["environment"] = {**records[0]["environment"], "devices": ["AMD EPYC"]}
    records[1]["environment"] = {**records[1]["environment"], "devices": ["Intel Xeon"]}
    c = _cell(_cells(records), "transformer")
    assert all(math.isnan(c[k]) for k in ("train_ratio", "inference_ratio", "decode_ratio"))
    assert c["delta"] == pytest.approx(0.10)  # the quality comparison stays


def test_delta_sign_follows_the_metric_direction():
    # bits per byte: lower is better, so bimix's 1.4 against 1.5 favours bimix (+0.1).
    records = [_rec("bimix", 0, 1.4, metric="bits_per_byte", subtask="code", task="long_code"),
               _rec("gla", 0, 1.5, metric="bits_per_byte", subtask="code", task="long_code")]
    c = _cell(_cells(records), "gla", subtask="code")
    assert c["delta"] == pytest.approx(0.1)
    assert c["verdict"] == "better (1 seed)"  # no test-noise estimate for bits per byte


def test_verdict_with_seeds_needs_disjoint_intervals():
    close = [_rec("bimix", s, v) for s, v in enumerate((0.50, 0.60, 0.70))]
    close += [_rec("mamba2", s, v) for s, v in enumerate((0.55, 0.65, 0.75))]
    assert _cell(_cells(close), "mamba2")["verdict"] == "level"
    apart = [_rec("bimix", s, v) for s, v in enumerate((0.80, 0.81, 0.82))]
    apart += [_rec("mamba2", s, v) for s, v in enumerate((0.50, 0.51, 0.52))]
    assert _cell(_cells(apart), "mamba2")["verdict"] == "better"


def test_single_seed_proportion_within_test_noise_is_level():
    # 0.499 vs 0.5 on 2000 items each: se = sqrt(2 * 0.25 / 2000) = 0.0158, far above 0.001.
    noise = [_rec("bimix", 0, 0.499), _rec("transformer", 0, 0.5)]
    assert _cell(_cells(noise), "transformer")["verdict"] == "level"
    # 0.16 vs 0.07 on 32,000 items: se ~ 0.0025, 0.09 is 36 of them.
    apart = [_rec("bimix", 0, 0.16, n_test=32000), _rec("transformer", 0, 0.07, n_test=32000)]
    assert _cell(_cells(apart), "transformer")["verdict"] == "better (1 seed)"
    same = [_rec("bimix", 0, 0.0), _rec("transformer", 0, 0.0)]
    assert _cell(_cells(same), "transformer")["verdict"] == "equal"


def test_ranges_by_context_span_the_cells():
    records = []
    for subtask, context, bimix_train in (("a", 1024, 2.0e4), ("b", 1024, 3.0e4), ("c", 4096, 5.0e4)):
        records += [_rec("bimix", 0, 0.9, speeds=(bimix_train, 3.0e4, 10.0), subtask=subtask,
                         context=context, n_test=32000),
                    _rec("transformer", 0, 0.5, speeds=(1.0e4, 3.0e4, 10.0), subtask=subtask,
                         context=context, n_test=32000)]
    ranges = versus_ranges(_cells(records)).set_index("context")
    assert ranges.loc[1024, "cells"] == 2 and ranges.loc[4096, "cells"] == 1
    assert (ranges.loc[1024, "train_ratio_min"], ranges.loc[1024, "train_ratio_max"]) == (2.0, 3.0)
    assert ranges.loc[4096, "train_ratio_min"] == ranges.loc[4096, "train_ratio_max"] == 5.0
    assert ranges.loc[1024, "better"] == ranges.loc[1024, "one_seed"] == 2


def test_cells_without_the_model_are_left_out():
    records = [_rec("transformer", 0, 0.2), _rec("gla", 0, 0.3)]
    assert _cells(records).empty


def test_compare_versus_writes_markdown_and_json(tmp_path):
    run = tmp_path / "run"
    for rec in (_rec("bimix", 0, 0.3, speeds=(2.0e4, 6.0e4, 50.0)),
                _rec("transformer", 0, 0.2, speeds=(1.0e4, 4.0e4, 200.0))):
        append_record(run, rec)
    md, js = tmp_path / "v.md", tmp_path / "v.json"
    result = CliRunner().invoke(app, ["compare", str(run), "--versus", "bimix", "--markdown", str(md),
                                      "--json", str(js)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "## bimix against each model, per cell" in text and "| 2.00x" in text
    doc = json.loads(js.read_text())
    assert doc["versus"]["model"] == "bimix"
    assert doc["versus"]["cells"][0]["train_ratio"] == pytest.approx(2.0)
    assert math.isclose(doc["versus"]["by_context"][0]["decode_ratio_min"], 0.25)


def test_compare_versus_unknown_model_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    append_record(run, _rec("transformer", 0, 0.2))
    assert main(["compare", str(run), "--versus", "bimixx"]) == 2
    err = capsys.readouterr().err
    assert "no records of that model here (models: transformer)" in err and err.count("\n") == 1
