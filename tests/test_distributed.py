"""Data-parallel training through torchrun (gloo, 2 CPU processes) gives a normal record
with world size and scaling efficiency."""

import os
import subprocess
import sys

from bimix_bench.results.records import read_records, validate_record


def test_two_process_ddp_run_records_world_size_and_efficiency(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "bimix_bench", "run", "--nproc", "2", "--task", "lra",
            "--subtasks", "listops", "--budget", "tiny",
            "--models", "transformer", "--set", "train.steps=4", "--set", "train.eval_every=2",
            "--set", "task.listops.n_train=64", "--set", "throughput.repeats=1",
            "--set", "throughput.decode_tokens=0", "--no-checkpoints", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_records(out)
    assert len(records) == 1  # only rank 0 writes
    rec = records[0]
    validate_record(rec)
    assert rec["status"] == "ok"
    assert rec["distributed"]["world_size"] == 2
    assert 0 < rec["distributed"]["scaling_efficiency"] < 2
    # The global batch is the one-process batch: same tokens trained.
    assert rec["tokens_trained"] > 0 and rec["steps"] == 4
