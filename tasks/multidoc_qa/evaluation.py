"""Scoring multi-document QA by generation: greedy decoding of each test question's answer
through the model's prefill / decode path (stopping at EOS or after the answer room), scored
with exact match and token F1 (bimix_bench.metrics.qa), overall and by evidence depth, and
for generated answers of several parts also by RULER's item recall."""

from __future__ import annotations

from typing import Any

from bimix_bench.config.sections import eval_config
from bimix_bench.metrics.generation import generate_answers
from bimix_bench.metrics.qa import best_scores, depth_bucket_metrics, item_recall
from bimix_bench.tasks.multidoc_qa.layout import QAExample


def qa_metrics(model, examples: list[QAExample], device, cfg: dict[str, Any], max_answer_bytes: int,
               decode_batch_size: int, depth_buckets: int, scoring: str = "squad") -> dict[str, float]:
    """exact_match, f1 and n_questions over the first eval.test_examples questions, plus
    em_depth_* / f1_depth_* / n_depth_* per evidence-depth bucket, and item_recall (RULER's
    string_match_all) where every example lists its answer's items. `scoring`: the data set's
    official F1 rules (bimix_bench.metrics.qa.SCORINGS; see scoring_for)."""
    examples = examples[: eval_config(cfg).test_examples]
    if not examples:
        return {}
    answers = generate_answers(model, [e.prompt for e in examples], device, cfg, max_answer_bytes,
                               decode_batch_size)
    em, f1 = [], []
    for example, text in zip(examples, answers):
        e, f = best_scores(text, example.answers, scoring)
        em.append(e)
        f1.append(f)
    out = {"exact_match": sum(em) / len(em), "f1": sum(f1) / len(f1), "n_questions": len(em)}
    if all(e.items for e in examples):
        recalls = [item_recall(text, e.items) for e, text in zip(examples, answers)]
        out["item_recall"] = sum(recalls) / len(recalls)
    out.update(depth_bucket_metrics([e.depth for e in examples], em, f1, depth_buckets))
    return out


def scoring_for(subtask: str) -> str:
    """The F1 rules of a subtask's data set: HotpotQA's official script for hotpotqa,
    LongBench's qa_f1_score for its subsets, SQuAD's for the generated subtasks."""
    if subtask == "hotpotqa":
        return "hotpotqa"
    if subtask.startswith("longbench_"):
        return "longbench"
    return "squad"
