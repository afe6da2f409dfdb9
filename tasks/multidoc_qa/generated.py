"""Generated multi-document questions over real English prose, in the styles of RULER (Hsieh et
al. 2024) and HotpotQA (Yang et al. 2018). Facts ("needles") are inserted at sentence
boundaries into documents cut from the Python documentation (corpus.py); every prompt has
exactly the same length, so the haystack always fills the context.

  multikey_needle     several needles "The special magic number for <key> is <value>."
                      with distinct keys; the question asks for one key's number
  multivalue          one key with several numbers (plus needles of other keys); the
                      question asks for all of them, answer in document order
  variable_tracking   chains "VAR A = 12345." "VAR B = VAR A." ... spread over the documents,
                      plus distractor chains; the question asks which variables hold the
                      value, answer in chain order (multi-hop)
  bridge              doc A: "<entity> is located in the city of <city>."; another document:
                      "The registry code of <city> is <code>."; distractor entities with
                      their own cities and codes; the question asks for the entity's code
                      (two hops across two documents)
  single_needle_noise, multiquery, common_words
                      RULER's remaining NIAH variants (ruler.py)

Depth: the evidence farthest from the question (smallest depth) is aimed at the depth bucket
i mod n_buckets for example i, so every bucket is covered about evenly (a needle moves back to
the sentence start before its target, and needles inserted before it push it later; the
recorded depth is the one measured in the final prompt); other evidence of the answer follows
it at uniform depths. Distractors sit at uniform depths. Names, numbers and codes are
invented, so no answer can come from memorised world knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bimix_bench.tasks.multidoc_qa.corpus import ProseCorpus, python_docs_corpus, sentence_boundaries
from bimix_bench.tasks.multidoc_qa.layout import QAExample, build_prompt, prompt_overhead, to_example
from bimix_bench.tasks.multidoc_qa.ruler import (
    common_words_answer_room,
    common_words_example,
    noise_corpus,
)

_MIN_DOC_BYTES = 16
_KINDS = ("Institute", "Archive", "Foundation", "Observatory", "Museum", "Academy", "Library", "Gallery")
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")


@dataclass(frozen=True)
class Needle:
    text: bytes
    depth: float  # requested depth in [0, 1)
    evidence: bool  # part of the answer's evidence (depth is recorded) or a distractor


@dataclass(frozen=True)
class Question:
    needles: list[Needle]
    question: bytes
    answer: str
    items: tuple[str, ...] = ()  # the answer's parts, for RULER's item recall (none: whole answer)


# --- names, numbers, codes ----------------------------------------------------------------
def _distinct(n: int, draw: Callable[[], str]) -> list[str]:
    seen: list[str] = []
    while len(seen) < n:
        item = draw()
        if item not in seen:
            seen.append(item)
    return seen


def _number(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def _key(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return f"{words[rng.integers(len(words))]}-{words[rng.integers(len(words))]}"


def _proper_name(rng: np.random.Generator) -> str:
    n = int(rng.integers(2, 4))
    return "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                   for _ in range(n)).capitalize()


def _variable(rng: np.random.Generator) -> str:
    return "".join(chr(ord("A") + int(c)) for c in rng.integers(0, 26, size=5))


def _code(rng: np.random.Generator) -> str:
    letters = "".join(chr(ord("A") + int(c)) for c in rng.integers(0, 26, size=2))
    return f"{letters}-{_number(rng, 4)}"


def _evidence_depths(rng: np.random.Generator, n: int, bucket: int, n_buckets: int) -> list[float]:
    """n ascending depths: the first inside `bucket`, the others uniform after it."""
    first = (bucket + rng.random()) / n_buckets
    rest = np.sort(first + (1.0 - first) * rng.random(n - 1))
    return [first, *rest.tolist()]


# --- the four question makers ---------------------------------------------------------------
def _magic(key: str, value: str) -> bytes:
    return f"The special magic number for {key} is {value}.".encode()


def multikey_needle(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
                    bucket: int, n_buckets: int) -> Question:
    n = int(cfg["n_keys"])
    keys = _distinct(n, lambda: _key(rng, corpus.words))
    values = _distinct(n, lambda: _number(rng, 7))
    (depth,) = _evidence_depths(rng, 1, bucket, n_buckets)
    needles = [Needle(_magic(keys[0], values[0]), depth, True)]
    needles += [Needle(_magic(k, v), float(rng.random()), False) for k, v in zip(keys[1:], values[1:])]
    return Question(needles, f"What is the special magic number for {keys[0]}?".encode(), values[0],
                    (values[0],))


def multivalue(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
               bucket: int, n_buckets: int) -> Question:
    n, n_other = int(cfg["n_values"]), int(cfg["n_distractors"])
    keys = _distinct(1 + n_other, lambda: _key(rng, corpus.words))
    values = _distinct(n + n_other, lambda: _number(rng, 7))
    depths = _evidence_depths(rng, n, bucket, n_buckets)
    needles = [Needle(_magic(keys[0], v), d, True) for v, d in zip(values[:n], depths)]
    needles += [Needle(_magic(k, v), float(rng.random()), False) for k, v in zip(keys[1:], values[n:])]
    question = f"What are all the special magic numbers for {keys[0]}?".encode()
    return Question(needles, question, ", ".join(values[:n]), tuple(values[:n]))  # document order


def variable_tracking(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
                      bucket: int, n_buckets: int) -> Question:
    n_chains, hops = int(cfg["n_chains"]), int(cfg["n_hops"])
    names = _distinct(n_chains * (hops + 1), lambda: _variable(rng))
    values = _distinct(n_chains, lambda: _number(rng, 5))
    needles = []
    for c in range(n_chains):
        chain = names[c * (hops + 1) : (c + 1) * (hops + 1)]
        if c == 0:
            depths = _evidence_depths(rng, hops + 1, bucket, n_buckets)
        else:
            depths = np.sort(rng.random(hops + 1)).tolist()
        texts = [f"VAR {chain[0]} = {values[c]}."] + [
            f"VAR {b} = VAR {a}." for a, b in zip(chain[:-1], chain[1:])]
        needles += [Needle(t.encode(), d, c == 0) for t, d in zip(texts, depths)]
    question = f"Find all variables that are assigned the value {values[0]}.".encode()
    return Question(needles, question, " ".join(names[: hops + 1]), tuple(names[: hops + 1]))


def bridge(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
           bucket: int, n_buckets: int) -> Question:
    n = 1 + int(cfg["n_distractors"])
    entities = _distinct(n, lambda: f"the {_proper_name(rng)} {_KINDS[rng.integers(len(_KINDS))]}")
    cities = _distinct(n, lambda: _proper_name(rng))
    codes = _distinct(n, lambda: _code(rng))
    first, second = _evidence_depths(rng, 2, bucket, n_buckets)
    located = [f"{e[0].upper()}{e[1:]} is located in the city of {c}.".encode() for e, c in zip(entities, cities)]
    coded = [f"The registry code of {c} is {k}.".encode() for c, k in zip(cities, codes)]
    # HotpotQA bridge questions give no order: the city fact may come before the entity fact.
    order = [first, second] if rng.random() < 0.5 else [second, first]
    needles = [Needle(located[0], order[0], True), Needle(coded[0], order[1], True)]
    for i in range(1, n):
        needles += [Needle(located[i], float(rng.random()), False),
                    Needle(coded[i], float(rng.random()), False)]
    question = f"What is the registry code of the city where {entities[0]} is located?".encode()
    return Question(needles, question, codes[0], (codes[0],))


def single_needle_noise(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
                        bucket: int, n_buckets: int) -> Question:
    key, value = _key(rng, corpus.words), _number(rng, 7)
    (depth,) = _evidence_depths(rng, 1, bucket, n_buckets)
    return Question([Needle(_magic(key, value), depth, True)],
                    f"What is the special magic number for {key}?".encode(), value, (value,))


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def multiquery(rng: np.random.Generator, corpus: ProseCorpus, cfg: dict[str, Any],
               bucket: int, n_buckets: int) -> Question:
    """n_keys needles; n_queries of them asked in one question, in an order unrelated to the
    documents' (the farthest asked needle sits in the depth bucket)."""
    n, asked = int(cfg["n_keys"]), int(cfg["n_queries"])
    if not 1 <= asked <= n:
        raise ValueError(f"multiquery needs 1 <= n_queries <= n_keys, got {asked} and {n}")
    keys = _distinct(n, lambda: _key(rng, corpus.words))
    values = _distinct(n, lambda: _number(rng, 7))
    depths = _evidence_depths(rng, asked, bucket, n_buckets)
    needles = [Needle(_magic(k, v), d, True) for k, v, d in zip(keys[:asked], values[:asked], depths)]
    needles += [Needle(_magic(k, v), float(rng.random()), False)
                for k, v in zip(keys[asked:], values[asked:])]
    order = rng.permutation(asked).tolist()
    question = f"What are the special magic numbers for {_listing([keys[i] for i in order])}?".encode()
    answer = [values[i] for i in order]
    return Question(needles, question, ", ".join(answer), tuple(answer))


def _values_room(n: int) -> int:
    return 7 * n + 2 * (n - 1)  # n seven-digit numbers joined by ", "


@dataclass(frozen=True)
class NeedleSubtask:
    """A generated subtask whose evidence is sentences inserted into a haystack."""

    make: Callable[..., Question]  # (rng, corpus, settings, depth bucket, n_buckets) -> Question
    answer_room: Callable[[dict[str, Any]], int]  # longest answer with these settings
    haystack: Callable[[], ProseCorpus] = python_docs_corpus
    one_document: bool = False  # one continuous haystack instead of the family's n_docs documents
    separate_evidence: bool = False  # evidence needles in distinct documents
    source: str | None = None  # what the haystack is, when not the documentation's prose

    def example(self, rng: np.random.Generator, cfg: dict[str, Any], index: int, n_buckets: int,
                n_docs: int, prompt_len: int) -> QAExample:
        corpus = self.haystack()
        question = self.make(rng, corpus, cfg, index % n_buckets, n_buckets)
        return assemble(question, corpus, rng, 1 if self.one_document else n_docs, prompt_len,
                        self.separate_evidence)


@dataclass(frozen=True)
class ListSubtask:
    """A generated subtask whose whole prompt is the material (no needles, no depth)."""

    build: Callable[[np.random.Generator, dict[str, Any], int], QAExample]  # (rng, settings, prompt_len)
    answer_room: Callable[[dict[str, Any]], int]
    source: str
    one_document: bool = True

    def example(self, rng: np.random.Generator, cfg: dict[str, Any], index: int, n_buckets: int,
                n_docs: int, prompt_len: int) -> QAExample:
        return self.build(rng, cfg, prompt_len)


# Order matters: a subtask's position seeds its examples' generators (keep new ones at the end).
GENERATED: dict[str, NeedleSubtask | ListSubtask] = {
    "multikey_needle": NeedleSubtask(multikey_needle, lambda cfg: 7),
    "multivalue": NeedleSubtask(multivalue, lambda cfg: _values_room(int(cfg["n_values"]))),
    "variable_tracking": NeedleSubtask(variable_tracking, lambda cfg: 6 * (int(cfg["n_hops"]) + 1) - 1),
    "bridge": NeedleSubtask(bridge, lambda cfg: 7, separate_evidence=True),
    "single_needle_noise": NeedleSubtask(
        single_needle_noise, lambda cfg: 7, haystack=noise_corpus, one_document=True,
        source="generated: one needle in a repeated filler passage (RULER S-NIAH with noise)"),
    "multiquery": NeedleSubtask(multiquery, lambda cfg: _values_room(int(cfg["n_queries"]))),
    "common_words": ListSubtask(
        common_words_example, common_words_answer_room,
        source="generated: numbered lists of words from pydoc_data.topics (RULER CWE)"),
}
GENERATED_SUBTASKS = tuple(GENERATED)


def max_answer_bytes(subtask: str, cfg: dict[str, Any]) -> int:
    """Longest answer a subtask can produce with its settings (the answer room in a row)."""
    return GENERATED[subtask].answer_room(cfg)


# --- assembling a prompt of exact length ----------------------------------------------------
def assemble(question: Question, corpus: ProseCorpus, rng: np.random.Generator, n_docs: int,
             prompt_len: int, separate_evidence: bool = False) -> QAExample:
    """Cut n_docs documents of real prose, insert the needles at the sentence boundary at or
    before their requested depth, and return the example with a prompt of exactly
    `prompt_len` ids. With `separate_evidence`, the evidence needles land in distinct
    documents (bridge questions need two documents)."""
    inserts = [n.text + b" " for n in question.needles]
    haystack = prompt_len - prompt_overhead(n_docs, question.question) - sum(map(len, inserts))
    if haystack < n_docs * _MIN_DOC_BYTES:
        raise ValueError(f"a prompt of {prompt_len} ids leaves {haystack} bytes of documents for "
                         f"{n_docs} documents: raise the context or lower n_docs / the needle count")
    sizes = [haystack // n_docs + (1 if i < haystack % n_docs else 0) for i in range(n_docs)]
    docs = [corpus.document(rng, s) for s in sizes]
    doc_starts = np.cumsum([0] + sizes[:-1])

    placements: list[tuple[int, int, int]] = []  # (doc, offset in the raw doc, needle index)
    used_docs: set[int] = set()
    for i, needle in enumerate(question.needles):
        at = min(int(needle.depth * haystack), haystack - 1)
        doc = int(np.searchsorted(doc_starts, at, side="right") - 1)
        if separate_evidence and needle.evidence and doc in used_docs:
            doc = _nearest_free_doc(doc, used_docs, n_docs)
            at = int(doc_starts[doc]) + int(rng.integers(sizes[doc]))
        if needle.evidence:
            used_docs.add(doc)
        bounds = sentence_boundaries(docs[doc])
        offset = int(bounds[np.searchsorted(bounds, at - int(doc_starts[doc]), side="right") - 1])
        placements.append((doc, offset, i))

    # Insert back to front inside each document so earlier offsets stay valid; needles at the
    # same offset keep their order.
    pieces = [bytearray(d) for d in docs]
    for doc, offset, i in sorted(placements, key=lambda p: (p[0], p[1], p[2]), reverse=True):
        pieces[doc][offset:offset] = inserts[i]
    layout = build_prompt([bytes(p) for p in pieces], question.question)
    if len(layout.ids) != prompt_len:
        raise AssertionError(f"assembled {len(layout.ids)} ids instead of {prompt_len}")

    depths = []
    for doc, offset, i in placements:
        if question.needles[i].evidence:
            # Needles placed earlier at the same point of the same document shift this one.
            shift = sum(len(inserts[j]) for d, o, j in placements
                        if d == doc and (o < offset or (o == offset and j < i)))
            depths.append(layout.depth(doc, offset + shift))
    return to_example(layout, (question.answer,), min(depths) if depths else None, question.items)


def _nearest_free_doc(doc: int, used: set[int], n_docs: int) -> int:
    for step in range(1, n_docs):
        for cand in (doc + step, doc - step):
            if 0 <= cand < n_docs and cand not in used:
                return cand
    raise ValueError(f"cannot put evidence in distinct documents with only {n_docs} documents")


def generate_example(subtask: str, cfg: dict[str, Any], rng: np.random.Generator, index: int,
                     n_buckets: int, n_docs: int, prompt_len: int) -> QAExample:
    """Example `index` of a generated subtask with a prompt of exactly prompt_len ids."""
    return GENERATED[subtask].example(rng, cfg, index, n_buckets, n_docs, prompt_len)
