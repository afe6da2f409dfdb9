"""The record names the kernels each measurement really ran: a mixer whose training step takes
another path than its inference forward (fla's forward with a plain-torch backward on Hopper,
say) must show both, not whichever ran last."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.config import deep_merge, load_budget
from bimix_bench.engine.runner import backends_entry
from bimix_bench.engine.throughput import measure_throughput
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.ops import recurrent_mixer
from bimix_bench.registry import MODELS
from bimix_bench.task import StreamSplit, TaskData

CFG = deep_merge(load_budget("tiny"), {
    "throughput": {"warmup": 0, "repeats": 1, "decode_tokens": 2},
    "train": {"precision": "fp32", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.95],
              "grad_clip": 1.0},
})


def test_backends_entry_one_label_when_training_and_inference_agree():
    entry = backends_entry({"train": ("fla", "why"), "inference": ("fla", "why")})
    assert entry == {"mixer": "fla", "mixer_reason": "why"}


def test_backends_entry_names_both_paths_when_they_differ():
    entry = backends_entry({"train": ("chunked", "no fla bwd"), "inference": ("fla", "fla ok")})
    assert entry["mixer"] == "fla (train: chunked)"
    assert entry["mixer_train"] == "chunked" and entry["mixer_inference"] == "fla"
    assert "training: no fla bwd" in entry["mixer_reason"] and "inference: fla ok" in entry["mixer_reason"]


def test_measured_figures_carry_the_backend_each_mode_ran(monkeypatch):
    real = recurrent_mixer.resolve_backend

    def grad_dependent(requested, *, decay_kind, device, needs_grad, head_dims=None, length=None):
        name, _ = real("chunked", decay_kind=decay_kind, device=device, needs_grad=needs_grad,
                       head_dims=head_dims, length=length)
        return (name, "training path") if needs_grad else ("recurrent", "inference path")

    monkeypatch.setattr(recurrent_mixer, "resolve_backend", grad_dependent)
    spec = MODELS.get("gla").obj
    torch.manual_seed(0)
    model = LanguageModel(Architecture(32, 1, 2, 64, 16), spec, dict(spec.default_options))
    split = StreamSplit(torch.randint(0, 256, (400,)))
    data = TaskData("t", "t", "lm", 16, split, split, split)
    out = measure_throughput(model, data, CFG, torch.device("cpu"), batch_size=2)
    assert out["train_tokens_per_s"]["backend"] == "chunked"
    assert out["inference_tokens_per_s"]["backend"] == "recurrent"
    assert out["decode_tokens_per_s"]["backend"] == "torch-step"
    assert backends_entry(out["backends"])["mixer"] == "recurrent (train: chunked)"


def test_transformer_decode_backend_is_its_kv_cache_attention():
    spec = MODELS.get("transformer").obj
    model = LanguageModel(Architecture(32, 1, 2, 64, 16), spec, dict(spec.default_options))
    assert model.mixers[0].decode_backend.startswith("static-kv-cache+")
