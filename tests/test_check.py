"""`check`: passes on unchanged code and fails on an injected slowdown (small real
measurements), the comparison rules on hand-made documents (tolerance, drift correction,
missing figures, pooled confirmation), refusal across device classes, and --update."""

from __future__ import annotations

import copy
import json
import statistics

import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app, main
from bimix_bench.errors import UsageError
from bimix_bench.speed.document import FORMAT, VERSION, read_document, write_document
from bimix_bench.speed.regression import compare_documents, merge_measurements
from bimix_bench.speed.timing import INJECT_ENV

CPU_CLASS = "cpu-x86_64-1threads"


def make_doc(ratios: dict[str, dict[int, dict[str, float]]], device_class: str = CPU_CLASS,
             device_type: str = "cpu") -> dict:
    """A speed document whose figures have the given ratios (tokens/s = 1000 x ratio)."""
    models = {}
    for model, by_context in ratios.items():
        cells = []
        for context, figures in by_context.items():
            cells.append({
                "context": context, "status": "ok", "reason": None, "params_non_embedding": 60_000,
                "arch": {"d_model": 48, "n_layers": 2, "n_heads": 4, "ffn_hidden": 144,
                         "max_seq_len": context, "head": "lm", "n_classes": 0, "vocab_size": 261},
                "figures": {kind: {"tokens_per_s": 1000 * r, "ratio": r, "ratio_samples": [r],
                                   "calibration_calls": 1, "backend": "chunked", "method": "test"}
                            for kind, r in figures.items()},
                "unavailable": {},
            })
        models[model] = {"options": {}, "cells": cells}
    return {
        "format": FORMAT, "version": VERSION,
        "device": {"type": device_type, "name": "test", "class": device_class, "threads": 1},
        "environment": {}, "injected_slowdown": {},
        "settings": {"budget": "tiny", "tokens_per_batch": 64, "contexts": [16], "kinds": ["forward"],
                     "decode_tokens": 2, "precision": "fp32", "warmup": 1, "repeats": 1,
                     "interleave": "all", "clock": "cpu"},
        "calibration": {"bulk": {"kind": "bulk", "rows": 64, "width": 64, "layers": 2, "steps": 1}},
        "models": models,
    }


def flat(ratio: float, models=("a", "b", "c", "d")) -> dict:
    return {m: {16: {"forward": ratio, "train": ratio}} for m in models}


# ---------------------------------------------------------------------------------------------
# Comparison rules


def test_a_figure_beyond_the_tolerance_offends():
    ref = make_doc({"a": {16: {"forward": 100.0, "train": 50.0}}})
    now = make_doc({"a": {16: {"forward": 80.0, "train": 49.0}}})
    result = compare_documents(ref, now, tolerance=0.10)
    assert result.drift == {} and any("no drift correction" in n for n in result.notes)
    assert [(f.kind, round(f.change, 3)) for f in result.offenders] == [("forward", -0.2)]
    assert compare_documents(ref, now, tolerance=0.25).passed


def test_drift_correction_divides_out_a_common_shift_but_not_one_model():
    ref = make_doc(flat(100.0))
    shifted = flat(90.0)  # every model 10% slower against the calibration: the machine
    shifted["d"] = {16: {"forward": 60.0, "train": 60.0}}  # and one model 40% slower
    result = compare_documents(ref, make_doc(shifted), tolerance=0.15)
    assert result.drift == pytest.approx({"forward": -0.10, "train": -0.10})
    assert {f.model for f in result.offenders} == {"d"}
    assert result.corrected(result.offenders[0]) == pytest.approx(0.6 / 0.9 - 1)
    # Without the correction the common shift alone is within the tolerance here too.
    raw = compare_documents(ref, make_doc(shifted), tolerance=0.15, drift_correction=False)
    assert {f.model for f in raw.offenders} == {"d"} and raw.drift == {}


def test_most_models_slower_together_fails_on_the_drift():
    ref = make_doc(flat(100.0))
    now = flat(70.0, models=("a", "b", "c"))
    now["d"] = {16: {"forward": 100.0, "train": 100.0}}
    result = compare_documents(ref, make_doc(now), tolerance=0.15)
    assert result.drift == pytest.approx({"forward": -0.30, "train": -0.30})
    assert result.drift_regressed and not result.passed
    assert not result.offenders  # relative to the drift only "d" moved, and upwards


def test_each_kind_has_its_own_drift():
    """Forward, train and decode are judged against different work (a busy machine moved them
    by different amounts): one kind's common shift is divided out of that kind alone. Here
    every model's train figures read 15% faster against the calibration and forward did not
    move; with one drift for the run (+7.5%), a forward figure 10% below its reference
    would read 16% low and offend."""
    ref = make_doc(flat(100.0, models=("a", "b", "c", "d", "e")))
    now = {m: {16: {"forward": 100.0, "train": 115.0}} for m in ("a", "b", "c", "d", "e")}
    now["e"] = {16: {"forward": 90.0, "train": 115.0}}
    result = compare_documents(ref, make_doc(now), tolerance=0.15)
    assert result.drift == pytest.approx({"forward": 0.0, "train": 0.15})
    assert result.passed
    e_forward = next(f for f in result.figures if f.model == "e" and f.kind == "forward")
    assert result.corrected(e_forward) == pytest.approx(-0.10)
    # And a model slower in every kind still offends in each.
    now["e"] = {16: {"forward": 75.0, "train": 85.0}}
    result = compare_documents(ref, make_doc(now), tolerance=0.15)
    assert {(f.model, f.kind) for f in result.offenders} == {("e", "forward"), ("e", "train")}


def test_decode_figures_may_have_a_wider_tolerance():
    ref = make_doc({m: {16: {"forward": 100.0, "decode": 100.0}} for m in "abcd"})
    now = {m: {16: {"forward": 100.0, "decode": 100.0}} for m in "abc"}
    now["d"] = {16: {"forward": 100.0, "decode": 80.0}}  # decode alone 20% slower
    assert not compare_documents(ref, make_doc(now), tolerance=0.15).passed
    wider = compare_documents(ref, make_doc(now), tolerance=0.15, decode_tolerance=0.25)
    assert wider.passed and wider.tolerance_of("decode") == 0.25
    now["d"] = {16: {"forward": 80.0, "decode": 100.0}}  # forward keeps the tolerance
    wider = compare_documents(ref, make_doc(now), tolerance=0.15, decode_tolerance=0.25)
    assert [(f.model, f.kind) for f in wider.offenders] == [("d", "forward")]
    with pytest.raises(UsageError, match="--decode-tolerance"):
        compare_documents(ref, make_doc(now), tolerance=0.15, decode_tolerance=1.5)


def test_missing_or_failed_cells_offend():
    ref = make_doc({"a": {16: {"forward": 100.0}, 32: {"forward": 100.0}}})
    now = make_doc({"a": {16: {"forward": 100.0}, 32: {"forward": 100.0}}})
    now["models"]["a"]["cells"][1].update(status="oom", reason="out of memory", figures=None)
    result = compare_documents(ref, now, tolerance=0.1)
    assert [(f.context, f.problem) for f in result.offenders] == [(32, "oom: out of memory")]


def test_confirmation_pools_the_samples_of_both_runs():
    first = make_doc({"a": {16: {"forward": 80.0}}})
    first["models"]["a"]["cells"][0]["figures"]["forward"]["ratio_samples"] = [70.0, 80.0, 90.0]
    again = make_doc({"a": {16: {"forward": 100.0}}})
    again["models"]["a"]["cells"][0]["figures"]["forward"]["ratio_samples"] = [95.0, 100.0, 105.0]
    first["models"]["a"]["cells"][0]["figures"]["forward"]["seconds_samples"] = [0.3, 0.2]
    again["models"]["a"]["cells"][0]["figures"]["forward"]["seconds_samples"] = [0.1]
    merged = merge_measurements(first, again)
    fig = merged["models"]["a"]["cells"][0]["figures"]["forward"]
    assert fig["ratio_samples"] == [70.0, 80.0, 90.0, 95.0, 100.0, 105.0]
    assert fig["seconds_samples"] == [0.3, 0.2, 0.1]  # the raw times stay with their ratios
    assert fig["ratio"] == pytest.approx(92.5)
    assert first["models"]["a"]["cells"][0]["figures"]["forward"]["ratio"] == 80.0  # untouched


def gpu_doc(seconds: dict[str, list[float]], calibration_ratio: dict[str, float]) -> dict:
    """A GPU document for model "a": per kind its raw seconds per round, and a calibration
    ratio that need not move with them (a launch-bound calibration on a busy host)."""
    doc = make_doc({"a": {16: dict(calibration_ratio)}}, "NVIDIA H200", "cuda")
    for kind, samples in seconds.items():
        fig = doc["models"]["a"]["cells"][0]["figures"][kind]
        fig["seconds_samples"] = samples
        fig["tokens_per_s"] = 1000 / statistics.median(samples)  # 1000 tokens per call
    return doc


def test_gpu_forward_and_train_are_judged_on_the_fastest_round():
    ref = gpu_doc({"forward": [0.010, 0.011, 0.012], "train": [0.030, 0.031]},
                  {"forward": 100.0, "train": 100.0})
    # The calibration ratio halved (host load), the device-bound calls did not slow down; one
    # disturbed round does not count either.
    noisy = gpu_doc({"forward": [0.0101, 0.020, 0.019], "train": [0.030, 0.045]},
                    {"forward": 50.0, "train": 50.0})
    result = compare_documents(ref, noisy, tolerance=0.10)
    assert result.passed, [(f.kind, f.change) for f in result.figures]
    assert {f.basis for f in result.figures} == {"device"}
    assert result.figures[0].reference_score == pytest.approx(1000 / 0.010)  # fastest round
    # A real slowdown moves every round, the fastest too.
    slow = gpu_doc({"forward": [0.0125, 0.013, 0.014], "train": [0.030, 0.031]},
                   {"forward": 100.0, "train": 100.0})
    result = compare_documents(ref, slow, tolerance=0.10)
    assert [(f.kind, round(f.change, 3)) for f in result.offenders] == [("forward", -0.2)]


def test_gpu_decode_and_old_documents_stay_on_the_calibration():
    # Decode is host-bound: judged on its ratio to the (host-bound) steps calibration.
    ref = gpu_doc({"decode": [0.1, 0.1]}, {"decode": 100.0})
    now = gpu_doc({"decode": [0.2, 0.2]}, {"decode": 95.0})
    result = compare_documents(ref, now, tolerance=0.10)
    assert result.passed and result.figures[0].basis == "calibrated"
    # A GPU reference written before raw seconds were stored has only ratios.
    old = make_doc({"a": {16: {"forward": 100.0}}}, "NVIDIA H200", "cuda")
    result = compare_documents(old, make_doc({"a": {16: {"forward": 80.0}}}, "NVIDIA H200", "cuda"),
                               tolerance=0.10)
    assert result.figures[0].basis == "calibrated" and not result.passed


# ---------------------------------------------------------------------------------------------
# The command on hand-made documents


def _write(tmp_path, name: str, doc: dict):
    path = tmp_path / name
    write_document(path, doc)
    return path


def test_check_measured_file_exit_codes(tmp_path, capsys):
    ref = _write(tmp_path, "ref.json", make_doc({"a": {16: {"forward": 100.0}}}))
    slow = _write(tmp_path, "slow.json", make_doc({"a": {16: {"forward": 85.0}}}))
    assert main(["check", "--reference", str(ref), "--measured", str(slow)]) == 1
    out = capsys.readouterr()
    assert "check FAILED" in out.err and "-15.0%" in out.out
    assert main(["check", "--reference", str(ref), "--measured", str(slow), "--tolerance", "0.2"]) == 0
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--tolerance", "--decode-tolerance"])
def test_check_refuses_a_tolerance_out_of_range_in_one_line(tmp_path, capsys, option):
    ref = _write(tmp_path, "ref.json", make_doc({"a": {16: {"forward": 100.0}}}))
    assert main(["check", "--reference", str(ref), "--measured", str(ref), option, "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} must be in [0, 1), got 1.5" in err


def test_check_refuses_other_device_classes(tmp_path, capsys):
    ref = _write(tmp_path, "ref.json", make_doc({"a": {16: {"forward": 100.0}}}))
    other = _write(tmp_path, "arm.json", make_doc({"a": {16: {"forward": 100.0}}}, "cpu-aarch64-1threads"))
    assert main(["check", "--reference", str(ref), "--measured", str(other)]) == 2
    err = capsys.readouterr().err
    assert "refusing to compare across device classes" in err and "cpu-aarch64-1threads" in err
    assert len(err.strip().splitlines()) == 1

    arm_ref = _write(tmp_path, "arm_ref.json", make_doc({"transformer": {16: {"forward": 1.0}}},
                                                        "cpu-aarch64-1threads"))
    if "aarch64" not in __import__("platform").machine():
        assert main(["check", "--reference", str(arm_ref)]) == 2
        assert "refusing to compare across device classes" in capsys.readouterr().err

    gpu_ref = _write(tmp_path, "gpu.json", make_doc({"transformer": {16: {"forward": 1.0}}},
                                                    "NVIDIA H200", "cuda"))
    import torch
    if not torch.cuda.is_available():
        assert main(["check", "--reference", str(gpu_ref)]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


def test_a_reference_folder_gives_the_reference_of_this_cpu_model(tmp_path, monkeypatch, capsys):
    import torch

    from bimix_bench.speed.document import device_class

    here = device_class(torch.device("cpu"), 1)
    folder = tmp_path / "refs"
    folder.mkdir()
    for name, cpu, ratio in (("amd.json", "AMD X", 100.0), ("intel.json", "Intel Y", 80.0)):
        doc = make_doc({"a": {16: {"forward": ratio}}}, here)
        doc["device"]["name"] = cpu
        _write(folder, name, doc)
    _write(folder, "gpu.json", make_doc({"a": {16: {"forward": 1.0}}}, "NVIDIA H200", "cuda"))
    measured = _write(tmp_path, "now.json", make_doc({"a": {16: {"forward": 80.0}}}, here))
    check = ["check", "--reference", str(folder), "--measured", str(measured)]

    monkeypatch.setattr("bimix_bench.env.cpu_model", lambda: "Intel Y")
    assert main(check) == 0  # against intel.json, where 80 is no change
    assert "check passed" in capsys.readouterr().out
    monkeypatch.setattr("bimix_bench.env.cpu_model", lambda: "AMD X")
    assert main(check) == 1  # against amd.json: -20%
    capsys.readouterr()
    monkeypatch.setattr("bimix_bench.env.cpu_model", lambda: "Other Z")
    assert main(check) == 1  # no match: the first of this class (amd.json), with a note
    out = " ".join(capsys.readouterr().out.split())  # Rich folds long lines
    assert "was measured on this machine's 'Other Z'" in out and "amd.json" in out

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", "--reference", str(empty), "--measured", str(measured)]) == 2
    assert "no speed documents in the reference folder" in capsys.readouterr().err


def test_check_update_rewrites_the_reference(tmp_path):
    ref = _write(tmp_path, "ref.json", make_doc({"a": {16: {"forward": 100.0}}}))
    new = _write(tmp_path, "new.json", make_doc({"a": {16: {"forward": 70.0}}}))
    assert main(["check", "--reference", str(ref), "--measured", str(new), "--update"]) == 0
    assert read_document(ref)["models"]["a"]["cells"][0]["figures"]["forward"]["ratio"] == 70.0


def test_check_rejects_a_broken_reference(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": FORMAT, "version": 99}))
    assert main(["check", "--reference", str(bad)]) == 2
    assert "not a valid speed document" in capsys.readouterr().err
    assert main(["check", "--reference", str(tmp_path / "missing.json")]) == 2


# ---------------------------------------------------------------------------------------------
# Real measurements at small shapes


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("speed") / "reference.json"
    result = CliRunner().invoke(app, [
        "speed", "--models", "transformer", "--contexts", "16,32", "--tokens-per-batch", "128",
        "--device", "cpu", "--repeats", "7", "--warmup", "2", "--decode-tokens", "2",
        "--threads", "1", "--clock", "cpu", "--interleave", "all", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_check_passes_on_unchanged_code(reference, monkeypatch):
    monkeypatch.delenv(INJECT_ENV, raising=False)
    # Tiny workloads are noisy; a generous tolerance keeps this about the mechanism.
    result = CliRunner().invoke(app, ["check", "--reference", str(reference), "--tolerance", "0.5"])
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output and "6 figures" in result.output


def test_check_fails_on_an_injected_slowdown(reference, monkeypatch, tmp_path):
    monkeypatch.setenv(INJECT_ENV, "transformer=4")
    out = tmp_path / "measured.json"
    result = CliRunner().invoke(app, ["check", "--reference", str(reference), "--tolerance", "0.5",
                                      "--no-confirm", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "throughput regressions" in result.output and "transformer" in result.output
    measured = read_document(out)
    assert measured["injected_slowdown"] == {"transformer": 4.0}
    ref = read_document(reference)
    ref_fig = ref["models"]["transformer"]["cells"][0]["figures"]["forward"]
    now_fig = measured["models"]["transformer"]["cells"][0]["figures"]["forward"]
    assert now_fig["calibration_calls"] == ref_fig["calibration_calls"]  # the reference's stretch
    assert now_fig["ratio"] < 0.5 * ref_fig["ratio"]  # 4x the time: about a quarter


def test_check_measures_only_requested_models(reference, capsys):
    assert main(["check", "--reference", str(reference), "--models", "mamba2"]) == 2
    assert "not in the reference" in capsys.readouterr().err


def test_reference_documents_are_plain_json(reference):
    data = json.loads(reference.read_text())
    copy.deepcopy(data)  # no custom objects
    assert data["device"]["class"].endswith("-1threads") and data["settings"]["clock"] == "cpu"
