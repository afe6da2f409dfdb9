"""A bad task option stops `run` with one line and exit 2 before the run folder exists: the
families check what their loaders would refuse (Task.check_options) while the run is configured."""

from __future__ import annotations

import subprocess

import pytest

from tests.test_lr_selection import ENV, cli


@pytest.mark.parametrize("task, subtask, option, message", [
    ("multidoc_qa", "single_needle_noise", "task.train_targets=prompt", "train_targets"),
    ("lra", "pathfinder", "task.pathfinder.source=web", "task.pathfinder.source"),
    ("lra", "pathx", "task.pathx.difficulty=medium-rare", "pathfinder settings"),
])
def test_a_bad_task_option_leaves_no_run_folder(tmp_path, task, subtask, option, message):
    out = tmp_path / "run"
    done = subprocess.run(cli("run", "--task", task, "--subtasks", subtask, "--budget", "tiny",
                              "--set", option, "--out", str(out)),
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
