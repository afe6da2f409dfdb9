"""What a result record says about the machine and software that produced it.

Enough to tell two runs apart (code version, package versions, device, CUDA stack, threads)
without anything that identifies a person or host: the hostname is deliberately left out.
Package versions come from installed metadata, so optional packages are never imported.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bimix_bench import __version__

# Distribution names whose versions matter for speed or numerics. fla ships as "fla-core"
# today and as "flash-linear-attention" in older releases.
TRACKED_PACKAGES = (
    "bimix-bench", "torch", "triton", "numpy", "fla-core", "flash-linear-attention",
    "mamba-ssm", "causal-conv1d", "datasets", "pandas", "typer",
)

_GIT_TIMEOUT_S = 10.0


def environment_info() -> dict[str, Any]:
    """A JSON-serialisable description of this process's environment (see module docstring)."""
    sha, dirty = _git_state(_source_root())
    info: dict[str, Any] = {
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {name: package_version(name) for name in TRACKED_PACKAGES},
    }
    # Running from a checkout that was never pip-installed still has a version to report.
    info["packages"]["bimix-bench"] = info["packages"]["bimix-bench"] or __version__
    info.update(_torch_info())
    return info


def package_version(dist_name: str) -> str | None:
    """Installed version of a distribution, or None when it is absent."""
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """Marketing name of the CPU ("AMD EPYC 9654 ...") where the OS tells it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def _source_root() -> Path | None:
    """The checkout this package was imported from, when it runs from one (an installed
    copy in site-packages has no .git beside it and reports no sha)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / ".git").exists() else None  # .git is a file in worktrees


# Changes here do not change what runs: committed result folders that a resumed run appends
# to, and scratch runs. Counting them marked every resumed run as dirty.
_NOT_CODE = ("results", "runs")


def _git_state(root: Path | None) -> tuple[str | None, bool | None]:
    """(HEAD sha, uncommitted changes to tracked files outside _NOT_CODE) of `root`;
    (None, None) outside a checkout, when git is missing or refuses the repository."""
    if root is None:
        return None, None
    # Optional locks off: a status call must never contend with a concurrent git command.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, env=env,
                timeout=_GIT_TIMEOUT_S, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude){path}" for path in _NOT_CODE))
    if status is None:
        return None, None
    head = git("rev-parse", "--verify", "--quiet", "HEAD")  # None before the first commit
    return (head.strip() if head else None), bool(status.strip())


def _torch_info() -> dict[str, Any]:
    """CUDA stack, devices and thread count as torch sees them."""
    try:
        import torch  # already imported by every run; costs nothing then
    except ImportError:
        return {"torch_cuda": None, "torch_hip": None, "cudnn": None, "device_type": "cpu",
                "devices": [cpu_model()], "torch_threads": None}
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if cuda:
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        devices = [cpu_model()]
    return {
        "torch_cuda": torch.version.cuda,
        "torch_hip": getattr(torch.version, "hip", None),
        "cudnn": cudnn,
        "device_type": "cuda" if cuda else "cpu",
        "devices": devices,
        "torch_threads": torch.get_num_threads(),
    }
