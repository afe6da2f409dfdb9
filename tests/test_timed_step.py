"""The training step whose speed a record reports is the step the trainer takes: logits only at
the scored positions (MQAR scores 4 of 64 positions of an 8,192-id vocabulary, so a step that
paid the head everywhere would time a different, slower step) and the mixers' auxiliary
losses included."""

from __future__ import annotations

import torch

from bimix_bench.config import deep_merge, load_budget
from bimix_bench.config.sections import train_config
from bimix_bench.engine.device import autocast_factory
from bimix_bench.engine.throughput import make_train_step
from bimix_bench.engine.trainer import training_loss
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS
from bimix_bench.task import Batch

CFG = deep_merge(load_budget("tiny"), {"train": {"precision": "fp32", "lr": 1e-3}})


def _model() -> LanguageModel:
    spec = MODELS.get("transformer").obj
    torch.manual_seed(0)
    return LanguageModel(Architecture(32, 1, 2, 64, 16, vocab_size=300), spec, dict(spec.default_options))


def _answer_batch() -> Batch:
    """Two rows of 16 tokens with a loss at three positions only, as MQAR's batches are."""
    tokens = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    targets = torch.full((2, 16), -100)
    targets[0, 5], targets[0, 9], targets[1, 15] = 7, 8, 9
    return Batch(tokens, targets, torch.full((2,), 16))


def test_the_timed_step_scores_only_the_answer_positions_and_adds_the_aux_losses(monkeypatch):
    model, batch = _model(), _answer_batch()
    seen: list[torch.Tensor | None] = []
    aux_calls = []
    original = LanguageModel.forward

    def spy(self, tokens, lengths=None, scored=None):
        seen.append(scored)
        return original(self, tokens, lengths, scored=scored)

    monkeypatch.setattr(LanguageModel, "forward", spy)
    for mixer in model.mixers:
        monkeypatch.setattr(mixer, "aux_loss", lambda: aux_calls.append(1) or torch.tensor(0.0))
    autocast = autocast_factory(torch.device("cpu"), "fp32")
    step = make_train_step(model, batch, "lm", train_config(CFG), autocast)
    step()
    assert len(seen) == 1 and seen[0] is not None
    assert torch.equal(seen[0], batch.targets != -100)
    assert len(aux_calls) == len(model.mixers)


def test_the_trainers_loss_is_the_mean_over_the_scored_positions():
    model, batch = _model(), _answer_batch()
    with torch.no_grad():
        full = model(batch.tokens, batch.lengths)  # (B, T, V)
        scored = batch.targets != -100
        expected = torch.nn.functional.cross_entropy(full[scored], batch.targets[scored])
        torch.testing.assert_close(training_loss(model, model, batch, "lm"), expected)
