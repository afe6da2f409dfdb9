"""`run --lr-from`: later seeds train at the rate an earlier run's grid chose on validation, and
nothing is pooled that was not trained alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bimix_bench.engine.lr_transfer import transferred_rates
from bimix_bench.errors import UsageError
from bimix_bench.results.records import read_records
from tests.test_lr_selection import ENV, cli, grid_record


def run_config(models=("gla",), seeds=(1, 2), steps=100, variants=None) -> dict:
    cfg = {"task": {"family": "lra", "subtasks": ["listops"], "length": 64},
           "budget": {"name": "tiny"}, "seeds": list(seeds),
           "train": {"lr": 1e-3, "lr_grid": [], "steps": steps},
           "eval": {"test_examples": 100}, "params": {"non_embedding": 1000}, "arch": {"n_layers": 2},
           "models": {m: {"conv": 4} for m in models},
           "run": {"models": list(models)}}
    if variants:
        cfg["run"]["variants"] = variants
    return cfg


def write_grid(folder: Path, model: str, rates_and_vals, variant=None, **cfg_changes) -> None:
    """A finished seed-0 grid of `model` in `folder`, its config that of run_config()."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = run_config(models=(model,), seeds=(0,), **cfg_changes)
    cfg["train"]["lr_grid"] = [lr for lr, _ in rates_and_vals]
    lines = []
    for lr, val in rates_and_vals:
        rec = grid_record(model, lr, val_acc=val, test_acc=1.0 - val)
        rec["learning_rate"]["grid"] = [lr for lr, _ in rates_and_vals]
        rec.update(config=cfg, run_id=folder.name, variant=variant)
        lines.append(json.dumps(rec))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")


GRID = [(1e-3, 0.30), (3e-3, 0.80), (1e-2, 0.50)]


def test_the_rate_is_the_grids_choice_on_validation(tmp_path):
    write_grid(tmp_path / "runs" / "gla", "gla", GRID)  # a folder of run folders
    got = transferred_rates(tmp_path / "runs", run_config())
    entry = got["rates"]["listops/gla"]
    assert entry["lr"] == 3e-3 and entry["seed"] == 0
    assert entry["chosen_from"] == {"0.001": 0.30, "0.003": 0.80, "0.01": 0.50}


@pytest.mark.parametrize("why, grid, cfg, message", [
    ("unfinished", GRID[:2], run_config(), "tried 2 of its 2"),
    ("another protocol", GRID, run_config(steps=200), "train.steps=100"),
    ("the grid's own seed", GRID, run_config(seeds=(0, 1)), "seed 0"),
    ("another model", GRID, run_config(models=("mamba2",)), "no learning-rate grid of mamba2"),
    ("another variant", GRID, run_config(variants={"gla": "conv=2"}), "gla[conv=2]"),
])
def test_what_would_pool_unlike_cells_is_refused(tmp_path, why, grid, cfg, message):
    write_grid(tmp_path / "gla", "gla", grid)
    if why == "unfinished":  # the grid planned three rates and tried two
        lines = (tmp_path / "gla" / "records.jsonl").read_text().splitlines()
        recs = [json.loads(line) for line in lines]
        for rec in recs:
            rec["learning_rate"]["grid"] = [lr for lr, _ in GRID]
        (tmp_path / "gla" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        message = "tried 2 of its 3"
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        transferred_rates(tmp_path / "gla", cfg)


def test_a_grid_where_nothing_finished_gives_no_rate(tmp_path):
    write_grid(tmp_path / "gla", "gla", GRID)
    path = tmp_path / "gla" / "records.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in recs:
        rec.update(status="diverged", reason="diverged for a test")
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(UsageError, match="no rate of the grid"):
        transferred_rates(tmp_path / "gla", run_config())


ARGS = ["--task", "mqar", "--budget", "tiny", "--models", "transformer", "--set", "train.steps=4",
        "--set", "train.eval_every=2", "--set", "task.n_train=128", "--set", "throughput.repeats=1",
        "--set", "throughput.decode_tokens=0", "--no-checkpoints"]


def test_later_seeds_train_at_the_earlier_choice_and_say_where_it_came_from(tmp_path):
    grid = tmp_path / "grid"
    done = subprocess.run(cli("run", *ARGS, "--seeds", "0", "--set", "train.lr_grid=[1e-3, 1e-2]",
                              "--out", str(grid)), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    grid_records = read_records(grid)
    best = max(grid_records, key=lambda r: (r["metrics"]["val"]["accuracy"], -r["metrics"]["val"]["loss"]))

    later = tmp_path / "later"
    done = subprocess.run(cli("run", *ARGS, "--seeds", "1", "--lr-from", str(grid), "--out", str(later)),
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    (rec,) = read_records(later)
    assert rec["seed"] == 1 and rec["config"]["train"]["lr"] == best["learning_rate"]["lr"]
    assert rec["learning_rate"]["role"] == "chosen" and rec["learning_rate"]["chosen_in"] == str(grid)
    assert set(rec["learning_rate"]["chosen_from"]) == {"0.001", "0.01"}

    # Resumed, the run keeps the rate it was configured with (config.yaml), whatever the
    # earlier folder holds by then.
    (grid / "records.jsonl").rename(tmp_path / "grid_records.jsonl")
    (later / "records.jsonl").write_text("")
    done = subprocess.run(cli("run", "--resume", str(later)), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    (again,) = read_records(later)
    assert again["learning_rate"] == rec["learning_rate"]
    assert again["metrics"]["test"] == rec["metrics"]["test"]

    # Another step count is another protocol: one line, exit 2, and no run folder left behind.
    other = tmp_path / "other"
    (tmp_path / "grid_records.jsonl").rename(grid / "records.jsonl")
    refused = subprocess.run(cli("run", *ARGS, "--seeds", "1", "--set", "train.steps=6",
                                 "--lr-from", str(grid), "--out", str(other)),
                             capture_output=True, text=True, env=ENV)
    assert refused.returncode == 2 and "train.steps=4" in refused.stderr
    assert not other.exists()


def test_a_subtask_protocol_is_compared_for_its_own_subtask_only(tmp_path):
    """A grid run before another subtask got its own protocol still gives its rate; a grid
    whose own subtask trained under another protocol does not."""
    write_grid(tmp_path / "gla", "gla", GRID)  # no subtask protocol at all
    other_subtask = run_config()
    other_subtask["task"]["subtask_protocol"] = {"pathfinder": {"steps": 400}}
    assert transferred_rates(tmp_path / "gla", other_subtask)["rates"]["listops/gla"]["lr"] == 3e-3
    same_subtask = run_config()
    same_subtask["task"]["subtask_protocol"] = {"listops": {"steps": 400}}
    with pytest.raises(UsageError, match="train.steps=100, this run has 400"):
        transferred_rates(tmp_path / "gla", same_subtask)
