"""Learning-rate grids: the choice is made on validation only, the later seeds train at it,
compare counts only the chosen rate, and an interrupted grid resumes without losing or
repeating a cell."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from bimix_bench.results.lr_selection import at_chosen_rates, chosen_rates, grid_results, incomplete_grids
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.results.tables import aggregate, records_frame
from tests.test_records import make_record


def grid_record(model: str, lr: float, val_acc: float, test_acc: float, seed: int = 0,
                role: str = "grid", status: str = "ok", val_loss: float = 1.0) -> dict:
    rec = make_record(model=model, seed=seed, status=status, test={"accuracy": test_acc, "loss": 1.0})
    rec["metrics"]["val"] = {"accuracy": val_acc, "loss": val_loss}
    rec["learning_rate"] = {"lr": lr, "grid": [1e-3, 3e-3, 1e-2], "role": role}
    rec["protocol"] = {"name": "test", "planned_steps": 20, "stopped_early": False,
                       "selection_metric": "accuracy"}
    validate_record(rec)
    return rec


def test_choice_follows_validation_and_never_the_test_split():
    records = [
        grid_record("transformer", 1e-3, val_acc=0.40, test_acc=0.90),  # best on test
        grid_record("transformer", 3e-3, val_acc=0.60, test_acc=0.10),  # best on validation
        grid_record("transformer", 1e-2, val_acc=0.50, test_acc=0.50),
        grid_record("bimix", 1e-3, val_acc=0.70, test_acc=0.20),
        grid_record("bimix", 3e-3, val_acc=0.65, test_acc=0.95),
        grid_record("bimix", 1e-2, val_acc=0.99, test_acc=0.99, status="diverged"),  # not ok
    ]
    chosen = {key[-1]: lr for key, lr in chosen_rates(records).items()}
    assert chosen == {"transformer": 3e-3, "bimix": 1e-3}
    kept = at_chosen_rates(records)
    assert [(r["model"], r["learning_rate"]["lr"]) for r in kept] == [("transformer", 3e-3), ("bimix", 1e-3)]
    key = next(k for k in chosen_rates(records) if k[-1] == "bimix")
    assert grid_results(records, key) == {"0.001": 0.70, "0.003": 0.65, "0.01": None}


def test_ties_break_on_validation_loss_then_the_smaller_rate():
    records = [grid_record("gla", 1e-3, 1.0, 0.5, val_loss=0.02),
               grid_record("gla", 3e-3, 1.0, 0.5, val_loss=0.01),
               grid_record("gla", 1e-2, 1.0, 0.5, val_loss=0.01)]
    assert list(chosen_rates(records).values()) == [3e-3]


def test_aggregate_counts_the_chosen_rate_once_with_the_later_seeds():
    records = [grid_record("transformer", 1e-3, 0.4, 0.40), grid_record("transformer", 3e-3, 0.6, 0.60),
               grid_record("transformer", 3e-3, 0.6, 0.70, seed=1, role="chosen"),
               grid_record("transformer", 3e-3, 0.6, 0.80, seed=2, role="chosen")]
    summary = aggregate(records_frame(records))
    row = summary.iloc[0]
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(0.7) and row["lr"] == "0.003"


def test_a_grid_where_no_rate_finished_shows_its_failure():
    records = [grid_record("mamba2", lr, 0.5, 0.5, status="diverged") for lr in (1e-3, 3e-3)]
    assert chosen_rates(records) == {}
    kept = at_chosen_rates(records)
    assert len(kept) == 1 and kept[0]["status"] == "diverged"


# --- end to end: a tiny grid run, interrupted and resumed -----------------------------------

ARGS = ["--task", "mqar", "--budget", "tiny", "--models", "transformer,linear_attn", "--seeds", "0,1",
        "--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "task.n_train=256",
        "--set", "train.lr_grid=[1e-3, 1e-2]", "--set", "throughput.repeats=1",
        "--set", "throughput.decode_tokens=0", "--no-checkpoints"]
ENV = {**os.environ, "COLUMNS": "200"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bimix_bench", *args]


def cell_key(rec: dict) -> tuple:
    return (rec["seed"], rec["model"], rec["learning_rate"]["role"], rec["learning_rate"]["lr"])


@pytest.mark.slow
def test_grid_runs_in_order_and_resume_repeats_nothing(tmp_path):
    full = tmp_path / "full"
    done = subprocess.run(cli("run", *ARGS, "--out", str(full)), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    records = read_records(full)
    # Seed 0: both models at both rates; seed 1: each model once, at its chosen rate.
    assert sorted(cell_key(r) for r in records) == sorted(
        [(0, m, "grid", lr) for m in ("transformer", "linear_attn") for lr in (1e-3, 1e-2)]
        + [(1, m, "chosen", chosen_rates(records)[(full.name, "mqar", "T64_kv4", "tiny", m)])
           for m in ("transformer", "linear_attn")])
    for rec in records:
        assert rec["config"]["train"]["lr"] == rec["learning_rate"]["lr"]
        if rec["learning_rate"]["role"] == "chosen":
            assert set(rec["learning_rate"]["chosen_from"]) == {"0.001", "0.01"}

    # Cut the run after three grid cells, as an interruption between cells would leave it.
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.yaml").write_text((full / "config.yaml").read_text())
    lines = (full / "records.jsonl").read_text().splitlines(keepends=True)
    (part / "records.jsonl").write_text("".join(lines[:3]))
    resumed = subprocess.run(cli("run", "--resume", str(part)), capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 finished cells kept, 3 to run" in resumed.stdout
    after = (part / "records.jsonl").read_text().splitlines(keepends=True)
    assert after[:3] == lines[:3]  # nothing lost or rewritten
    assert len(after) == 6 and len({cell_key(r) for r in read_records(part)}) == 6  # nothing twice
    # The same choice as the uninterrupted run (CPU training is deterministic).
    assert {cell_key(r) for r in read_records(part)} == {cell_key(r) for r in records}
    assert math.isclose(*(sum(r["metrics"]["test"]["accuracy"] for r in read_records(d))
                          for d in (part, full)))


def test_a_gpus_worker_takes_its_share_of_the_grid_and_no_later_seed(tmp_path):
    """Worker 1 of 2 of the first round: every other grid cell (of four: two models, two
    rates), parked for timing; the later seeds wait for a round after the grid is recorded."""
    from bimix_bench.engine.pending import parked_records

    out = tmp_path / "r"
    done = subprocess.run(cli("run", *ARGS, "--out", str(out), "--shard", "0/2",
                              "--defer-throughput"), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    parked = sorted(cell_key(rec) for _, rec in parked_records(out))
    assert parked == [(0, "linear_attn", "grid", 1e-3), (0, "transformer", "grid", 1e-3)]


def test_an_unfinished_grid_is_said_to_be_so():
    partial = [grid_record("bimix", 1e-3, 0.4, 0.4), grid_record("bimix", 3e-3, 0.5, 0.5)]
    (line,) = incomplete_grids(partial)
    assert "bimix" in line and "2 of 3 rates tried" in line
    assert incomplete_grids(partial + [grid_record("bimix", 1e-2, 0.6, 0.6)]) == []
