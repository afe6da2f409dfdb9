"""`bimix-bench sweep`: a plan's runs, stopped at a cell boundary by the time limit and
continued by the same command with nothing lost or repeated; bad plans are refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bimix_bench.engine.sweep import parse_duration
from bimix_bench.errors import UsageError
from bimix_bench.results.records import read_records

QUICK = '["train.steps=4", "train.eval_every=4", "throughput.repeats=1", "throughput.decode_tokens=0"]'
ENV = {**os.environ, "COLUMNS": "200"}


def plan_text(out) -> str:
    return f"""out: {out}
runs:
  - name: first
    task: state_tracking
    subtasks: [parity]
    models: [transformer, linear_attn]
    set: {QUICK}
  - name: second
    task: state_tracking
    subtasks: [mod_add]
    models: [transformer]
    set: {QUICK}
"""


def sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bimix_bench", "sweep", *args],
                          capture_output=True, text=True, env=ENV)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("25m") == 1500
    assert parse_duration("2h") == 7200 and parse_duration("12") == 12
    with pytest.raises(UsageError):
        parse_duration("soon")


@pytest.mark.slow
def test_a_time_limit_stops_at_a_cell_boundary_and_the_same_command_continues(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(tmp_path / "out"))
    # A limit shorter than one cell: the first cell runs, then the sweep stops cleanly.
    first = sweep(str(plan), "--time-limit", "0.5s")
    assert first.returncode == 0, first.stderr
    assert len(read_records(tmp_path / "out" / "first")) == 1
    assert not (tmp_path / "out" / "second").exists()
    assert "time limit reached: 1 cells left" in first.stdout and "2 cells left in 2 run(s)" in first.stdout
    done = sweep(str(plan))
    assert done.returncode == 0, done.stderr
    firsts = read_records(tmp_path / "out" / "first")
    assert sorted(r["model"] for r in firsts) == ["linear_attn", "transformer"]  # none twice
    assert len(read_records(tmp_path / "out" / "second")) == 1
    assert done.stdout.count("complete") == 2 and "cells left" not in done.stdout


@pytest.mark.parametrize("text, message", [
    ("runs: []\n", "`out`"),
    ("out: x\nruns: []\n", "non-empty list"),
    ("out: x\nruns:\n  - {name: a, task: mqar, colour: red}\n", "unknown key(s) colour"),
    ("out: x\nruns:\n  - {name: a, task: mqar}\n  - {name: a, task: lra}\n", "used twice"),
    ("out: x\nruns:\n  - {name: ../up, task: mqar}\n", "folder name"),
    ("out: x\nruns:\n  - {name: a, task: mqar, seeds: [zero]}\n", "seeds must be a list of integers"),
])
def test_bad_plans_are_refused_with_one_line(tmp_path, text, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    done = sweep(str(plan))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
