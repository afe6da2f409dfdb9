"""Byte-level tokenizer shared by every task: ids 0..255 are bytes, then a few specials."""

from __future__ import annotations

import torch

PAD = 256  # padding; never a target
BOS = 257  # start of sequence
EOS = 258  # end of an answer / sequence
SEP = 259  # separator between segments (documents, question / answer)
CLS = 260  # spare marker tasks may use
VOCAB_SIZE = 261


def encode(text: str | bytes) -> list[int]:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return list(data)


def decode(ids: list[int] | torch.Tensor) -> str:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
