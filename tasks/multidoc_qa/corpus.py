"""Real English prose that ships with Python: the paragraphs of the language reference and
library documentation topics in `pydoc_data.topics` (the text behind `help("topic")`).

Only prose paragraphs are kept: indented blocks (code samples, grammar rules) and heading
underlines are dropped, line breaks inside a paragraph become spaces, and the few non-ASCII
characters are folded to ASCII (NFKD, then dropped if still non-ASCII), so one character is one
byte and a document can be cut anywhere. The text differs between Python versions.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_HEADING_RULE = re.compile(r"[*=\-^~]+")
_WORD = re.compile(r"\b[a-z]{4,10}\b")


@dataclass(frozen=True)
class ProseCorpus:
    text: bytes  # the paragraphs joined by "\n"
    paragraph_starts: np.ndarray  # (P,) int64 offsets of paragraph starts in `text`
    words: tuple[str, ...]  # distinct lowercase words of 4-10 letters, sorted

    def document(self, rng: np.random.Generator, length: int) -> bytes:
        """`length` bytes of consecutive prose from a random paragraph start (wrapping around
        the end of the corpus)."""
        if length <= 0:
            return b""
        start = int(self.paragraph_starts[rng.integers(len(self.paragraph_starts))])
        out = self.text[start : start + length]
        while len(out) < length:
            out += b"\n" + self.text[: length - len(out) - 1]
        return out[:length]


def _to_ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def prose_paragraphs(topics: dict[str, str]) -> list[str]:
    """Prose paragraphs of the documentation topics, in topic-name order."""
    out = []
    for name in sorted(topics):
        for block in re.split(r"\n[ \t]*\n", topics[name]):
            lines = [line for line in block.split("\n") if line.strip()]
            if not lines or any(line.startswith((" ", "\t")) for line in lines):
                continue  # code samples, grammar productions, indented notes
            if _HEADING_RULE.fullmatch(lines[-1].strip()):
                continue  # a heading and its underline
            text = _to_ascii(" ".join(line.strip() for line in lines))
            if text.endswith(".") or ". " in text:  # sentences, not labels
                out.append(text)
    return out


@lru_cache(maxsize=1)
def python_docs_corpus() -> ProseCorpus:
    from pydoc_data.topics import topics

    paragraphs = prose_paragraphs(topics)
    if not paragraphs:
        raise RuntimeError("pydoc_data.topics holds no prose paragraphs")
    encoded = [p.encode("ascii") for p in paragraphs]
    starts = np.cumsum([0] + [len(p) + 1 for p in encoded[:-1]]).astype(np.int64)
    words = tuple(sorted({w for p in paragraphs for w in _WORD.findall(p)}))
    return ProseCorpus(b"\n".join(encoded), starts, words)


def sentence_boundaries(document: bytes) -> np.ndarray:
    """Offsets where a new sentence may start: 0, after ". " and after a line break."""
    found = [m.end() for m in re.finditer(rb"\. |\n", document)]
    return np.array([0, *[o for o in found if o < len(document)]], dtype=np.int64)
