"""Answer scoring as BABILong scores it (babilong/metrics.py of the BABILong repository), and
the chance level that follows from it.

Each task has a set of answer labels (BABILong's TASK_LABELS: the six places for qa1-qa4; the
four people and three objects of qa5). A generated answer is lowercased and cut at its first
".", the labels it contains are collected, those the question names are removed (a label in the
question is never the answer), and the answer counts as correct when exactly the target label
remains. (BABILong also cuts at prompt-template markers such as "<context>"; no template is used
here.)

Chance: a reader that ignores the story can at best name one of the labels of the answer's kind
(place, person or object) that the question does not name, so per question it is right with
probability 1 / (that many labels); the chance level is the mean over the test questions: 1/6 for
qa1 and qa2, 1/5 for qa3 and qa4 (the question names one place), 0.3 for generated qa5 (1/4 for
"Who received / gave the apple?", 1/3 for the three question forms that name a person).
"""

from __future__ import annotations

from typing import Iterable

from bimix_bench.tasks.babilong.world import GIVERS, OBJECTS, PLACES

LABEL_KINDS = {"places": PLACES, "people": GIVERS, "objects": OBJECTS}
TASK_LABELS = {"qa1": PLACES, "qa2": PLACES, "qa3": PLACES, "qa4": PLACES, "qa5": GIVERS + OBJECTS}


def _named(labels: Iterable[str], text: str) -> set[str]:
    text = text.lower()
    return {label.lower() for label in labels if label.lower() in text}


def is_correct(output: str, target: str, question: str, labels: Iterable[str]) -> bool:
    """BABILong's compare_answers: the target is the only label in the output's first sentence
    that the question does not name."""
    labels = tuple(labels)
    said = _named(labels, output.lower().split(".")[0]) - _named(labels, question)
    return said == {target.lower()}


def guess_rate(target: str, question: str, labels: Iterable[str]) -> float:
    """Probability that a story-blind guess is right: 1 / labels of the target's kind that the
    question does not name."""
    labels = {label.lower() for label in labels}
    kinds = [{w.lower() for w in words} & labels for words in LABEL_KINDS.values()]
    kind = next((words for words in kinds if target.lower() in words), None)
    if kind is None:
        raise ValueError(f"the answer {target!r} is none of the task's labels {sorted(labels)}")
    return 1.0 / len(kind - _named(labels, question))


def chance_level(questions: list[tuple[str, str]], labels: Iterable[str]) -> float:
    """The mean story-blind guess rate over (question, target) pairs."""
    labels = tuple(labels)
    return sum(guess_rate(t, q, labels) for q, t in questions) / len(questions)
