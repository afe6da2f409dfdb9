"""The stream masks of long-code metrics: the first K bytes after each structural boundary.

The boundaries themselves (blank_line, def_class, file_start) are defined once, in
bimix_bench/metrics/boundaries.py, for these metrics and BiMix's gate plots alike. Regions
stop at the end of their file, never running into the SEP or the next file.
"""

from __future__ import annotations

import numpy as np

from bimix_bench.metrics.boundaries import BOUNDARY_KINDS
from bimix_bench.metrics.boundaries import structural_boundaries as boundary_offsets
from bimix_bench.tasks.long_code.sources import CodeFile

__all__ = ["BOUNDARY_KINDS", "boundary_masks", "boundary_offsets"]


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
