"""`bimix-bench gates` renders a BiMix run's gate maps after the run."""

from typer.testing import CliRunner

from bimix_bench.cli.app import app, main


def _tiny_bimix_run(tmp_path, *options: str):
    """A BiMix run on tiny ListOps with checkpoints, in tmp_path/run."""
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--models", "bimix",
        "--set", "train.eval_every=2", "--set", "throughput.repeats=1",
        "--set", "throughput.decode_tokens=0", *options, "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_gates_renders_static_maps_and_token_gates(tmp_path):
    run_dir = _tiny_bimix_run(tmp_path, "--set", "train.steps=4", "--set", "task.listops.n_train=64")
    source = tmp_path / "example.py"
    source.write_text("import os\n\n\ndef f(x):\n    return x\n\n\nclass A:\n    pass\n")
    result = CliRunner().invoke(app, ["gates", str(run_dir), "--text", str(source), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    static = tmp_path / "g" / "lra-listops-bimix-seed0-static.png"
    tokens = tmp_path / "g" / "lra-listops-bimix-seed0-tokens-example.png"
    for png in (static, tokens):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_gates_without_bimix_records_is_a_usage_error(tmp_path, capsys):
    assert main(["gates", str(tmp_path)]) == 2
    assert "no records in" in capsys.readouterr().err
    assert main(["gates", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_each_cell_of_a_learning_rate_grid_gets_its_own_maps(tmp_path):
    """The grid's cells share task, model and seed: the learning rate keeps their pictures (and
    the checkpoints read for the per-token gates) apart."""
    run_dir = _tiny_bimix_run(tmp_path, "--seeds", "0", "--set", "train.lr_grid=[0.001,0.003]",
                              "--set", "train.steps=2", "--set", "task.listops.n_train=32")
    source = tmp_path / "example.py"
    source.write_text("def f(x):\n    return x\n")
    result = CliRunner().invoke(app, ["gates", str(run_dir), "--text", str(source), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "no checkpoint" not in result.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        f"lra-listops-bimix-seed0-lr{lr}-{kind}.png"
        for lr in ("0.001", "0.003") for kind in ("static", "tokens-example")]
