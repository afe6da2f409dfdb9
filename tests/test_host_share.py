"""speed.host_share (launches, host and kernel seconds per call) and scripts/host_share.py.
On a CPU the launches are top-level aten operators; the GPU-only parts run where CUDA is."""

from __future__ import annotations

import importlib.util
import inspect
import json
import time
from pathlib import Path

import pytest
import torch

from bimix_bench.config import load_budget
from bimix_bench.models.backbone import count_parameters
from bimix_bench.speed.host_share import (
    HostShare, _site_of_current_stack, markdown_table, measure, profile_call, short_site,
    sync_sites, waits_for_device,
)
from bimix_bench.speed.sweep import sized_model

CPU = torch.device("cpu")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "host_share.py"


def three_ops() -> None:
    x = torch.ones(4)
    torch.relu(torch.mul(torch.add(x, 1), 2))  # ones + add + mul + relu: 4 top-level operators


def test_launches_on_a_cpu_count_top_level_operators_not_their_internals():
    launches, kernel_s = profile_call(three_ops, CPU)
    assert launches == 4 and kernel_s is None
    launches_twice, _ = profile_call(lambda: (three_ops(), three_ops()), CPU)
    assert launches_twice == 8


def test_setup_runs_before_every_call_and_stays_out_of_the_host_time():
    calls = []
    share = measure(lambda: calls.append("call"), CPU, repeats=3, warmup=1,
                    setup=lambda: (calls.append("setup"), time.sleep(0.02)))
    assert calls[:4] == ["setup", "call", "setup", "call"]
    assert share.host_s < 0.01 and not share.synchronizes and share.sync_sites == ()
    assert share.busy_s == share.elapsed_s  # no kernels to time apart on a CPU


def test_host_over_busy_reads_the_host_share():
    assert HostShare(10, 0.5, 2.0, 1.0, False).host_over_busy == 0.5
    assert HostShare(10, 0.5, 2.0, 1.0, False).to_dict()["host_over_busy"] == 0.5
    assert HostShare(0, 0.5, 0.0, 0.0, False).host_over_busy == float("inf")


def test_sync_sites_are_named_from_the_package_or_repo_folder_on():
    site_packages = "/opt/x/lib/python3.12/site-packages"
    assert short_site(f"{site_packages}/fla/ops/utils.py", 7) == "fla/ops/utils.py:7"
    repo = "/home/u/repo"
    assert short_site(f"{repo}/bimix_bench/bimix/decode.py", 80) == "bimix_bench/bimix/decode.py:80"
    assert short_site("/somewhere/else/tool.py", 3) == "tool.py:3"
    # the checkout's own folder may carry an anchor's name: the innermost anchor wins
    assert short_site("/src/bimix_bench/tests/test_x.py", 5) == "tests/test_x.py:5"


def test_a_wait_raised_inside_torch_is_placed_at_the_caller_outside_it():
    import torch.cuda as torch_cuda

    def inner_torch_frame() -> str:  # stands for a torch function that waits
        return _site_of_current_stack()

    inner_torch_frame.__code__ = inner_torch_frame.__code__.replace(co_filename=torch_cuda.__file__)
    site, line = inner_torch_frame(), inspect.currentframe().f_lineno  # the caller: this line
    assert site.startswith(f"tests/test_host_share.py:{line} (via torch/cuda/__init__.py:"), site


def test_a_wait_carried_by_the_warnings_module_is_placed_at_the_line_that_raised_it():
    """The warnings module and the recorder are plumbing, not sites (no "via warnings.py")."""
    import warnings

    import bimix_bench.speed.host_share as host_share

    sites = []

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        sites.append(_site_of_current_stack())

    record.__code__ = record.__code__.replace(co_filename=host_share.__file__)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        line = inspect.currentframe().f_lineno; warnings.warn("synchronizing")  # noqa: E702
    assert sites == [f"tests/test_host_share.py:{line}"], sites


@pytest.mark.parametrize("name", ["bimix", "transformer", "mamba2"])
def test_sized_models_meet_the_budget(name):
    budget = load_budget("tiny")
    model = sized_model(name, "tiny", 128, CPU)
    target = int(budget["params"]["non_embedding"])
    assert abs(count_parameters(model)["non_embedding"] - target) / target <= 0.05
    again = sized_model(name, "tiny", 128, CPU)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_script_writes_every_kind_of_every_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("host_share_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "hs.json"
    figures = script.main(["--budget", "tiny", "--context", "64", "--tokens-per-batch", "128",
                           "--models", "transformer,bimix", "--decode-tokens", "2",
                           "--repeats", "2", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["models"] == json.loads(json.dumps(figures))
    for name in ("transformer", "bimix"):
        for kind in ("forward", "train", "decode"):
            row = figures[name][kind]
            assert row["launches"] > 0 and row["host_s"] > 0 and row["busy_s"] > 0
    # BiMix's two branches, gates and band split dispatch more operators than attention does
    assert figures["bimix"]["forward"]["launches"] > figures["transformer"]["forward"]["launches"]
    assert "host/kernel" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_kernels_are_counted_and_a_host_wait_is_seen():
    gpu = torch.device("cuda")
    x = torch.ones(1024, device=gpu)
    launches, kernel_s = profile_call(lambda: torch.relu(torch.add(x, 1)), gpu)
    assert launches == 2 and kernel_s > 0
    assert not waits_for_device(lambda: torch.add(x, 1), gpu)
    assert waits_for_device(lambda: torch.add(x, 1).sum().item(), gpu)

    lines = []

    def reads_back() -> None:
        lines.append(inspect.currentframe().f_lineno); torch.add(x, 1).sum().item()  # noqa: E702

    sites = sync_sites(reads_back, gpu)
    line = lines[-1]
    assert sites == (f"tests/test_host_share.py:{line}",), sites


def test_table_gives_ranges_over_processes_and_the_median_kernel_time():
    def doc(host_s: float, busy_s: float) -> dict:
        row = {"launches": 1200, "host_s": host_s, "busy_s": busy_s, "elapsed_s": 0.1,
               "host_over_busy": host_s / busy_s}
        return {"settings": {"decode_tokens": 8},
                "models": {"m": {"forward": row, "train": row, "decode": row}}}

    table = markdown_table([doc(0.05, 0.08), doc(0.09, 0.09), doc(0.1, 0.1)])
    header, rule, row = table.splitlines()
    assert "(8 tokens)" in header and rule == "|---|---|---|---|---|"
    # launches equal everywhere: one figure; host/kernel 0.62..1.00; idle 0..20 %
    assert row == ("| m | 1,200 / 1,200 / 1,200 | 90.0 / 90.0 | 0.62-1.00 / 0.62-1.00 "
                   "| 0-20% / 0-20% / 0-20% |")


def test_a_wait_reported_only_after_the_call_is_placed_by_the_error_mode(monkeypatch):
    """Where torch's "warn" mode lets the warning surface only when the harness restores the
    mode, a second call in the "error" mode names the line inside the call."""
    import warnings

    import torch.cuda as torch_cuda

    import bimix_bench.speed.host_share as host_share

    mode = {"now": 0}

    def set_mode(new) -> None:
        new = {"default": 0, "warn": 1, "error": 2}.get(new, new)
        if mode["now"] == 1 and new == 0:  # the deferred warning surfaces here
            warnings.warn("called a synchronizing CUDA operation")
        mode["now"] = new

    def waiting_torch_op() -> None:  # stands for a torch function that waits
        if mode["now"] == 2:
            raise RuntimeError("called a synchronizing CUDA operation")

    waiting_torch_op.__code__ = waiting_torch_op.__code__.replace(co_filename=torch_cuda.__file__)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: mode["now"])
    monkeypatch.setattr(host_share, "synchronize", lambda device: None)
    lines = []

    def call() -> None:
        lines.append(inspect.currentframe().f_lineno); waiting_torch_op()  # noqa: E702

    sites = sync_sites(call, torch.device("cuda"))
    raising_line = waiting_torch_op.__code__.co_firstlineno + 2
    assert sites == (f"tests/test_host_share.py:{lines[-1]} (via torch/cuda/__init__.py:"
                     f"{raising_line}) (found in error mode)",), sites
    assert mode["now"] == 0  # the mode is restored after both calls

    monkeypatch.setattr(host_share, "_site_of_error", lambda fn: None)  # no wait the second time
    assert sync_sites(call, torch.device("cuda")) == (host_share.DEFERRED,)


def test_a_warning_raised_as_the_harness_enters_the_warn_mode_is_not_charged_to_the_call(monkeypatch):
    """A sync warning that surfaces while the harness switches to "warn" (before the call runs)
    is placed by the "error" mode's second call: a call that then runs without a wait has none."""
    import warnings

    import bimix_bench.speed.host_share as host_share

    mode = {"now": 0}

    def set_mode(new) -> None:
        new = {"default": 0, "warn": 1, "error": 2}.get(new, new)
        if mode["now"] == 0 and new == 1:  # the stray warning surfaces on entering "warn"
            warnings.warn("called a synchronizing CUDA operation")
        mode["now"] = new

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: mode["now"])
    monkeypatch.setattr(host_share, "synchronize", lambda device: None)
    assert sync_sites(lambda: None, torch.device("cuda")) == ()
    assert mode["now"] == 0

    def waiting_call() -> None:  # waits where the "error" mode can see it
        if mode["now"] == 2:
            raise RuntimeError("called a synchronizing CUDA operation")

    (site,) = sync_sites(waiting_call, torch.device("cuda"))
    assert site.startswith("tests/test_host_share.py:") and site.endswith("(found in error mode)")
