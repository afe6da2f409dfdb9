"""Compact storage of a classification split: every sequence in one flat buffer.

LRA splits hold up to ~10^5 sequences of up to 8K tokens; one int64 tensor per sequence would
cost eight bytes per token plus per-tensor overhead. `PackedSequences` keeps the token ids in a
single uint8 buffer (int16 when an id is >= 256, e.g. SEP) with offsets, and builds the same
right-padded int64 `Batch` as `bimix_bench.task.ClassificationSplit`, so the engine uses it
unchanged (it only calls `len(split)` and `split.batch(indices, context)`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bimix_bench.models.tokenizer import PAD
from bimix_bench.task import Batch


class PackedSequences:
    """Sequences of token ids with one label each, stored back to back."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        # flat: (total,) uint8/int16 ids; offsets: (N + 1,) int64; labels: (N,) int64
        if offsets.ndim != 1 or len(offsets) != len(labels) + 1 or offsets[0] != 0:
            raise ValueError("offsets must be (N + 1,) starting at 0 for N labels")
        if offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must be non-decreasing and end at len(flat)")
        self.flat = torch.from_numpy(np.ascontiguousarray(flat))
        self.offsets = offsets.astype(np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_sequences(cls, sequences: Sequence[bytes | np.ndarray | Sequence[int]],
                       labels: Sequence[int]) -> "PackedSequences":
        """From per-example ids (bytes objects or integer arrays)."""
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")
        # Keep compact dtypes (bytes -> uint8, int16 arrays stay int16): LRA splits are large.
        arrays = [np.frombuffer(s, dtype=np.uint8) if isinstance(s, (bytes, bytearray))
                  else s if isinstance(s, np.ndarray) and s.dtype.kind in "iu"
                  else np.asarray(s, dtype=np.int64) for s in sequences]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(_narrow(flat), offsets, np.asarray(labels, dtype=np.int64))

    @classmethod
    def from_matrix(cls, rows: np.ndarray, labels: Sequence[int]) -> "PackedSequences":
        """From equal-length rows, e.g. flattened images: (N, L) uint8."""
        n, length = rows.shape
        offsets = np.arange(n + 1, dtype=np.int64) * length
        return cls(_narrow(rows.reshape(-1)), offsets, np.asarray(labels, dtype=np.int64))

    # --- the split interface used by TaskData ------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def sequence(self, i: int) -> torch.Tensor:  # (L,) int64
        return self.flat[self.offsets[i] : self.offsets[i + 1]].long()

    def lengths(self) -> np.ndarray:  # (N,) int64
        return np.diff(self.offsets)

    def batch(self, indices: list[int], context: int) -> Batch:
        lengths = [min(context, int(self.offsets[i + 1] - self.offsets[i])) for i in indices]
        width = max(lengths)
        tokens = torch.full((len(indices), width), PAD, dtype=torch.long)
        for row, (i, n) in enumerate(zip(indices, lengths)):
            start = int(self.offsets[i])
            tokens[row, :n] = self.flat[start : start + n]
        return Batch(tokens, self.labels[indices], torch.tensor(lengths, dtype=torch.long))


def _narrow(ids: np.ndarray) -> np.ndarray:
    """The smallest dtype holding every id (all ids are in 0..VOCAB_SIZE)."""
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int16).max):
        raise ValueError("token ids must lie in 0..32767")
    if ids.size == 0 or ids.max() < 256:
        return ids.astype(np.uint8, copy=False)
    return ids.astype(np.int16, copy=False)
