"""BiMix record extras and gate-map figures."""

from __future__ import annotations

import json
import re

import pytest
import torch

from bimix_bench.bimix.gate_maps import (
    boundary_marks,
    capture_token_gates,
    gate_probe,
    render_static_gate_maps,
    render_token_gates,
    routing_measures,
)
from bimix_bench.metrics.boundaries import token_boundaries
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.models.mixer import TrainProgress
from bimix_bench.models.tokenizer import SEP, encode
from bimix_bench.registry import MODELS
from tests.bimix_fixtures import make_mixer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CODE = "import os\n\n\n@decorator\ndef f(x):\n    return x\n\nclass A:\n    def g(self):\n        pass\n"


def test_record_extras_schema():
    mixer = make_mixer(n_heads=4, n_bands=3, tv_lambda=50.0)
    with torch.no_grad():
        mixer.gates.static[1, 1] = torch.tensor([0.1, 0.9, 0.9])
    extras = mixer.record_extras()
    json.dumps(extras)  # JSON-able as it goes into the record
    assert extras["branches"] == ["dct", "cheb"]
    g = torch.tensor(extras["gate_map"])
    assert g.shape == (4, 2, 3)
    assert torch.tensor(extras["gate_tv"]).shape == (4, 2)
    assert extras["gate_tv"][1][1] == 0.8000000119209290 or abs(extras["gate_tv"][1][1] - 0.8) < 1e-6
    assert extras["gate_pieces"][1][1] == 2 and extras["gate_pieces"][0][0] == 1
    assert extras["phase"] == 1 and extras["ablation"] == "none"
    assert extras["tv_lambda"] == 50.0 and len(extras["dct_half_lives"]) == 4
    mixer.after_optimizer_step(TrainProgress(1, 10, 1.0))  # lambda * lr = 50: every row fuses
    assert all(p == 1 for row in mixer.record_extras()["gate_pieces"] for p in row)
    cheb_only = make_mixer(ablation="cheb_only").record_extras()
    assert cheb_only["branches"] == ["cheb"] and "dct_half_lives" not in cheb_only
    assert torch.tensor(cheb_only["gate_map"]).shape[1] == 1 and cheb_only["ablation"] == "cheb_only"


def test_static_gate_map_png(tmp_path):
    records = [make_mixer(seed=i).record_extras() for i in range(2)]
    records[1] = records[1]["gate_map"]  # plain nested lists are accepted too
    out = render_static_gate_maps(records, tmp_path / "maps" / "static.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_boundaries_are_the_shared_structural_definition():
    ids = encode(CODE)
    found = token_boundaries(ids)
    text = CODE
    # The line's first byte, indentation included (the long-code metrics' regions start there).
    assert found["def_class"] == [text.index(s) for s in ("@", "def f", "class A", "    def g")]
    # The first byte of the line after each blank line (the same as the long-code metrics).
    assert found["blank_line"] == [m.end() for m in re.finditer(r"^[ \t]*\n", text, re.M) if m.end() < len(text)]
    assert found["file_start"] == []  # the sequence's own start is not a new file
    two = encode("a") + [SEP] + encode("def b")
    assert token_boundaries(two)["file_start"] == [2] and token_boundaries(two)["def_class"] == [2]
    assert boundary_marks(ids, None) == found
    assert boundary_marks(ids, [3, 9]) == {"boundary": [3, 9]}
    assert boundary_marks(ids, {"chapter": (4,)}) == {"chapter": [4]}


def test_routing_measures_by_hand():
    gates = torch.zeros(6, 1, 1, 2)  # T = 6, one head, one branch, two bands
    gates[3:] = 1.0  # every gate jumps at t = 3: a change of 1 there, 0 elsewhere
    at_boundary = routing_measures(gates, {"def_class": [3]})
    assert at_boundary["token_variation"] == pytest.approx(1 / 5)
    assert at_boundary["boundary_change"] == 1.0 and at_boundary["elsewhere_change"] == 0.0
    assert at_boundary["boundary_ratio"] is None  # nothing moves elsewhere: no finite ratio
    elsewhere = routing_measures(gates, {"def_class": [1, 5]})
    assert elsewhere["boundary_change"] == 0.0 and elsewhere["elsewhere_change"] == pytest.approx(1 / 3)
    assert elsewhere["boundary_ratio"] == 0.0 and elsewhere["n_boundaries"] == 2
    none = routing_measures(gates, {})
    assert none["boundary_change"] is None and none["boundary_ratio"] is None


def _bimix_lm() -> LanguageModel:
    arch = Architecture(d_model=32, n_layers=2, n_heads=2, ffn_hidden=48, max_seq_len=128)
    torch.manual_seed(0)
    options = {"window": 16, "k_dct": 8, "k_cheb": 8, "n_bands": 2}
    return LanguageModel(arch, MODELS.get("bimix").obj, options)


def test_token_gates_png_and_capture(tmp_path):
    model = _bimix_lm()
    for m in model.mixers:  # phase 2: per-token gates from the network
        for k in range(1, 4):
            m.after_optimizer_step(TrainProgress(k, 10, 1e-3))
        with torch.no_grad():
            m.gates.network.proj.weight.normal_(std=1.0)
    gates = capture_token_gates(model, encode(CODE))
    assert len(gates) == 2 and gates[0].shape == (len(CODE), 2, 2, 2)
    assert gates[0].std(dim=0).max() > 0.01  # they vary with the token
    assert all(m.gates.last_gates is None and not m.capture_gates for m in model.mixers)
    out = render_token_gates(model, [CODE, "second document\n\ndef h(): pass\n"], tmp_path / "tokens.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_the_probe_measures_every_layer_over_a_code_text():
    model = _bimix_lm()
    probe = gate_probe(model, encode(CODE))
    assert probe["tokens"] == min(len(encode(CODE)), 128) and len(probe["layers"]) == 2
    assert probe["boundaries"]["def_class"] >= 1
    for layer in probe["layers"]:
        assert layer["token_variation"] == 0.0  # phase 1: static gates, the same at every token
        assert layer["boundary_change"] == 0.0
