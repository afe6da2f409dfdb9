"""`run --gpus`: workers park trained cells; their throughput is measured afterwards, alone,
and an interruption between the two leaves a folder that `--resume` completes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bimix_bench.engine.pending import MEASURED_ALONE, PENDING_DIR
from bimix_bench.engine.runner import RunRequest, execute
from bimix_bench.results.records import read_records, validate_record

SMALL = ["train.steps=4", "train.eval_every=2", "task.listops.n_train=64", "throughput.repeats=1",
         "throughput.warmup=1", "throughput.decode_tokens=2", "eval.val_examples=16",
         "eval.test_examples=16"]


def request(out: Path, **kw) -> RunRequest:
    return RunRequest(task="lra", subtasks=["listops"], budget="tiny", models=["transformer", "bimix"],
                      seeds=[0], overrides=list(SMALL), out_dir=out, device="cpu", **kw)


def run_with_two_workers(out: Path, *options: str) -> subprocess.CompletedProcess:
    """`bimix-bench run ... --gpus 0,0` on tiny ListOps in a subprocess, which must succeed."""
    args = ["run", "--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--device", "cpu",
            "--gpus", "0,0", "--no-checkpoints", "--out", str(out), *options]
    for item in SMALL:
        args += ["--set", item]
    done = subprocess.run([sys.executable, "-m", "bimix_bench", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    return done


def test_parked_cells_are_measured_on_resume_and_keep_their_quality(tmp_path):
    out = tmp_path / "run"
    # A worker that parks every cell (shard 0 of 1) and stops: nothing recorded yet.
    execute(request(out, shard=(0, 1), defer_throughput=True))
    parked = sorted(p.name for p in (out / PENDING_DIR).iterdir())
    assert parked == ["lra-listops-bimix-seed0.json", "lra-listops-bimix-seed0.pt",
                      "lra-listops-transformer-seed0.json", "lra-listops-transformer-seed0.pt"]
    assert not (out / "records.jsonl").exists()
    quality = {json.loads(p.read_text())["model"]: json.loads(p.read_text())["metrics"]
               for p in (out / PENDING_DIR).glob("*.json")}

    execute(RunRequest(task="", resume=out, device="cpu"))  # trains nothing, times the parked cells
    records = read_records(out)
    assert sorted(r["model"] for r in records) == ["bimix", "transformer"]
    assert not list((out / PENDING_DIR).iterdir())
    for r in records:
        validate_record(r)
        assert r["status"] == "ok" and r["metrics"] == quality[r["model"]]
        for kind in ("train_tokens_per_s", "inference_tokens_per_s", "decode_tokens_per_s"):
            assert r["throughput"][kind]["value"] > 0
            assert r["throughput"][kind]["method"].endswith(MEASURED_ALONE)
        assert r["environment"]["cell_worker"] == "1 of 1"
        assert (out / "checkpoints" / f"lra-listops-{r['model']}-seed0.pt").exists()


def test_a_cell_recorded_before_an_interruption_is_not_appended_twice(tmp_path):
    out = tmp_path / "run"
    execute(request(out, shard=(0, 1), defer_throughput=True, save_checkpoints=False))
    (out / PENDING_DIR / "lra-listops-bimix-seed0.json").write_text(
        (out / PENDING_DIR / "lra-listops-bimix-seed0.json").read_text())
    execute(RunRequest(task="", resume=out, device="cpu", save_checkpoints=False))
    # Park the same cell again, as if the parked files outlived the append (crash in between).
    record = next(r for r in read_records(out) if r["model"] == "bimix")
    (out / PENDING_DIR / "lra-listops-bimix-seed0.json").write_text(json.dumps(record))
    execute(RunRequest(task="", resume=out, device="cpu", save_checkpoints=False))
    assert sorted(r["model"] for r in read_records(out)) == ["bimix", "transformer"]
    assert not list((out / PENDING_DIR).iterdir()) and not (out / "checkpoints").exists()


def test_gpus_option_runs_two_workers_then_times_each_cell(tmp_path):
    out = tmp_path / "run"
    done = run_with_two_workers(out, "--models", "transformer,bimix", "--seeds", "0")
    records = read_records(out)
    assert sorted((r["model"], r["status"]) for r in records) == [("bimix", "ok"), ("transformer", "ok")]
    assert sorted(r["environment"]["cell_worker"] for r in records) == ["1 of 2", "2 of 2"]
    assert all(r["throughput"]["train_tokens_per_s"]["method"].endswith(MEASURED_ALONE) for r in records)
    assert "measuring throughput alone" in done.stdout
    assert not (out / "checkpoints").exists() and not list((out / PENDING_DIR).iterdir())


def test_an_interrupt_swallowed_by_library_code_still_stops_the_run(tmp_path, monkeypatch):
    """Triton turns a SIGINT that kills ptxas into a compile error; the run must stop, not
    record a failed cell and go on training the next one."""
    import signal

    import pytest

    from bimix_bench.engine import runner

    def interrupted_compile(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what the library does with it
        raise RuntimeError("ptxas failed with error code -2")

    monkeypatch.setattr(runner, "train_model", interrupted_compile)
    # A shell's background job starts with SIGINT ignored, and Python then keeps it ignored.
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(request(tmp_path / "run"))
        assert not (tmp_path / "run" / "records.jsonl").exists()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    finally:
        signal.signal(signal.SIGINT, original)


def test_interrupting_the_launcher_stops_its_workers(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    args = ["run", "--task", "lra", "--subtasks", "listops", "--budget", "tiny", "--device", "cpu",
            "--models", "transformer,linear_attn", "--seeds", "0", "--gpus", "0,0", "--no-checkpoints",
            "--set", "train.steps=400", "--set", "train.eval_every=2", "--out", str(out)]
    launcher = subprocess.Popen([sys.executable, "-m", "bimix_bench", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"},
                                # as from a terminal, also when the tests run as a background job
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list((out / "state").glob("*.pt")) if (out / "state").exists() else True:
        assert launcher.poll() is None and time.time() < deadline
        time.sleep(0.1)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=90) != 0
    workers = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert workers == [], "workers outlived their launcher"
    done = subprocess.run([sys.executable, "-m", "bimix_bench", "run", "--resume", str(out), "--set",
                           "train.steps=4"], capture_output=True, text=True)
    assert done.returncode == 2  # resume refuses new settings; the folder itself is intact
    assert (out / "config.yaml").exists()


def test_a_later_seed_waits_for_its_grid_to_be_recorded():
    from bimix_bench.engine.cells import Cell, ready_to_train

    grid = [Cell("listops", 0, "transformer", "grid", lr) for lr in (1e-3, 1e-2)]
    later = Cell("listops", 1, "transformer", "chosen")
    other = Cell("listops", 1, "bimix", "chosen")  # its grid is all recorded
    assert ready_to_train([*grid, later, other], set()) == [*grid, other]
    assert ready_to_train([grid[1], later], {grid[0].key}) == [grid[1]]
    assert ready_to_train([later], {g.key for g in grid}) == [later]


def test_gpus_spreads_a_grid_then_trains_the_later_seeds_at_the_chosen_rate(tmp_path):
    """The grid's rates train side by side (their parked files kept apart by rate); the later
    seed waits for a second round and trains at the rate with the best validation score."""
    from bimix_bench.results.lr_selection import chosen_rates

    out = tmp_path / "run"
    done = run_with_two_workers(out, "--models", "transformer", "--seeds", "0,1",
                                "--set", "train.lr_grid=[0.0003,0.01]")
    records = read_records(out)
    roles = sorted((r["seed"], r["learning_rate"]["role"], r["learning_rate"]["lr"]) for r in records)
    assert roles[:2] == [(0, "grid", 0.0003), (0, "grid", 0.01)] and len(roles) == 3
    grid_workers = {r["environment"]["cell_worker"] for r in records if r["seed"] == 0}
    assert grid_workers == {"1 of 2", "2 of 2"}  # the two rates trained side by side
    (chosen,) = chosen_rates(records).values()
    assert roles[2] == (1, "chosen", chosen)
    assert "another round of workers" in done.stdout
    assert not list((out / PENDING_DIR).iterdir())


def test_every_rate_of_a_grid_parks_its_own_record(tmp_path):
    """A rate's decimal point is not taken for a file suffix (which once filed 1e-4 ... 1e-2
    all as "-lr0.json", so the cells of one grid overwrote one another's parked files)."""
    from bimix_bench.engine.pending import park_record, parked_cells
    from tests.test_lr_selection import grid_record

    rates = [1e-4, 4.6e-4, 2.2e-3, 1e-2]
    (tmp_path / PENDING_DIR).mkdir()
    for lr in rates:
        park_record(tmp_path, grid_record("transformer", lr, val_acc=0.5, test_acc=0.5))
    assert sorted(key[-1] for key in parked_cells(tmp_path)) == rates
    assert not list((tmp_path / PENDING_DIR).glob("*.tmp"))
