"""`speed`: the sweep's document, sizing, decode-state restoration, out-of-memory and failure
handling, paired-timing arithmetic, the test-only slowdown hook, and the command's files."""

from __future__ import annotations

import contextlib
import statistics
import time

import pytest
import torch
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.config import load_budget
from bimix_bench.config.sections import train_config
from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS
from bimix_bench.speed import sweep as sweep_module
from bimix_bench.speed.calibration import (
    GPU_CHUNK,
    CalibrationSpec,
    build_calibration,
    bulk_chunk,
    calibration_width,
)
from bimix_bench.speed.document import read_document, validate_document
from bimix_bench.speed.sweep import SweepSettings, run_sweep
from bimix_bench.speed.timing import (
    Pair,
    PairTimer,
    Timed,
    busy_wait,
    injected_slowdowns,
    retained_heap,
)
from bimix_bench.speed.workloads import build_cell

CPU = torch.device("cpu")
TINY = dict(contexts=[16, 32], tokens_per_batch=64, budget="tiny", device="cpu", warmup=1,
            repeats=3, decode_tokens=2, threads=1, clock="cpu")


@pytest.fixture(scope="module")
def doc() -> dict:
    return run_sweep(SweepSettings(models=["transformer"], interleave="all", **TINY))


def test_sweep_document_is_complete(doc):
    assert validate_document(doc) == []
    assert doc["device"]["class"].startswith("cpu-") and doc["device"]["class"].endswith("-1threads")
    assert doc["environment"]["packages"]["torch"] and doc["device"]["threads"] == 1
    assert doc["settings"]["budget"] == "tiny" and doc["settings"]["clock"] == "cpu"
    assert doc["injected_slowdown"] == {}
    cells = doc["models"]["transformer"]["cells"]
    assert [c["context"] for c in cells] == [16, 32]
    for cell in cells:
        assert cell["status"] == "ok"
        assert cell["batch_rows"] == 64 // cell["context"]
        assert cell["arch"]["max_seq_len"] == cell["context"] and cell["arch"]["head"] == "lm"
        assert abs(cell["params_non_embedding"] - 60_000) / 60_000 <= 0.05  # the tiny budget
        assert set(cell["figures"]) == {"forward", "train", "decode"}
        for kind, fig in cell["figures"].items():
            assert len(fig["ratio_samples"]) == 3
            assert fig["ratio"] == pytest.approx(statistics.median(fig["ratio_samples"]), rel=1e-5)
            # Each ratio is rebuilt from the raw times it came from.
            units = fig["tokens_per_s"] * statistics.median(fig["seconds_samples"])
            rebuilt = [units * c / (fig["calibration_calls"] * w) for c, w in
                       zip(fig["calibration_seconds_samples"], fig["seconds_samples"])]
            assert rebuilt == pytest.approx(fig["ratio_samples"], rel=1e-3)
            assert fig["tokens_per_s"] > 0 and fig["calibration_calls"] >= 1
            assert fig["backend"].replace("static-kv-cache+", "").startswith("sdpa") and "median of 3 rounds" in fig["method"]
            assert "process CPU time" in fig["method"]
    assert doc["calibration"]["bulk"]["width"] == calibration_width(60_000, 2) == 64
    assert doc["calibration"]["steps"]["steps"] == 2


def test_cell_interleave_reports_every_finished_cell():
    seen: list[dict] = []
    final = run_sweep(SweepSettings(models=["transformer"], interleave="cell",
                                    **{**TINY, "repeats": 1, "clock": "wall"}),
                      on_cell=seen.append)
    assert [len(d["models"]["transformer"]["cells"]) for d in seen] == [1, 2]
    assert all(d["complete"] is False and validate_document(d) == [] for d in seen)
    assert final["complete"] is True
    assert seen[-1]["models"]["transformer"]["cells"][1]["figures"].keys() == {"forward", "train", "decode"}


def test_pair_ratio_is_tokens_per_calibration_call():
    pair = Pair(Timed(lambda: None), Timed(lambda: None), units=1000, calibration_calls=4)
    pair.calibration_s += [0.8, 0.4, 2.0]  # 4 calibration calls per stretch
    pair.workload_s += [0.5, 0.5, 1.0]
    assert pair.ratios == pytest.approx([400.0, 200.0, 500.0])  # 1000 x (c / 4) / w
    assert pair.median_ratio() == pytest.approx(400.0)
    assert pair.median_rate() == pytest.approx(2000.0)


def test_decode_state_is_restored_before_every_call():
    spec = MODELS.get("transformer").obj
    torch.manual_seed(0)
    model = LanguageModel(Architecture(16, 1, 2, 32, 12), spec, dict(spec.default_options))
    cell = build_cell(model, 12, 24, ("decode",), CPU, contextlib.nullcontext,
                      train_config(load_budget("tiny")), decode_tokens=3)
    decode = cell.workloads["decode"]
    assert decode.units == 2 * 3  # two rows, three steps
    for _ in range(3):  # the static state holds the prompt + 3 tokens: fine after each restore
        decode.timed.setup()
        decode.timed.run()
    with pytest.raises(ValueError, match="decode state holds"):  # without the restore: overflow
        decode.timed.run()


def test_calibration_spec_round_trip_and_width_check():
    spec = CalibrationSpec("steps", 2, 16, 2, steps=3)
    build_calibration(spec, CPU, contextlib.nullcontext)()
    assert CalibrationSpec.from_dict(spec.to_dict()) == spec
    bulk = CalibrationSpec("bulk", 64, 16, 2, chunk=16)
    build_calibration(bulk, CPU, contextlib.nullcontext)()
    assert CalibrationSpec.from_dict(bulk.to_dict()) == bulk and "chunks of 16" in bulk.describe()
    old = {k: v for k, v in bulk.to_dict().items() if k != "chunk"}  # written before `chunk`
    assert CalibrationSpec.from_dict(old).chunk == 32
    assert bulk_chunk(CPU) == 32 and bulk_chunk(torch.device("cuda")) == GPU_CHUNK
    with pytest.raises(ValueError, match="multiple of"):
        build_calibration(CalibrationSpec("bulk", 8, 6, 1), CPU, contextlib.nullcontext)


def test_out_of_memory_stops_the_model_and_failures_are_isolated(monkeypatch):
    real = sweep_module.build_cell

    def flaky(model, context, *args, **kwargs):
        if context == 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(model, context, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "build_cell", flaky)
    settings = SweepSettings(models=["transformer"], **{**TINY, "contexts": [16, 32, 64],
                                                        "kinds": ("forward",), "repeats": 1})
    cells = run_sweep(settings)["models"]["transformer"]["cells"]
    assert [c["status"] for c in cells] == ["ok", "oom", "oom"]
    assert "out of memory at context 32" in cells[2]["reason"]

    def broken(model, context, *args, **kwargs):
        if context == 16:
            raise RuntimeError("kernel exploded")
        return real(model, context, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "build_cell", broken)
    cells = run_sweep(SweepSettings(models=["transformer"], **{**TINY, "kinds": ("forward",),
                                                                "repeats": 1}))["models"]["transformer"]["cells"]
    assert [c["status"] for c in cells] == ["failed", "ok"]
    assert "kernel exploded" in cells[0]["reason"] and "figures" in cells[1]


def test_settings_are_validated():
    with pytest.raises(UsageError, match="unknown model 'gpt5'"):
        run_sweep(SweepSettings(models=["gpt5"], **TINY))
    with pytest.raises(UsageError, match="unknown kind"):
        run_sweep(SweepSettings(models=["transformer"], **{**TINY, "kinds": ("backward",)}))


def test_injected_slowdown_is_parsed_and_busy_waits(monkeypatch):
    assert injected_slowdowns("transformer=1.3, bimix=2") == {"transformer": 1.3, "bimix": 2.0}
    assert injected_slowdowns("") == {}
    for bad in ("transformer", "transformer=fast", "transformer=0.5"):
        with pytest.raises(UsageError, match="model=factor"):
            injected_slowdowns(bad)
    start = time.process_time()
    assert busy_wait(0.02, "cpu") >= 0.02
    assert time.process_time() - start >= 0.02  # CPU time really spent, not slept
    timer = PairTimer(CPU, "cpu")
    work = Timed(lambda: busy_wait(0.01, "cpu"))
    slowed = Timed(work.run, slowdown=2.0)
    assert timer(slowed) >= 1.9 * 0.01 and timer(work) < timer(slowed)


_FAULTS_SCRIPT = """
import ctypes, resource, torch
from bimix_bench.speed.timing import retained_heap

def faults(n=20):  # minor page faults of allocating and filling a 4 MiB tensor, per allocation
    torch.empty(1 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.empty(1 << 20).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

mallopt = ctypes.CDLL(None).mallopt
mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD at its default, fixed (no dynamic raising)
mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD likewise: what retained_heap restores on exit
default = faults()
with retained_heap() as kept:
    print(kept, default, faults())
"""


@pytest.mark.skipif(not __import__("platform").libc_ver()[0] == "glibc", reason="glibc only")
def test_retained_heap_keeps_page_faults_out_of_repeated_allocations():
    # In a fresh process, as `check` runs (a long-lived process's heap layout varies). A fresh
    # 4 MiB mapping costs 1024 faults of 4 KiB pages; with a fixed 128 KiB mmap threshold glibc
    # maps a block this large anew each time. Retained, the heap serves it again.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True,
                         check=True).stdout.split()
    kept, default, retained = out[0] == "True", float(out[1]), float(out[2])
    # Most allocations fault-free; a few can still fault when the kernel reclaims idle pages.
    assert kept and default > 500 and retained < default / 2


def test_cpu_clock_refused_on_gpu_timer():
    with pytest.raises(UsageError, match="cpu clock"):
        PairTimer(torch.device("cuda"), "cpu")


def test_speed_command_writes_document_and_plot(tmp_path):
    out, png = tmp_path / "speed.json", tmp_path / "speed.png"
    result = CliRunner().invoke(app, [
        "speed", "--models", "transformer", "--contexts", "16,32", "--tokens-per-batch", "64",
        "--device", "cpu", "--repeats", "2", "--warmup", "1", "--decode-tokens", "2",
        "--threads", "1", "--kinds", "forward,decode", "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    written = read_document(out)
    assert written["settings"]["kinds"] == ["forward", "decode"]
    assert written["settings"]["clock"] == "wall"
    assert set(written["models"]["transformer"]["cells"][0]["figures"]) == {"forward", "decode"}
    assert png.stat().st_size > 1000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_sweep_uses_bf16_events_and_records_memory():
    doc = run_sweep(SweepSettings(models=["transformer"], contexts=[256, 512], tokens_per_batch=2048,
                                  budget="tiny", device="cuda", warmup=2, repeats=3, decode_tokens=4))
    assert doc["settings"]["precision"] == "bf16"
    assert doc["device"]["class"] == torch.cuda.get_device_name(0)
    for cell in doc["models"]["transformer"]["cells"]:
        assert cell["status"] == "ok" and cell["peak_memory_bytes"] > 0
        assert "CUDA events" in cell["figures"]["forward"]["method"]
