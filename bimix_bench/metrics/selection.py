"""Which metric is the headline of a task, which way it is better, and how validation results
are ranked: one definition for the best-checkpoint choice, early stopping, learning-rate
selection and the tables. Pure Python (no torch, no pandas), so every layer can import it."""

from __future__ import annotations

import math
from typing import Iterable

# Headline metrics in order of preference, with the direction that is better.
MAIN_METRIC: dict[str, str] = {
    "accuracy": "max",
    "exact_match": "max",
    "f1": "max",
    "bits_per_byte": "min",  # lower is better
    "loss": "min",  # last resort for a task that reports nothing else
}
# Other metrics a task may report, for `metric_direction` only.
OTHER_DIRECTIONS: dict[str, str] = {"perplexity": "min", "rouge_l": "max", "edit_sim": "max",
                                    "item_recall": "max"}


def metric_direction(name: str) -> str:
    """"max" when higher values of metric `name` are better, "min" when lower are."""
    direction = MAIN_METRIC.get(name) or OTHER_DIRECTIONS.get(name)
    if direction is None:
        raise KeyError(f"unknown metric {name!r}: its better direction is not known")
    return direction


def headline_metric(names: Iterable[str]) -> str | None:
    """The preferred headline metric among `names`, or None when none is a headline metric."""
    available = set(names)
    return next((m for m in MAIN_METRIC if m in available), None)


def selection_key(metric: str, metrics: dict[str, float]) -> tuple[float, float]:
    """Rank of a validation result: larger is better. The selection metric first (sign-adjusted
    to its direction), the loss second to break ties (two rates that both reach accuracy 1.0).
    A missing or non-finite value ranks last."""
    value = metrics.get(metric)
    if value is None or not math.isfinite(float(value)):
        return (-math.inf, -math.inf)
    signed = float(value) if metric_direction(metric) == "max" else -float(value)
    loss = metrics.get("loss")
    tie = -float(loss) if loss is not None and math.isfinite(float(loss)) else -math.inf
    return (signed, tie)


def reaches(metric: str, value: float | None, target: float) -> bool:
    """Whether `value` of `metric` is at least as good as `target` (early stopping)."""
    if value is None or not math.isfinite(float(value)):
        return False
    return value >= target if metric_direction(metric) == "max" else value <= target
