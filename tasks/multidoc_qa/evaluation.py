"""Scoring multi-document QA by generation: greedy decoding of each test question's answer
through the model's prefill / decode path (stopping at EOS or after the answer room), scored
with exact match and token F1 (bimix_bench.metrics.qa), overall and by evidence depth."""

from __future__ import annotations

from typing import Any

from bimix_bench.config.sections import eval_config, train_config
from bimix_bench.engine.device import autocast_factory
from bimix_bench.metrics.generation import greedy_generate
from bimix_bench.metrics.qa import best_scores, depth_bucket_metrics
from bimix_bench.models.tokenizer import EOS, decode
from bimix_bench.tasks.multidoc_qa.layout import QAExample


def qa_metrics(model, examples: list[QAExample], device, cfg: dict[str, Any], max_answer_bytes: int,
               decode_batch_size: int, depth_buckets: int, scoring: str = "squad") -> dict[str, float]:
    """exact_match, f1 and n_questions over the first eval.test_examples questions, plus
    em_depth_* / f1_depth_* / n_depth_* per evidence-depth bucket. `scoring`: the data set's
    official F1 rules (bimix_bench.metrics.qa.SCORINGS; see scoring_for)."""
    examples = examples[: eval_config(cfg).test_examples]
    if not examples:
        return {}
    autocast = autocast_factory(device, train_config(cfg).precision)
    model.eval()
    outputs = greedy_generate(
        model, [e.prompt for e in examples], max_new_tokens=max_answer_bytes + 1, stop_id=EOS,
        device=device, batch_size=decode_batch_size, autocast=autocast,
    )
    em, f1 = [], []
    for example, ids in zip(examples, outputs):
        e, f = best_scores(decode(ids), example.answers, scoring)
        em.append(e)
        f1.append(f)
    out = {"exact_match": sum(em) / len(em), "f1": sum(f1) / len(f1), "n_questions": len(em)}
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
