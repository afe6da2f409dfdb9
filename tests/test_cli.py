"""The CLI end to end at the tiny budget, and its handling of user mistakes."""

import json

import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app, main
from bimix_bench.results.records import read_records, validate_record

FAST = ["--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "task.listops.n_train=64",
        "--set", "throughput.repeats=1", "--set", "throughput.decode_tokens=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(
        app, ["run", "--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--models", "transformer",
              "--out", str(out), *FAST]
    )
    assert result.exit_code == 0, result.output
    assert "transformer" in result.output and "summary.md" in result.output
    return out


def test_run_writes_records_config_tables_and_checkpoint(run_dir):
    records = read_records(run_dir)
    assert len(records) == 1
    rec = records[0]
    validate_record(rec)
    assert rec["status"] == "ok" and rec["model"] == "transformer" and rec["subtask"] == "listops"
    assert rec["steps"] == 4 and rec["tokens_trained"] > 0
    assert 0.0 <= rec["metrics"]["test"]["accuracy"] <= 1.0
    assert abs(rec["params"]["relative_error"]) <= 0.05
    assert rec["data"]["standard_lengths"] is False and "note" in rec["data"]
    for kind in ("train_tokens_per_s", "inference_tokens_per_s", "decode_tokens_per_s"):
        assert rec["throughput"][kind]["value"] > 0 and "median" in rec["throughput"][kind]["method"]
    assert rec["config"]["train"]["steps"] == 4
    phases = rec["timings_s"]
    assert set(phases) == {"other", "training_steps", "validation", "test", "throughput"}
    assert phases["validation"] > 0 and sum(phases.values()) <= rec["wall_time_s"]
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "summary.md").read_text().count("transformer") >= 1
    assert (run_dir / "summary.csv").exists()
    assert list((run_dir / "checkpoints").glob("*.pt"))


def test_compare_reads_the_run_and_writes_files(run_dir, tmp_path):
    md, csv = tmp_path / "t.md", tmp_path / "t.csv"
    result = CliRunner().invoke(app, ["compare", str(run_dir), "--markdown", str(md), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    assert "transformer" in md.read_text() and "accuracy" in md.read_text()
    assert "transformer" in csv.read_text()


def test_list_shows_models_tasks_and_budgets():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    for name in ("transformer", "lra", "listops", "tiny", "small", "medium", "large"):
        assert name in result.output


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--task", "nope"], "unknown task 'nope'"),
        (["run", "--task", "lra", "--models", "gpt5"], "unknown model 'gpt5'"),
        (["run", "--task", "lra", "--budget", "huge"], "unknown budget 'huge'"),
        (["run", "--task", "lra", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
        (["run", "--task", "lra", "--set", "train.steps=x"], "train.steps expects int"),
        (["run", "--task", "lra", "--seeds", "a,b"], "--seeds expects"),
        (["run", "--task", "lra", "--subtasks", "nope"], "unknown subtask 'nope'"),
        (["run", "--task", "lra", "--bogus"], "No such option"),
        (["list", "everything"], "unknown section"),
        (["compare", "/nonexistent/run"], "no such run folder"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_records_are_one_json_object_per_line(run_dir):
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
