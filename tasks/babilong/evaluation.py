"""Scoring babilong by generation: greedy decoding of each test question's answer through the
model's prefill / decode path (stopping at EOS or after the answer room), scored as BABILong
scores it (scoring.py)."""

from __future__ import annotations

from typing import Any

from bimix_bench.config.sections import eval_config
from bimix_bench.metrics.generation import generate_answers
from bimix_bench.tasks.babilong.haystack import BabiExample
from bimix_bench.tasks.babilong.scoring import is_correct


def answer_metrics(model, examples: list[BabiExample], labels: tuple[str, ...], device, cfg: dict[str, Any],
                   max_answer_bytes: int, decode_batch_size: int) -> dict[str, float]:
    """exact_match (BABILong's rule) and n_questions over the first eval.test_examples questions."""
    examples = examples[: eval_config(cfg).test_examples]
    if not examples:
        return {}
    answers = generate_answers(model, [e.qa.prompt for e in examples], device, cfg, max_answer_bytes,
                               decode_batch_size)
    hits = [is_correct(text, e.answer, e.question, labels) for e, text in zip(examples, answers)]
    return {"exact_match": sum(hits) / len(hits), "n_questions": len(hits)}
