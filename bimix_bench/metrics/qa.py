"""Answer scoring for question answering: exact match and token F1 after the normalization of
the SQuAD / HotpotQA / LongBench evaluation scripts, and accuracy by evidence depth.

Normalization (in this order): lowercase; delete ASCII punctuation; delete the articles
"a", "an", "the" as whole words; collapse runs of whitespace to single spaces and strip.

Token F1 counts overlapping tokens with multiplicity (the size of the multiset intersection of
the two bags of words), so a repeated word matches only as often as it occurs on both sides.
Each data set is scored as its own official script scores it (`scoring`):
  "squad"      (the generated subtasks) two empty answers (after normalization) score F1 = 1,
               one empty answer 0, as in the SQuAD 2.0 script;
  "hotpotqa"   hotpot_evaluate_v1.py: F1 = 0 when either normalized answer is "yes", "no" or
               "noanswer" and the two differ (so "yes it is" against "yes" scores 0, not 0.5),
               and 0 when no token is shared (two empty answers included);
  "longbench"  LongBench's qa_f1_score (hotpotqa, 2wikimqa, musique): plain token F1, 0 when no
               token is shared (two empty answers included); no yes/no rule.
Exact match is the same everywhere. With several gold answers the best score counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


SCORINGS = ("squad", "hotpotqa", "longbench")
_HOTPOT_SPECIAL = frozenset({"yes", "no", "noanswer"})


def token_f1(prediction: str, gold: str, scoring: str = "squad") -> float:
    if scoring not in SCORINGS:
        raise ValueError(f"unknown QA scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
    pred_norm, gold_norm = normalize_answer(prediction), normalize_answer(gold)
    if scoring == "hotpotqa" and pred_norm != gold_norm and (
            pred_norm in _HOTPOT_SPECIAL or gold_norm in _HOTPOT_SPECIAL):
        return 0.0
    pred_tokens, gold_tokens = pred_norm.split(), gold_norm.split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens) if scoring == "squad" else 0.0
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_scores(prediction: str, golds: Sequence[str], scoring: str = "squad") -> tuple[float, float]:
    """(EM, F1) of a prediction against the best-matching of several gold answers."""
    if not golds:
        raise ValueError("no gold answers to score against")
    return (max(exact_match(prediction, g) for g in golds),
            max(token_f1(prediction, g, scoring) for g in golds))


def item_recall(prediction: str, items: Sequence[str]) -> float:
    """Share of `items` found anywhere in the prediction, ignoring case: RULER's
    string_match_all, its score for answers of several parts (Hsieh et al. 2024)."""
    if not items:
        raise ValueError("no items to recall")
    text = prediction.lower()
    return sum(item.lower() in text for item in items) / len(items)


def depth_bucket_label(lo: float, hi: float) -> str:
    return f"{lo:.1f}-{hi:.1f}"


def depth_bucket_metrics(depths: Sequence[float | None], em: Sequence[float], f1: Sequence[float],
                         n_buckets: int) -> dict[str, float]:
    """Mean EM and F1 per evidence-depth bucket: depth d in [0, 1] falls in bucket
    min(floor(d * n), n - 1), named like "em_depth_0.0-0.2". Examples without a depth are left
    out; empty buckets are omitted (a mean of nothing is not a number). "n_depth_*" gives the
    count behind each bucket."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    sums: dict[int, list[float]] = {}
    for d, e, f in zip(depths, em, f1, strict=True):
        if d is None:
            continue
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"evidence depth {d} is outside [0, 1]")
        b = min(int(d * n_buckets), n_buckets - 1)
        acc = sums.setdefault(b, [0.0, 0.0, 0])
        acc[0] += e
        acc[1] += f
        acc[2] += 1
    out: dict[str, float] = {}
    for b in sorted(sums):
        label = depth_bucket_label(b / n_buckets, (b + 1) / n_buckets)
        e_sum, f_sum, n = sums[b]
        out[f"em_depth_{label}"] = e_sum / n
        out[f"f1_depth_{label}"] = f_sum / n
        out[f"n_depth_{label}"] = n
    return out
