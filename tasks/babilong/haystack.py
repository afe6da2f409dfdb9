"""A story hidden in long background text, BABILong's way: the facts, in story order, between
sentences of real prose (here the Python documentation's, tasks/multidoc_qa/corpus.py, where
BABILong uses PG19 books), then the question. Every prompt has exactly `prompt_len` ids, so the
background always fills the context:

  BOS background-with-facts SEP question SEP | answer EOS      (tasks/multidoc_qa/layout.py)

Depth. `window` = (lo, hi) fractions of the context text (background plus facts) where the facts
must lie, as BABILong's task_start_pct / task_end_pct: each fact goes at a sentence start of the
background drawn uniformly (with repeats, then sorted) among those from lo x total to
hi x total - (bytes of all facts), so even facts that end up together end before hi x total.
(0, 1) spreads them over the whole context, as BABILong does by default. When the window has
no sentence start (narrow windows in short contexts) word starts are used, and when it has none
either the facts go together at its start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bimix_bench.tasks.babilong.stories import Story
from bimix_bench.tasks.multidoc_qa.corpus import ProseCorpus, sentence_boundaries
from bimix_bench.tasks.multidoc_qa.layout import QAExample, build_prompt, prompt_overhead, to_example


@dataclass(frozen=True)
class BabiExample:
    qa: QAExample  # the prompt ids and the answer (training target)
    question: str  # the question as written (the scoring ignores labels it names)

    @property
    def answer(self) -> str:
        return self.qa.answers[0]


def insertion_points(background: bytes, lo: int, hi: int) -> np.ndarray:
    """(K,) int64 offsets in [lo, hi] where a fact may start: sentence starts, else word
    starts, else lo itself."""
    sentences = sentence_boundaries(background)
    for points in (sentences, np.array([m.end() for m in re.finditer(rb" ", background)], dtype=np.int64)):
        inside = points[(points >= lo) & (points <= hi)]
        if len(inside):
            return inside
    return np.array([lo], dtype=np.int64)


def hide_facts(facts: list[bytes], background: bytes, window: tuple[float, float],
               rng: np.random.Generator) -> tuple[bytes, list[int]]:
    """The background with the facts inserted in order inside the depth window, and the offset
    of each fact in it."""
    facts_bytes = sum(map(len, facts))
    total = len(background) + facts_bytes
    lo = min(int(window[0] * total), len(background))
    hi = max(lo, int(window[1] * total) - facts_bytes)
    at = np.sort(rng.choice(insertion_points(background, lo, hi), size=len(facts)))
    pieces, offsets, previous, shift = [], [], 0, 0
    for fact, point in zip(facts, at.tolist()):
        pieces += [background[previous:point], fact]
        offsets.append(point + shift)
        previous, shift = point, shift + len(fact)
    pieces.append(background[previous:])
    return b"".join(pieces), offsets


def build_example(story: Story, corpus: ProseCorpus, rng: np.random.Generator, prompt_len: int,
                  window: tuple[float, float]) -> BabiExample:
    """The story hidden in background prose, in a prompt of exactly `prompt_len` ids."""
    facts = [f"{fact} ".encode() for fact in story.facts]
    question = story.question.encode()
    room = prompt_len - prompt_overhead(1, question) - sum(map(len, facts))
    if room < 0:
        raise ValueError(f"a prompt of {prompt_len} ids cannot hold a story of {len(facts)} facts "
                         f"and its question: raise the context or lower max_facts")
    context, _ = hide_facts(facts, corpus.document(rng, room), window, rng)
    layout = build_prompt([context], question)
    return BabiExample(to_example(layout, (story.answer,), None), story.question)


def check_window(window: list | tuple) -> tuple[float, float]:
    """The depth window as (lo, hi) with 0 <= lo <= hi <= 1."""
    if len(window) != 2 or not 0.0 <= float(window[0]) <= float(window[1]) <= 1.0:
        raise ValueError(f"facts_window must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(window)}")
    return float(window[0]), float(window[1])
