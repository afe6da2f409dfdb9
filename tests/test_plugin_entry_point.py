"""Third-party plugins through entry points: a throwaway distribution (a `*.dist-info` folder
with entry_points.txt on a sys.path entry, which is what pip would install) registers a task
family and a model; `bimix-bench list` shows both and `bimix-bench run` trains on the task.
Run in a subprocess, so the registries load fresh and this process's stay untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TASK_MODULE = '''
"""A plugin task family: parity of a bit string (classification)."""
from pathlib import Path
import random

import torch

from bimix_bench.task import ClassificationSplit, SubtaskInfo, Task, TaskData, register_task


def _split(n, length, rng):
    seqs, labels = [], []
    for _ in range(n):
        bits = [rng.randint(0, 1) for _ in range(length)]
        seqs.append(torch.tensor([ord("0") + b for b in bits]))
        labels.append(sum(bits) % 2)
    return ClassificationSplit(seqs, torch.tensor(labels))


@register_task
class Parity(Task):
    name = "demo_parity"
    description = "parity of a bit string (plugin demo)"
    defaults_path = Path(__file__).with_name("parity.yaml")

    def subtasks(self):
        return [SubtaskInfo("bits", "parity of random bits")]

    def load(self, subtask, cfg, seed, data_dir):
        sub = cfg[subtask]
        rng = random.Random(seed)
        splits = {s: _split(int(sub[f"n_{s}"]), int(sub["length"]), rng) for s in ("train", "val", "test")}
        return TaskData(task=self.name, subtask=subtask, objective="classify", context=int(sub["length"]),
                        n_classes=2, meta={"source": "generated"}, **splits,
                        extra_metrics=lambda model, split, device, cfg: {"n_test": len(splits["test"])})
'''

TASK_DEFAULTS = '''
common:
  subtasks: [bits]
  bits: {length: 32, n_train: 512, n_val: 16, n_test: 16}
budgets:
  tiny: {bits: {length: 16}}
'''

MODEL_MODULE = '''
"""A plugin token mixer: the running mean of projected values (causal by construction)."""
import torch
from torch import nn

from bimix_bench.models.mixer import TokenMixer, register_model


class MeanState:
    def __init__(self, total, count):
        self.total, self.count = total, count


@register_model("demo_prefix_mean", "running mean of the past (plugin demo)", options={"scale": 1.0})
class PrefixMean(TokenMixer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.value = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.scale = float(cfg.options["scale"])

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        return self.out(self.scale * self.value(x).cumsum(1) / counts)

    def init_decode_state(self, batch_size, max_len, device, dtype):
        return MeanState(torch.zeros(batch_size, self.cfg.d_model, device=device, dtype=dtype), 0)

    def decode_step(self, x_t, state):  # (B, D) -> (B, D)
        state.total = state.total + self.value(x_t)
        state.count += 1
        return self.out(self.scale * state.total / state.count)
'''


def make_distribution(site: Path) -> None:
    """What `pip install` of a package declaring the two entry points leaves on sys.path."""
    package = site / "bbdemo_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "parity.py").write_text(textwrap.dedent(TASK_MODULE))
    (package / "parity.yaml").write_text(textwrap.dedent(TASK_DEFAULTS))
    (package / "mixers.py").write_text(textwrap.dedent(MODEL_MODULE))
    info = site / "bbdemo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bbdemo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[bimix_bench.tasks]\ndemo_parity = bbdemo_plugin.parity\n\n"
        "[bimix_bench.models]\ndemo_prefix_mean = bbdemo_plugin.mixers\n")


def bimix_bench(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "COLUMNS": "200",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bimix_bench", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_plugins_are_listed_and_run(tmp_path):
    site = tmp_path / "site"
    make_distribution(site)
    listed = bimix_bench(["list"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    task_line = next(line for line in lines if "demo_parity" in line)
    model_line = next(line for line in lines if "demo_prefix_mean" in line)
    assert "bits" in task_line and "plugin:bbdemo_plugin.parity" in task_line
    assert "plugin:bbdemo_plugin.mixers" in model_line
    assert "not loaded" not in listed.stdout

    out = tmp_path / "run"
    ran = bimix_bench(["run", "--task", "demo_parity", "--budget", "tiny", "--models", "transformer,demo_prefix_mean",
                       "--out", str(out), "--no-checkpoints", "--set", "train.steps=2", "--set", "train.eval_every=2",
                       "--set", "throughput.repeats=1", "--set", "throughput.decode_tokens=2",
                       "--set", "models.demo_prefix_mean.scale=0.5"], site, tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [(r["task"], r["model"], r["status"]) for r in records] == [
        ("demo_parity", "transformer", "ok"), ("demo_parity", "demo_prefix_mean", "ok")]
    for r in records:
        assert r["metrics"]["test"]["n_test"] == 16 and 0 <= r["metrics"]["test"]["accuracy"] <= 1
        assert r["config"]["task"]["bits"]["length"] == 16  # the plugin's own budget defaults
    assert records[1]["config"]["models"]["demo_prefix_mean"]["scale"] == 0.5


def test_a_broken_plugin_is_reported_not_fatal(tmp_path):
    site = tmp_path / "site"
    make_distribution(site)
    (site / "bbdemo_plugin" / "parity.py").write_text("raise RuntimeError('plugin bug')\n")
    listed = bimix_bench(["list", "tasks"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "lra" in listed.stdout and "not loaded: demo_parity" in listed.stdout and "plugin bug" in listed.stdout
