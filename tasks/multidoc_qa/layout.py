"""How a multi-document QA example becomes token ids, and where its evidence sits.

  BOS doc_1 SEP doc_2 SEP ... doc_n SEP question SEP | answer EOS
  `------------------ prompt -------------------'

The model reads the prompt and is trained to produce the answer and EOS: by default the loss
counts the targets of the answer bytes and of EOS only; a protocol may also train on the
prompt's bytes (language modelling of the whole sequence, `prompt_loss`). Validation and test
always score the answer alone. At evaluation it generates greedily after the prompt until EOS.
Evidence depth is the offset of an evidence byte within the documents region, scaled to
[0, 1]: 0 is the first byte of the first document, 1 the last byte of the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bimix_bench.models.tokenizer import BOS, EOS, SEP


@dataclass(frozen=True)
class QAExample:
    prompt: torch.Tensor  # (P,) int16: BOS, documents and question, each closed by SEP
    answers: tuple[str, ...]  # gold answers; the first one is the training target
    depth: float | None  # depth of the evidence farthest from the question (None: unknown)
    items: tuple[str, ...] = ()  # the first answer's parts, scored by item recall (RULER)

    def inputs_and_targets(self, max_answer_bytes: int, prompt_loss: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (L,), targets (L,) with L = P + answer bytes; targets -100 except on the
        answer bytes and the final EOS (and, with prompt_loss, on every prompt byte after BOS
        too). The answer is cut to max_answer_bytes."""
        answer = self.answers[0].encode("utf-8")[:max_answer_bytes]
        tail = torch.tensor([*answer, EOS], dtype=torch.int16)
        full = torch.cat([self.prompt, tail])  # (P + A + 1,)
        targets = full[1:].clone()
        if not prompt_loss:
            targets[: len(self.prompt) - 1] = -100
        return full[:-1], targets


@dataclass(frozen=True)
class PromptLayout:
    ids: np.ndarray  # (P,) int16: the prompt
    doc_offsets: list[int]  # where each document starts in the prompt
    docs_end: int  # one past the last document byte (the position of its closing SEP)

    def depth(self, doc: int, offset: int) -> float:
        """Depth of byte `offset` of document `doc`."""
        first = self.doc_offsets[0]
        span = max(1, self.docs_end - first - 1)
        return min(1.0, max(0.0, (self.doc_offsets[doc] + offset - first) / span))


def build_prompt(documents: list[bytes], question: bytes) -> PromptLayout:
    # Bytes are joined with 0 placeholders where BOS / SEP go, then the specials are written in:
    # one C-level join instead of a Python loop over every byte.
    pieces, offsets, specials, position = [b"\0"], [], [0], 1
    for doc in documents:
        offsets.append(position)
        pieces += [doc, b"\0"]
        position += len(doc)
        specials.append(position)
        position += 1
    docs_end = position - 1
    pieces += [question, b"\0"]
    specials.append(position + len(question))
    ids = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.int16)
    ids[specials] = SEP
    ids[0] = BOS
    return PromptLayout(ids, offsets, docs_end)


def prompt_overhead(n_documents: int, question: bytes) -> int:
    """Ids of a prompt that are not document text: BOS, one SEP per document, question, SEP."""
    return 1 + n_documents + len(question) + 1


def to_example(layout: PromptLayout, answers: tuple[str, ...], depth: float | None,
               items: tuple[str, ...] = ()) -> QAExample:
    return QAExample(torch.from_numpy(layout.ids), answers, depth, items)
