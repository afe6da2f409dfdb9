"""Scoring babilong by generation: greedy decoding of each test question's answer through the
model's prefill / decode path (stopping at EOS or after the answer room), scored as BABILong
scores it (scoring.py)."""

from __future__ import annotations

from typing import Any

from bimix_bench.config.sections import eval_config, train_config
from bimix_bench.engine.device import autocast_factory
from bimix_bench.metrics.generation import greedy_generate
from bimix_bench.models.tokenizer import EOS, decode
from bimix_bench.tasks.babilong.haystack import BabiExample
from bimix_bench.tasks.babilong.scoring import is_correct


def answer_metrics(model, examples: list[BabiExample], labels: tuple[str, ...], device, cfg: dict[str, Any],
                   max_answer_bytes: int, decode_batch_size: int) -> dict[str, float]:
    """exact_match (BABILong's rule) and n_questions over the first eval.test_examples questions."""
    examples = examples[: eval_config(cfg).test_examples]
    if not examples:
        return {}
    autocast = autocast_factory(device, train_config(cfg).precision)
    model.eval()
    outputs = greedy_generate(
        model, [e.qa.prompt for e in examples], max_new_tokens=max_answer_bytes + 1, stop_id=EOS,
        device=device, batch_size=decode_batch_size, autocast=autocast,
    )
    hits = [is_correct(decode(ids), e.answer, e.question, labels) for e, ids in zip(examples, outputs)]
    return {"exact_match": sum(hits) / len(hits), "n_questions": len(hits)}
