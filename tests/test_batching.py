"""Classification batches are padded to few distinct widths, and the padding changes nothing:
every model's pooled logits for a row are the same with more padding after it."""

from __future__ import annotations

import math

import pytest
import torch

from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS
from bimix_bench.task import PAD, PAD_MULTIPLE, ClassificationSplit


def test_widths_round_up_to_the_multiple_and_stop_at_the_context():
    split = ClassificationSplit([torch.arange(n) % 7 + 1 for n in (5, 130, 300)], torch.tensor([0, 1, 0]))
    assert split.batch([0], 1000).tokens.shape[1] == PAD_MULTIPLE
    assert split.batch([0, 1], 1000).tokens.shape[1] == 2 * PAD_MULTIPLE
    assert split.batch([2], 280).tokens.shape[1] == 280  # cut to the context, not beyond it
    batch = split.batch([0, 1], 1000)
    assert batch.lengths.tolist() == [5, 130] and (batch.tokens[0, 5:] == PAD).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_extra_padding_leaves_pooled_logits_unchanged(name):
    spec = MODELS.get(name).obj
    step = math.lcm(4, spec.width_multiple)
    width = step * -(-32 // step)
    torch.manual_seed(0)
    model = LanguageModel(Architecture(width, 2, 2, 2 * width, 512, "cls", 3), spec,
                          dict(spec.default_options)).eval()
    rows = [torch.randint(1, 20, (n,)) for n in (37, 90)]
    split = ClassificationSplit(rows, torch.tensor([0, 1]))
    short = split.batch([0, 1], 512)  # width 128
    long = split.batch([0, 1], 512)
    long.tokens = torch.cat([long.tokens, torch.full((2, 128), PAD)], dim=1)  # width 256
    with torch.no_grad():
        a = model(short.tokens, short.lengths)
        b = model(long.tokens, long.lengths)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
