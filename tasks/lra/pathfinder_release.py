"""Reading the Pathfinder images of the LRA release (pathfinder32, pathfinder128 = Path-X).

Layout, as the original generator writes it and LRA's ``lra_benchmarks/data/pathfinder.py``
reads it: ``pathfinder<S>/<difficulty folder>/imgs/<batch>/sample_<i>.png`` (S x S grayscale)
and ``pathfinder<S>/<difficulty folder>/metadata/<batch>.npy`` -- despite the suffix a text
file, one line per image: ``<subpath> <file name> <index> <label> <generator parameters...>``.
LRA drops images whose file is empty; so does this reader.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bimix_bench.tasks.lra.pathfinder import DIFFICULTY_FOLDER
from bimix_bench.tasks.lra.sources import release_part


def find_pathfinder_release(data_dir: Path | None, image_size: int, difficulty: str) -> Path | None:
    """The difficulty folder (holding imgs/ and metadata/) of the release, if present."""
    part = release_part(data_dir, f"pathfinder{image_size}")
    if part is None:
        return None
    folder = part / DIFFICULTY_FOLDER[difficulty]
    return folder if (folder / "metadata").is_dir() else None


def read_metadata(folder: Path) -> list[tuple[str, int]]:
    """(relative image path, label) of every image, metadata files in numeric order."""
    entries: list[tuple[str, int]] = []
    files = sorted((folder / "metadata").glob("*.npy"),
                   key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem))
    for meta in files:
        for line_no, line in enumerate(meta.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise ValueError(f"{meta}:{line_no}: expected '<subpath> <file> <index> <label> ...'")
            label = int(fields[3])
            if label not in (0, 1):
                raise ValueError(f"{meta}:{line_no}: label {label} is not 0 or 1")
            entries.append((f"{fields[0]}/{fields[1]}", label))
    return entries


def read_images(folder: Path, entries: list[tuple[str, int]], image_size: int
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode the listed PNGs -> images (N, S*S) uint8, labels (N,), number dropped (empty)."""
    from PIL import Image

    rows, labels, dropped = [], [], 0
    for rel, label in entries:
        data = (folder / rel).read_bytes()
        if not data:
            dropped += 1
            continue
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert("L"), dtype=np.uint8)
        if pixels.shape != (image_size, image_size):
            raise ValueError(f"{folder / rel}: expected {image_size}x{image_size}, got {pixels.shape}")
        rows.append(pixels.reshape(-1))
        labels.append(label)
    images = np.stack(rows) if rows else np.zeros((0, image_size * image_size), dtype=np.uint8)
    return images, np.asarray(labels, dtype=np.int64), dropped


def release_splits(entries: list[tuple[str, int]], n_train: int | None
                   ) -> dict[str, list[tuple[str, int]]]:
    """LRA's cut of one difficulty: the first 80% train, the next 10% val, the last 10% test
    (in metadata order); `n_train` keeps only the first n of train."""
    n = len(entries)
    a, b = int(0.8 * n), int(0.9 * n)
    train = entries[:a]
    return {"train": train[:n_train] if n_train else train, "val": entries[a:b], "test": entries[b:]}
