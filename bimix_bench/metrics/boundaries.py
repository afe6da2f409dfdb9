"""Where structure changes in a byte text: the one definition of a structural boundary, used by
the long-code metrics (bits per byte after a boundary), BiMix's per-token gate plots and its
routing measures (do the gates change at boundaries?).

Three kinds, each a position where a new region starts:
  blank_line   the first byte of the line after a blank line (a line of only spaces, tabs,
               \\r or \\f)
  def_class    the first byte (indentation included) of a line whose code starts with `def`,
               `async def`, `class` or a decorator `@`
  file_start   the first byte of a file or document (after a SEP in a token stream)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from bimix_bench.models.tokenizer import SEP

BOUNDARY_KINDS = ("blank_line", "def_class", "file_start")
_BLANK_LINE = re.compile(rb"^[ \t\r\f]*\n", re.MULTILINE)
_DEF_CLASS = re.compile(rb"^[ \t]*(?:async[ \t]+def\b|def\b|class\b|@)", re.MULTILINE)


def structural_boundaries(data: bytes) -> dict[str, np.ndarray]:
    """Start offsets (int64, ascending) of each kind's regions within one file."""
    blank = [m.end() for m in _BLANK_LINE.finditer(data) if m.end() < len(data)]
    defs = [m.start() for m in _DEF_CLASS.finditer(data)]
    return {
        "blank_line": np.array(blank, dtype=np.int64),
        "def_class": np.array(defs, dtype=np.int64),
        "file_start": np.array([0] if data else [], dtype=np.int64),
    }


def token_boundaries(ids: Sequence[int]) -> dict[str, list[int]]:
    """Positions of each kind in a token sequence of byte ids whose documents are joined by
    SEP: structural_boundaries of every document, shifted to its place in the sequence. Ids
    that are not bytes (specials, a task's own vocabulary) end a document like SEP does."""
    found: dict[str, list[int]] = {kind: [] for kind in BOUNDARY_KINDS}
    start = 0
    for end in [*(i for i, t in enumerate(ids) if not 0 <= t < 256), len(ids)]:
        if end > start:
            for kind, offsets in structural_boundaries(bytes(ids[start:end])).items():
                found[kind] += (offsets + start).tolist()
        start = end + 1
    for kind in found:
        found[kind].sort()
    if found["file_start"][:1] == [0] and (not ids or ids[0] != SEP):
        # The sequence's first byte is where the reader came in, not a new file.
        found["file_start"] = found["file_start"][1:]
    return found
