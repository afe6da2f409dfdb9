"""The CLI end to end at the tiny budget, and its handling of user mistakes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
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


def test_list_protocols_shows_what_each_family_trains_per_budget():
    from rich.console import Console

    from bimix_bench.cli.list_cmd import protocols_table
    from bimix_bench.registry import TASKS

    console = Console(width=400, record=True)
    console.print(protocols_table(TASKS, ["cpu", "small"]))
    lines = console.export_text().splitlines()
    rows = {tuple(cell.strip() for cell in line.split("│")[1:3]): line
            for line in lines if "│" in line}
    mqar_cpu = rows[("mqar", "cpu")]
    assert "T64_kv4, T128_kv8" in mqar_cpu and "2,000 steps (T128_kv8: 4,000)" in mqar_cpu
    assert "lr 0.00046, 0.0022, 0.01" in mqar_cpu and "early stop at 0.99" in mqar_cpu
    assert any(line.startswith("mqar at cpu: Zoology MQAR") for line in lines)
    assert any(line.startswith("mqar at cpu, T128_kv8: Zoology MQAR") and "4,000 steps" in line
               for line in lines)
    assert "256 sequences a step" in rows[("mqar", "small")]
    assert "parity, mod_add " in rows[("state_tracking", "cpu")]  # S5 off by default there
    assert "parity, mod_add, s5" in rows[("state_tracking", "small")]


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
        (["run", "--task", "lra", "--plan", "--nproc", "2"], "--plan times one process"),
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


def test_an_unknown_command_names_the_program_once(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("(try: bimix-bench --help)") and "bimix-bench bimix-bench" not in err
    assert main(["run", "--bogus"]) == 2
    assert capsys.readouterr().err.strip().endswith("(try: bimix-bench run --help)")


@pytest.mark.parametrize("device, message", [
    ("tpu9", "--device 'tpu9' is not a device; valid: auto, cpu, cuda, cuda:N"),
    ("cuda:x", "is not a device"),
    pytest.param("cuda", "no CUDA device is available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="needs a machine without CUDA")),
])
def test_a_bad_device_is_refused_before_any_folder_exists(device, message, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["run", "--task", "lra", "--subtasks", "listops", "--models", "transformer",
            "--device", device]
    assert main([*argv, "--out", str(out)]) == 2
    assert main(argv) == 2  # the default run folder under runs/
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == err[1]  # one line each time
    assert err[0].startswith("error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []  # neither --out nor runs/ was created


def test_resume_refuses_a_corrupt_records_file_and_recovers_a_torn_last_line(run_dir, tmp_path,
                                                                             capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    records = corrupt / "records.jsonl"
    good = records.read_text()
    records.write_text("{not json\n" + good)
    assert main(["run", "--resume", str(corrupt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{records}: line 1 is not valid JSON" in err
    assert records.read_text() == "{not json\n" + good  # untouched

    torn = tmp_path / "torn"
    shutil.copytree(run_dir, torn)
    (torn / "records.jsonl").write_text(good + good[: len(good) // 2])
    assert main(["run", "--resume", str(torn)]) == 0  # every cell is done: nothing to train
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "Traceback" not in captured.err
    assert (torn / "records.jsonl").read_text() == good
    assert len(read_records(torn)) == 1


def test_warnings_print_on_one_line(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with open(copy / "records.jsonl", "a") as f:
        f.write("garbage\n")
    assert main(["compare", str(copy)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    assert "line 2: not valid JSON" in warned[0] and "UserWarning" not in warned[0]


@pytest.mark.parametrize("command", ["", "run", "list", "compare", "speed", "check", "gates", "sweep"])
def test_help_fits_80_columns_without_cutting_text_or_typing_flags(command):
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    args = [sys.executable, "-m", "bimix_bench", *([command] if command else []), "--help"]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and "<bool>" not in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80



def test_a_run_with_model_options_records_its_variant_and_keeps_it_on_resume(tmp_path):
    """--set models.transformer.rope_base=500: every record says so, config.yaml keeps it for
    `run --resume`, and the run's table names the variant."""
    out = tmp_path / "rope500"
    args = ["run", "--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--models", "transformer",
            "--seeds", "0", "--out", str(out), "--set", "models.transformer.rope_base=500", *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "transformer[rope_base=500" in (out / "summary.md").read_text()
    [rec] = read_records(out)
    assert rec["variant"].startswith("rope_base=500")
    records = out / "records.jsonl"
    records.write_text("")  # the cell is lost: resume trains it again from config.yaml
    assert CliRunner().invoke(app, ["run", "--resume", str(out)]).exit_code == 0
    [again] = read_records(out)
    assert again["variant"] == rec["variant"]


def test_plan_counts_the_validations_the_run_made(run_dir):
    """The plan's count of validation passes is the trainer's (every eval_every and at the end)."""
    from bimix_bench.engine.trainer import validation_count

    (rec,) = read_records(run_dir)
    assert validation_count(rec["steps"], 2) == len(rec["data"]["train_history"]) == 2


def test_plan_of_a_finished_run_has_nothing_to_train(run_dir):
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--plan"])
    assert result.exit_code == 0, result.output
    assert "nothing to train" in result.output
