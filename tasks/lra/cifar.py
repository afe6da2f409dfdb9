"""LRA Image: CIFAR-10 in grayscale, one byte per pixel, 32 x 32 = 1024 tokens in row order.

Grayscale exactly as LRA (``lra_benchmarks/image/input_pipeline.py``) computes it with
``tf.image.rgb_to_grayscale`` on uint8 images: in float32, ``v = c / 255`` per channel,
``g = 0.2989 R + 0.5870 G + 0.1140 B`` on those values, then back to uint8 by
``int(g * 255.5)`` -- truncation after scaling by 255.5 (TF's ``convert_image_dtype``), which
differs from rounding ``g * 255`` for some colours (pure green: 149, not 150).

Sources: the python pickle batches (``cifar-10-batches-py/data_batch_1..5`` and
``test_batch``, dicts with ``b'data'``: (10000, 3072) uint8 = 1024 R, 1024 G, 1024 B values
in row order, and ``b'labels'``), or the Hugging Face ``uoft-cs/cifar10`` data set (columns
``img``: PNG image, ``label``) as local files under ``<data-dir>/cifar10/`` or via ``hf_id``.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from bimix_bench.tasks.lra.sources import read_hf_split

CIFAR_PICKLE_FOLDER = "cifar-10-batches-py"
CIFAR_HF_FOLDER = "cifar10"
CIFAR_HUB_ID = "uoft-cs/cifar10"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_RGB_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def lra_grayscale(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8 gray, as tf.image.rgb_to_grayscale."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) uint8, got {rgb.shape} {rgb.dtype}")
    unit = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = (unit * _RGB_WEIGHTS).sum(axis=-1, dtype=np.float32)
    return (gray * np.float32(255.5)).astype(np.uint8)  # float -> uint8 truncates


def read_cifar_pickles(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "test"}: (RGB images (N, 32, 32, 3) uint8, labels (N,) int64); train is
    data_batch_1, 2, ... in numeric order."""
    batches = sorted(folder.glob("data_batch_*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    if not batches or not (folder / "test_batch").is_file():
        raise FileNotFoundError(f"{folder}: expected data_batch_1.. and test_batch")
    train = [_read_batch(p) for p in batches]
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": _read_batch(folder / "test_batch")}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be (N, 3072), got {data.shape}")
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Channel planes (N, 3, 32, 32) -> (N, 32, 32, 3).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar_hf(root: Path | None, hf_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The same from Hugging Face files / hub; None when absent."""
    from PIL import Image

    out = {}
    for split in ("train", "test"):
        table = read_hf_split(root, hf_id, split, ["img", "label"])
        if table is None:
            return None
        images = []
        for cell in table.column("img").to_pylist():
            data = cell["bytes"] if isinstance(cell, dict) else cell
            with Image.open(io.BytesIO(data)) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
        rgb = np.stack(images) if images else np.zeros((0, 32, 32, 3), dtype=np.uint8)
        if rgb.shape[1:] != (32, 32, 3):
            raise ValueError(f"CIFAR-10 {split}: expected 32x32 RGB images, got {rgb.shape[1:]}")
        out[split] = (rgb, np.asarray(table.column("label").to_pylist(), dtype=np.int64))
    return out


def read_cifar(data_dir: Path | None, hf_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Pickle batches if present, else Hugging Face files or hub; None when absent."""
    if data_dir is not None:
        for folder in (data_dir / CIFAR_PICKLE_FOLDER,
                       data_dir / "cifar-10-python" / CIFAR_PICKLE_FOLDER):
            if (folder / "test_batch").is_file():
                return read_cifar_pickles(folder)
    return read_cifar_hf(data_dir / CIFAR_HF_FOLDER if data_dir is not None else None, hf_id)
