"""Every task family runs offline at the tiny budget for every registered model, end to end
through the CLI: one record per (subtask, model), each `ok` with a finite headline metric, except
the LRA subtasks that need downloaded data, which are `skipped` with a reason saying how to get
them."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.registry import MODELS, TASKS

NEEDS_DATA = {("lra", "text"), ("lra", "retrieval"), ("lra", "image")}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["lra", "mqar", "long_code", "multidoc_qa", "state_tracking", "babilong"])
def test_family_runs_offline_for_every_model(family, tmp_path):
    out = tmp_path / family
    # The tiny budget with half its steps, smaller test sets and one timing round, to keep CI
    # short: this is a smoke test of every (family, model) pair, not a measurement.
    quick = ["--set", "train.steps=20", "--set", "eval.test_examples=32", "--set", "throughput.repeats=1"]
    result = CliRunner().invoke(app, ["run", "--task", family, "--budget", "tiny", *quick, "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    subtasks = TASKS.get(family).obj.defaults("tiny")["subtasks"]
    cells = {(r["subtask"], r["model"]): r for r in records}
    assert len(cells) == len(records)  # no duplicates
    assert set(cells) == {(s, m) for s in subtasks for m in MODELS.names()}
    for (subtask, model), rec in cells.items():
        if (family, subtask) in NEEDS_DATA:
            assert rec["status"] == "skipped" and rec["reason"], (subtask, model)
            continue
        assert rec["status"] == "ok", (subtask, model, rec["reason"])
        values = [v for v in rec["metrics"]["test"].values() if isinstance(v, (int, float))]
        assert values and all(math.isfinite(v) for v in values), (subtask, model)
        assert rec["tokens_trained"] > 0 and abs(rec["params"]["relative_error"]) <= 0.05
        if model == "bimix":  # routing measured on a test sequence, in every BiMix record
            layers = rec["extras"]["probe"]["routing"]["layers"]
            assert len(layers) == rec["arch"]["n_layers"]
            assert all(layer["token_variation"] >= 0 for layer in layers)
