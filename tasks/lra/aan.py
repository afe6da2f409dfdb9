"""LRA Retrieval: ACL Anthology Network (AAN) citation pairs, byte level.

The release's ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` have no header and five
tab-separated fields, read by LRA (``lra_benchmarks/matching/input_pipeline.py``) without
quote handling: ``label  id1  id2  text1  text2``. The label is written as a float (1 = the
papers are linked by a citation). Each text is the repr of a Python bytes object
(``b'...'``, with backslash escapes), so it never holds a raw tab or newline.

Deviation from LRA, documented in the records: LRA encodes the texts as written (the ``b'``
wrapper and the escapes included) and classifies a pair with a two-tower model over
``doc_len`` = 4000 bytes per document. Here the bytes literal is decoded to the document's
bytes, and one causal backbone reads ``doc1[:n] SEP doc2[:n]`` with
``n = min(doc_len, (context - 1) // 2)`` and classifies the pair from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bimix_bench.models.tokenizer import SEP
from bimix_bench.tasks.lra.sources import release_part

AAN_SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
                   "test": "new_aan_pairs.test.tsv"}


def find_aan(data_dir: Path | None) -> Path | None:
    """The folder holding the three AAN TSVs (the release's tsv_data/), if present."""
    for folder in (release_part(data_dir, "tsv_data"), data_dir):
        if folder is not None and all((folder / f).is_file() for f in AAN_SPLIT_FILES.values()):
            return folder
    return None


def decode_text(field: str) -> bytes:
    """A TSV text field -> the document's bytes: a ``b'...'`` / ``b"..."`` literal is
    unescaped (Python's escapes: \\n, \\t, \\\\, \\', \\xNN ...); anything else is UTF-8."""
    if len(field) >= 3 and field[0] == "b" and field[1] in "'\"" and field[-1] == field[1]:
        # A bytes repr is ASCII; unicode_escape maps each escape to one code point < 256.
        return field[2:-1].encode("ascii").decode("unicode_escape").encode("latin-1")
    return field.encode("utf-8")


def read_aan_tsv(path: Path, doc_len: int, limit: int | None = None
                 ) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """First `limit` rows (all when None) -> (doc1 bytes, doc2 bytes, labels (N,) int64), each
    document cut to `doc_len` bytes."""
    docs1: list[bytes] = []
    docs2: list[bytes] = []
    labels: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        for line_no, line in enumerate(f, start=1):
            if limit is not None and len(labels) >= limit:
                break
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 5:
                raise ValueError(f"{path}:{line_no}: expected 5 tab-separated fields "
                                 f"(label, id1, id2, text1, text2), got {len(fields)}")
            if line_no == 1 and fields[0].strip().lower() == "label":
                continue  # tolerate a header line, which LRA's files do not have
            try:
                label = int(float(fields[0]))
            except ValueError:
                raise ValueError(f"{path}:{line_no}: label {fields[0]!r} is not a number") from None
            if label not in (0, 1):
                raise ValueError(f"{path}:{line_no}: label {label} is not 0 or 1")
            try:
                docs1.append(decode_text(fields[3])[:doc_len])
                docs2.append(decode_text(fields[4])[:doc_len])
            except UnicodeError as err:
                raise ValueError(f"{path}:{line_no}: undecodable text: {err}") from None
            labels.append(label)
    return docs1, docs2, np.asarray(labels, dtype=np.int64)


def encode_pair(doc1: bytes, doc2: bytes, per_doc: int) -> np.ndarray:
    """doc1[:per_doc] SEP doc2[:per_doc] as token ids (L,) int16 (compact: SEP is > 255)."""
    a = np.frombuffer(doc1[:per_doc], dtype=np.uint8)
    b = np.frombuffer(doc2[:per_doc], dtype=np.uint8)
    return np.concatenate([a, np.array([SEP], dtype=np.int16), b]).astype(np.int16)
