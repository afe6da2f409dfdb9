"""RULER's needle-in-a-haystack variants that multikey_needle / multivalue / variable_tracking do
not already cover (Hsieh et al. 2024, "RULER: What's the Real Context Size of Your Long-Context
Language Models?", Table 1 and Appendix B):

  single_needle_noise   one "special magic number" needle in a haystack of one short filler
                        passage repeated (RULER's S-NIAH with noise as haystack): nothing but the
                        needle is informative, so this isolates retrieval from reading prose
  multiquery            several needles with distinct keys; the question asks for the numbers of
                        several of them at once, answered in the question's order (MQ-NIAH)
  common_words          a numbered list of words in which a few words occur many times and the
                        rest a few times each; the question asks for the common words
                        (common-words extraction, CWE: aggregation, no retrieval)

As in RULER, answers with several items are also scored by the share of items found anywhere in
the generated answer (`item_recall`, RULER's string_match_all), beside exact match.
The filler passage is ours; RULER repeats a fixed passage in the same way.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from bimix_bench.tasks.multidoc_qa.corpus import ProseCorpus, python_docs_corpus, sentence_boundaries
from bimix_bench.tasks.multidoc_qa.layout import QAExample, build_prompt, prompt_overhead, to_example

FILLER = ("The tide comes in and goes out. The stones on the shore are grey. A gull circles over "
          "the harbour. Nothing changes here. The day goes on as before.")


@lru_cache(maxsize=1)
def noise_corpus() -> ProseCorpus:
    """The filler passage as a haystack: a document is the passage repeated from one of its
    sentence starts. Keys still come from the words of Python's documentation."""
    text = FILLER.encode("ascii")
    return ProseCorpus(text, sentence_boundaries(text), python_docs_corpus().words)


# --- common-words extraction ------------------------------------------------------------------
def common_words_answer_room(cfg: dict[str, Any]) -> int:
    """The common words joined by spaces: at most 10 letters each (the corpus's longest words)."""
    n = int(cfg["n_common"])
    return 10 * n + (n - 1)


def _rendered_length(words: list[str]) -> int:
    """Bytes of "1. w1 2. w2 ... n. wn": order-independent (numbering and words add up)."""
    return sum(len(str(i)) + 3 + len(w) for i, w in enumerate(words, start=1)) - 1 if words else 0


def common_words_example(rng: np.random.Generator, cfg: dict[str, Any], prompt_len: int) -> QAExample:
    """One list filling the prompt exactly: each of `n_common` words `common_freq` times, then as
    many other words `uncommon_freq` times each as fit, shuffled; trailing spaces make up the
    few bytes a whole word group would overrun. Answer: the common words in order of first
    appearance."""
    n_common, f_common, f_rare = int(cfg["n_common"]), int(cfg["common_freq"]), int(cfg["uncommon_freq"])
    if not 0 < f_rare < f_common:
        raise ValueError(f"common_words needs 0 < uncommon_freq < common_freq, got {f_rare} "
                         f"and {f_common}")
    words = python_docs_corpus().words
    question = f"What are the {n_common} most common words in the list above?".encode()
    room = prompt_len - prompt_overhead(1, question)
    order = rng.permutation(len(words))
    common = [words[i] for i in order[:n_common]]
    occurrences = [w for w in common for _ in range(f_common)]
    if _rendered_length(occurrences) > room:
        raise ValueError(f"{n_common} words x {f_common} occurrences need "
                         f"{_rendered_length(occurrences)} bytes, the prompt leaves {room}: raise "
                         f"the context or lower n_common / common_freq")
    for i in order[n_common:]:
        group = [words[i]] * f_rare
        if _rendered_length(occurrences + group) > room:
            break
        occurrences += group
    occurrences = [occurrences[j] for j in rng.permutation(len(occurrences))]
    text = " ".join(f"{k}. {w}" for k, w in enumerate(occurrences, start=1))
    text += " " * (room - len(text))
    first_seen = sorted(common, key=occurrences.index)
    layout = build_prompt([text.encode("ascii")], question)
    return to_example(layout, (" ".join(first_seen),), None, items=tuple(first_seen))
