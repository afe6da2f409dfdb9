"""Interrupted sweeps resume without redoing, duplicating or losing cells; CPU runs are
deterministic."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bimix_bench.results.records import read_records

ARGS = ["--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--models", "transformer",
        "--seeds", "0,1",
        "--set", "train.steps=9", "--set", "train.eval_every=3", "--set", "task.listops.n_train=64",
        "--set", "throughput.repeats=1", "--set", "throughput.decode_tokens=0", "--no-checkpoints"]


ENV = {**os.environ, "COLUMNS": "200"}  # wide console: messages are not wrapped


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bimix_bench", *args]


def quality(run_dir: Path) -> dict:
    return {(r["subtask"], r["seed"], r["model"]): (r["status"], r["steps"], r["tokens_trained"],
                                                   r["best_step"], r["metrics"])
            for r in read_records(run_dir)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(cli("run", *ARGS, "--out", str(out)), check=True, capture_output=True, env=ENV)
    return out


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "run finished before it could be interrupted"
        assert time.time() < deadline, "timed out waiting to interrupt"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the harshest interruption: no cleanup at all
    proc.wait()


def test_killed_mid_training_resumes_to_the_same_records(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli("run", *ARGS, "--out", str(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    # Kill once the second cell has saved a training state, i.e. mid-way through its training.
    kill_when(proc, lambda: (out / "records.jsonl").exists() and any((out / "state").glob("*seed1.pt")))
    assert len(read_records(out)) == 1
    # The saved state carries the time spent so far; mark it to see it reach the record.
    (state_file,) = (out / "state").glob("*seed1.pt")
    blob = torch.load(state_file, weights_only=False)
    assert blob["train_time_s"] > 0
    saved_step, blob["train_time_s"] = blob["step"], 1000.0
    torch.save(blob, state_file)
    done = subprocess.run(cli("run", "--resume", str(out)), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "1 finished cells kept, 1 to run" in done.stdout
    assert quality(out) == quality(uninterrupted)
    first, resumed = sorted(read_records(out), key=lambda r: r["seed"])
    assert "resumed_at_steps" not in first and resumed["resumed_at_steps"] == [saved_step]
    assert resumed["timings_s"]["training_steps"] + resumed["timings_s"]["validation"] >= 1000.0
    assert resumed["wall_time_s"] < 1000.0  # this process only
    assert len((out / "records.jsonl").read_text().splitlines()) == 2  # nothing duplicated
    assert not list((out / "state").glob("*.pt"))  # state files are removed once recorded


def test_resume_refuses_changed_settings_and_non_runs(tmp_path, uninterrupted):
    bad = subprocess.run(cli("run", "--resume", str(uninterrupted), "--set", "train.steps=3"),
                         capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "--resume continues a run exactly" in bad.stderr
    empty = subprocess.run(cli("run", "--resume", str(tmp_path)), capture_output=True, text=True, env=ENV)
    assert empty.returncode == 2 and "not a run folder" in empty.stderr
    again = subprocess.run(cli("run", *ARGS, "--out", str(uninterrupted)), capture_output=True, text=True, env=ENV)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_same_seed_and_config_give_identical_metrics(uninterrupted, tmp_path):
    out = tmp_path / "again"
    subprocess.run(cli("run", *ARGS, "--out", str(out)), check=True, capture_output=True, env=ENV)
    assert quality(out) == quality(uninterrupted)
