"""LRA real-data loaders on tiny fixtures in the real formats (LRA release TSVs and Pathfinder
PNGs + metadata, Hugging Face parquet, CIFAR-10 pickles), the compact split storage, LRA's
grayscale conversion, and the skip messages when data is absent."""

from __future__ import annotations

import ast
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bimix_bench.errors import SkipCell
from bimix_bench.models.tokenizer import PAD, SEP
from bimix_bench.registry import TASKS
from bimix_bench.tasks.lra.aan import decode_text, read_aan_tsv
from bimix_bench.tasks.lra.cifar import lra_grayscale
from bimix_bench.tasks.lra.listops import expr_to_tokens, parse_lra_tsv
from bimix_bench.tasks.lra.loaders import LOADERS
from bimix_bench.tasks.lra.splits import PackedSequences

FIXTURES = Path(__file__).parent / "fixtures" / "lra"
RELEASE = FIXTURES / "release"
TSV = RELEASE / "lra_release" / "tsv_data"
PATHFINDER = RELEASE / "lra_release" / "pathfinder32" / "curv_contour_length_14"
IMDB = RELEASE / "imdb" / "plain_text"


@pytest.fixture(scope="module")
def cfg():
    task = TASKS.get("lra").obj
    return {"family": "lra", **task.defaults("tiny")}


def load(subtask: str, section: dict, data_dir: Path | None):
    return LOADERS[subtask](section, 0, data_dir)


def seq(split, i: int) -> list[int]:
    return split.sequence(i).tolist()


# --- storage -----------------------------------------------------------------------------------
def test_packed_sequences_batch_pads_truncates_and_keeps_ids():
    split = PackedSequences.from_sequences([b"abc", [1, SEP, 2, 3, 4], b""], [0, 1, 0])
    assert split.flat.dtype == torch.int16 and len(split) == 3
    batch = split.batch([1, 0], context=4)
    assert batch.tokens.dtype == torch.long
    assert batch.tokens.tolist() == [[1, SEP, 2, 3], [97, 98, 99, PAD]]
    assert batch.lengths.tolist() == [4, 3] and batch.targets.tolist() == [1, 0]
    images = PackedSequences.from_matrix(np.arange(12, dtype=np.uint8).reshape(3, 4), [2, 0, 1])
    assert images.flat.dtype == torch.uint8 and seq(images, 2) == [8, 9, 10, 11]
    with pytest.raises(ValueError):
        PackedSequences(np.zeros(3, np.uint8), np.array([0, 2]), np.array([0, 1]))


# --- AAN retrieval -----------------------------------------------------------------------------
def test_decode_text_inverts_the_bytes_repr_of_the_release():
    rng = np.random.default_rng(0)
    for _ in range(200):
        raw = bytes(rng.integers(0, 256, size=rng.integers(0, 40)).astype(np.uint8))
        raw += b"'\"\\\n\t"[: rng.integers(0, 6)]
        assert decode_text(repr(raw)) == raw
    assert decode_text("plain text \u00e9") == "plain text \u00e9".encode()


def test_read_aan_tsv_rows_labels_and_truncation():
    docs1, docs2, labels = read_aan_tsv(TSV / "new_aan_pairs.train.tsv", doc_len=10_000)
    assert labels.tolist() == [1, 0, 1]
    rows = [line.split("\t") for line in (TSV / "new_aan_pairs.train.tsv").read_text().splitlines()]
    assert docs1 == [ast.literal_eval(r[3]) for r in rows]
    assert docs2 == [ast.literal_eval(r[4]) for r in rows]
    assert docs1[0] == b"We parse with a\nlexicalized grammar.\n" and "\u00e9".encode() in docs1[1]
    short, _, first = read_aan_tsv(TSV / "new_aan_pairs.train.tsv", doc_len=5, limit=2)
    assert short == [d[:5] for d in docs1[:2]] and first.tolist() == [1, 0]


def test_read_aan_tsv_rejects_malformed_rows(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1.0\ta\tb\tb'x'\tb'y'\n2\ta\tb\tb'x'\tb'y'\n")
    with pytest.raises(ValueError, match=":2: label 2"):
        read_aan_tsv(bad, 100)
    bad.write_text("1.0\ta\tb\tb'x'\n")
    with pytest.raises(ValueError, match="5 tab-separated"):
        read_aan_tsv(bad, 100)


def test_retrieval_concatenates_both_documents_around_sep(cfg):
    section = dict(cfg["retrieval"], context=21)
    data = load("retrieval", section, RELEASE)
    assert data.context == 21 and data.meta["bytes_per_document"] == 10
    assert data.meta["standard_lengths"] is False
    assert (len(data.train), len(data.val), len(data.test)) == (3, 2, 2)
    docs1, docs2, labels = read_aan_tsv(TSV / "new_aan_pairs.test.tsv", 10)
    for i in range(2):
        assert seq(data.test, i) == list(docs1[i]) + [SEP] + list(docs2[i])
    assert data.test.labels.tolist() == labels.tolist()
    full = load("retrieval", dict(cfg["retrieval"], context=8001, doc_len=4000), RELEASE)
    assert full.meta["standard_lengths"] is True and full.meta["bytes_per_document"] == 4000


# --- IMDb text ---------------------------------------------------------------------------------
def test_text_from_hugging_face_parquet(cfg):
    data = load("text", dict(cfg["text"], context=12), RELEASE)
    train = pd.read_parquet(IMDB / "train-00000-of-00001.parquet")
    test = pd.read_parquet(IMDB / "test-00000-of-00001.parquet")
    assert (len(data.train), len(data.val), len(data.test)) == (5, 1, 4)  # 10% of 6 held out
    expect = {t.encode()[:12]: y for t, y in zip(train.text, train.label)}
    got = {}
    for split in (data.train, data.val):
        for i in range(len(split)):
            got[bytes(seq(split, i))] = int(split.labels[i])
    assert got == expect  # train + val = the train file, every review with its own label
    got_test = sorted(bytes(seq(data.test, i)) for i in range(4))
    assert got_test == sorted(t.encode()[:12] for t in test.text)
    assert data.meta["standard_lengths"] is False
    again = load("text", dict(cfg["text"], context=12), RELEASE)
    assert [seq(again.val, 0)] == [seq(data.val, 0)]  # a fixed held-out split


# --- CIFAR-10 image ----------------------------------------------------------------------------
def test_lra_grayscale_matches_tensorflow_arithmetic():
    # Pure colours computed by hand as TF does: float32(c/255) weighted, then int(g * 255.5).
    rgb = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128],
                    [0, 0, 0]], dtype=np.uint8)
    assert lra_grayscale(rgb).tolist() == [255, 76, 149, 29, 128, 0]  # green 149: truncation
    pixels = np.random.default_rng(1).integers(0, 256, size=(5000, 3)).astype(np.uint8)
    ref = np.floor((pixels / 255.0) @ np.array([0.2989, 0.5870, 0.1140]) * 255.5)
    diff = lra_grayscale(pixels).astype(int) - ref
    assert np.abs(diff).max() <= 1 and (diff == 0).mean() > 0.99  # float32 vs float64 at ties


def test_image_from_cifar_pickles(cfg):
    data = load("image", cfg["image"], RELEASE)
    batches = []
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        with open(RELEASE / "cifar-10-batches-py" / name, "rb") as f:
            batches.append(pickle.load(f, encoding="bytes"))
    rgb = [b[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) for b in batches]
    train_rgb = np.concatenate(rgb[:2])
    assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 2)  # 90% / 10% of 3
    assert data.context == 1024 and data.n_classes == 10
    assert data.train.labels.tolist() + data.val.labels.tolist() == [3, 1, 4]
    assert seq(data.val, 0) == lra_grayscale(train_rgb[2]).reshape(-1).tolist()
    assert seq(data.test, 1) == lra_grayscale(rgb[2][1]).reshape(-1).tolist()
    assert seq(data.train, 0)[:4] == [255] * 4 and seq(data.train, 1)[:4] == [76] * 4


def test_image_from_hugging_face_parquet(cfg):
    data = load("image", cfg["image"], FIXTURES / "hf")
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 2)
    assert data.train.labels.tolist() == [0, 1, 2, 3] and data.test.labels.tolist() == [7, 8]
    corners = [seq(data.train, i)[0] for i in range(4)] + [seq(data.val, 0)[0]]
    assert corners == [255, 76, 149, 29, 128]  # white, red, green, blue, gray patches
    test = pd.read_parquet(FIXTURES / "hf" / "cifar10" / "plain_text" / "test-00000-of-00001.parquet")
    with Image.open(io.BytesIO(test.img[1]["bytes"])) as img:
        expect = lra_grayscale(np.asarray(img.convert("RGB"))).reshape(-1).tolist()
    assert seq(data.test, 1) == expect


# --- Pathfinder release ------------------------------------------------------------------------
def pathfinder_section(cfg, **kw):
    return dict(cfg["pathfinder"], image_size=32, difficulty="hard", **kw)


def test_pathfinder_release_is_read_when_present(cfg):
    data = load("pathfinder", pathfinder_section(cfg), RELEASE)
    assert data.meta["source"].startswith("LRA release") and data.meta["standard_lengths"] is True
    assert (len(data.train), len(data.val), len(data.test)) == (8, 1, 1)  # 80 / 10 / 10
    lines = (PATHFINDER / "metadata" / "0.npy").read_text().split("\n")
    assert data.test.labels.tolist() == [int(lines[9].split()[3])]
    with Image.open(PATHFINDER / "imgs" / "0" / "sample_3.png") as img:
        assert seq(data.train, 3) == np.asarray(img).reshape(-1).tolist()
    generated = load("pathfinder", pathfinder_section(cfg, source="generated", n_train=16), RELEASE)
    assert generated.meta["source"].startswith("generated") and len(generated.train) == 16


def test_pathfinder_release_drops_empty_images(cfg, tmp_path):
    copy = tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    shutil.copytree(PATHFINDER, copy)
    (copy / "imgs" / "0" / "sample_0.png").write_bytes(b"")
    data = load("pathfinder", pathfinder_section(cfg), tmp_path)
    assert data.meta["empty_images_dropped"] == 1 and len(data.train) == 7


def test_listops_release_is_read_when_present(cfg):
    folder = FIXTURES / "listops"
    data = load("listops", cfg["listops"], folder)
    expected = parse_lra_tsv(folder / "basic_test.tsv")
    assert data.meta["source"].startswith("LRA release") and len(data.test) == len(expected)
    tokens = [list(expr_to_tokens(e)) for e, _ in expected]
    assert [seq(data.test, i) for i in range(len(expected))] == tokens
    assert data.test.labels.tolist() == [y for _, y in expected]


# --- absent data -------------------------------------------------------------------------------
@pytest.mark.parametrize("subtask, words", [
    ("text", ["IMDb not found", "stanfordnlp/imdb", "task.text.hf_id"]),
    ("retrieval", ["AAN pairs not found", "lra_release.gz", "new_aan_pairs"]),
    ("image", ["CIFAR-10 not found", "cifar-10-python.tar.gz", "uoft-cs/cifar10"]),
])
def test_missing_real_data_skips_with_instructions(cfg, tmp_path, subtask, words):
    for data_dir in (None, tmp_path):
        with pytest.raises(SkipCell) as err:
            load(subtask, cfg[subtask], data_dir)
        assert all(w in str(err.value) for w in words) and "--data-dir" in str(err.value)


def test_pathfinder_release_source_requires_the_release(cfg, tmp_path):
    with pytest.raises(SkipCell, match="lra_release.gz"):
        load("pathfinder", pathfinder_section(cfg, source="release"), tmp_path)
