"""Where structure changes in source code, as byte offsets, and the stream masks built from them.

Three kinds of boundary, each marking the region of the first K bytes from its start:
  blank_line   the line after a blank line (a line holding only spaces, tabs, \\r or \\f)
  def_class    a line whose code starts with `def`, `async def`, `class` or a decorator `@`
               (the region starts at the line's first byte, indentation included)
  file_start   the first bytes of a file, right after the previous file's SEP
Regions stop at the end of their file, never running into the SEP or the next file.
"""

from __future__ import annotations

import re

import numpy as np

from bimix_bench.tasks.long_code.sources import CodeFile

BOUNDARY_KINDS = ("blank_line", "def_class", "file_start")
_BLANK_LINE = re.compile(rb"^[ \t\r\f]*\n", re.MULTILINE)
_DEF_CLASS = re.compile(rb"^[ \t]*(?:async[ \t]+def\b|def\b|class\b|@)", re.MULTILINE)


def boundary_offsets(data: bytes) -> dict[str, np.ndarray]:
    """Start offsets (int64, ascending) of each kind's regions within one file."""
    blank = [m.end() for m in _BLANK_LINE.finditer(data) if m.end() < len(data)]
    defs = [m.start() for m in _DEF_CLASS.finditer(data)]
    return {
        "blank_line": np.array(blank, dtype=np.int64),
        "def_class": np.array(defs, dtype=np.int64),
        "file_start": np.array([0] if data else [], dtype=np.int64),
    }


def boundary_masks(files: list[CodeFile], file_starts: np.ndarray, stream_len: int, k: int
                   ) -> dict[str, np.ndarray]:
    """(stream_len,) bool per kind: True on the first `k` bytes of every region of that kind,
    positions being offsets in the split's stream (see sources.join_files)."""
    if k < 1:
        raise ValueError(f"boundary region length must be >= 1, got {k}")
    # +1 where a region opens, -1 where it closes: a running sum > 0 is inside a region.
    deltas = {kind: np.zeros(stream_len + 1, dtype=np.int64) for kind in BOUNDARY_KINDS}
    for f, offset in zip(files, file_starts):
        for kind, starts in boundary_offsets(f.data).items():
            ends = np.minimum(starts + k, len(f.data))
            np.add.at(deltas[kind], offset + starts, 1)
            np.add.at(deltas[kind], offset + ends, -1)
    return {kind: np.cumsum(delta[:-1]) > 0 for kind, delta in deltas.items()}
