"""LRA Text: IMDb movie-review sentiment, byte level (LRA reads ``imdb_reviews`` via TFDS).

Source here: the Hugging Face ``stanfordnlp/imdb`` data set (columns ``text``: str, ``label``:
0 = negative, 1 = positive; splits ``train`` and ``test``, 25,000 reviews each), as local files
under ``<data-dir>/imdb/`` or through the hub / its cache with ``hf_id``. A review becomes its
UTF-8 bytes, cut to the context (LRA: byte-level, 4K).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bimix_bench.tasks.lra.sources import read_hf_split

IMDB_FOLDER = "imdb"
IMDB_HUB_ID = "stanfordnlp/imdb"


def read_imdb(data_dir: Path | None, hf_id: str, max_bytes: int
              ) -> dict[str, tuple[list[bytes], np.ndarray]] | None:
    """{"train": (texts, labels), "test": (...)} with texts cut to `max_bytes`, or None when
    neither local files nor `hf_id` provide the data."""
    root = data_dir / IMDB_FOLDER if data_dir is not None else None
    out = {}
    for split in ("train", "test"):
        table = read_hf_split(root, hf_id, split, ["text", "label"])
        if table is None:
            return None
        texts = [t.encode("utf-8")[:max_bytes] for t in table.column("text").to_pylist()]
        labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if len(bad):
            raise ValueError(f"IMDb {split}: label {labels[bad[0]]} at row {bad[0]} is not 0 or 1 "
                             "(the 'unsupervised' split has no labels)")
        out[split] = (texts, labels)
    return out
