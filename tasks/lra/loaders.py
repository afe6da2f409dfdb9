"""One loader per LRA subtask: config section + seed + --data-dir -> TaskData.

Generated subtasks (listops, pathfinder, pathx) run offline; the real-data ones (text,
retrieval, image) raise SkipCell, saying how to get the data, when it is absent. Every
record's ``data`` field says where the data came from and where it departs from LRA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.task import TaskData
from bimix_bench.tasks.lra.aan import AAN_SPLIT_FILES, encode_pair, find_aan, read_aan_tsv
from bimix_bench.tasks.lra.cifar import (CIFAR_HF_FOLDER, CIFAR_HUB_ID, CIFAR_PICKLE_FOLDER,
                                         CIFAR_URL, lra_grayscale, read_cifar)
from bimix_bench.tasks.lra.imdb import IMDB_FOLDER, IMDB_HUB_ID, read_imdb
from bimix_bench.tasks.lra.listops import (LISTOPS_N_CLASSES, ListOpsConfig, expr_to_tokens,
                                          make_splits, parse_lra_tsv)
from bimix_bench.tasks.lra.pathfinder import DIFFICULTY_FOLDER, PathfinderConfig, generate_pathfinder
from bimix_bench.tasks.lra.pathfinder_release import (find_pathfinder_release, read_images,
                                                      read_metadata, release_splits)
from bimix_bench.tasks.lra.sources import LRA_RELEASE_URL, release_part
from bimix_bench.tasks.lra.splits import PackedSequences

LRA_LISTOPS_BOUNDS = (500, 2000)
SPLIT_SEED = 0  # fixed permutation of real splits: the same held-out val / test order for every run
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # independent generator streams per split


def _task_data(subtask: str, context: int, n_classes: int, splits: dict[str, PackedSequences],
               meta: dict[str, Any]) -> TaskData:
    meta = {**meta, "sizes": {k: len(v) for k, v in splits.items()}, "context": context}
    return TaskData(task="lra", subtask=subtask, objective="classify", context=context,
                    train=splits["train"], val=splits["val"], test=splits["test"],
                    n_classes=n_classes, meta=meta)


def _limit(n: Any) -> int | None:
    """Config sizes: 0 (or less) means "all"."""
    return int(n) if n and int(n) > 0 else None


# --- ListOps -----------------------------------------------------------------------------------
def find_listops_release(data_dir: Path | None) -> Path | None:
    """The folder holding LRA's basic_{train,val,test}.tsv, if the user has the release."""
    for folder in (release_part(data_dir, "listops-1000"), data_dir):
        if folder is not None and (folder / "basic_train.tsv").is_file():
            return folder
    return None


def load_listops(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    release = find_listops_release(data_dir)
    if release is not None:
        splits = {s: parse_lra_tsv(release / f"basic_{s}.tsv") for s in ("train", "val", "test")}
        if _limit(cfg.get("n_train")):
            splits["train"] = splits["train"][: _limit(cfg["n_train"])]
        meta: dict[str, Any] = {"source": f"LRA release ({release.name})", "standard_lengths": True}
    else:
        gen_cfg = ListOpsConfig(min_len=cfg["min_len"], max_len=cfg["max_len"],
                                max_depth=cfg["max_depth"], max_args=cfg["max_args"],
                                value_p=cfg["value_p"])
        splits = make_splits(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed, gen_cfg)
        standard = (cfg["min_len"], cfg["max_len"]) == LRA_LISTOPS_BOUNDS
        meta = {"source": "generated offline with LRA's ListOps algorithm",
                "length_bounds": [cfg["min_len"], cfg["max_len"]], "standard_lengths": standard}
        if not standard:
            meta["note"] = (f"length window {cfg['min_len']} < L < {cfg['max_len']} instead of "
                            f"LRA's {LRA_LISTOPS_BOUNDS[0]} < L < {LRA_LISTOPS_BOUNDS[1]}")
    packed = {k: PackedSequences.from_sequences([expr_to_tokens(e) for e, _ in v], [y for _, y in v])
              for k, v in splits.items()}
    return _task_data("listops", int(cfg["context"]), LISTOPS_N_CLASSES, packed, meta)


# --- Pathfinder and Path-X ---------------------------------------------------------------------
def pathfinder_config(cfg: dict[str, Any]) -> PathfinderConfig:
    try:
        return PathfinderConfig.lra(
            str(cfg["difficulty"]), distractor_paddles=int(cfg["distractor_paddles"]),
            image_size=int(cfg["image_size"]), paddle_length=int(cfg["paddle_length"]),
            paddle_gap=int(cfg["paddle_gap"]), continuity=float(cfg["continuity"]),
            seed_distance=float(cfg["seed_distance"]), marker_radius=float(cfg["marker_radius"]))
    except ValueError as err:
        raise UsageError(f"pathfinder settings: {err}") from None


def pathfinder_source(subtask: str, cfg: dict[str, Any]) -> str:
    """task.<subtask>.source, checked: auto, generated or release."""
    source = str(cfg["source"])
    if source not in ("auto", "generated", "release"):
        raise UsageError(f"task.{subtask}.source must be auto, generated or release, got {source!r}")
    return source


def check_pathfinder_options(subtask: str, cfg: dict[str, Any]) -> None:
    """What _load_pathfinder refuses, without generating anything."""
    pathfinder_config(cfg)
    pathfinder_source(subtask, cfg)


def _load_pathfinder(subtask: str, lra_size: int, cfg: dict[str, Any], seed: int,
                     data_dir: Path | None) -> TaskData:
    gen = pathfinder_config(cfg)
    size, difficulty, source = gen.image_size, str(cfg["difficulty"]), pathfinder_source(subtask, cfg)
    folder = None if source == "generated" else find_pathfinder_release(data_dir, size, difficulty)
    if folder is not None:
        entries = release_splits(read_metadata(folder), _limit(cfg["n_train"]))
        splits, dropped = {}, 0
        for name, part in entries.items():
            images, labels, d = read_images(folder, part, size)
            splits[name], dropped = PackedSequences.from_matrix(images, labels), dropped + d
        meta: dict[str, Any] = {"source": f"LRA release ({folder.parent.name}/{folder.name})",
                                "empty_images_dropped": dropped}
    elif source == "release":
        raise SkipCell(f"LRA release folder pathfinder{size}/{DIFFICULTY_FOLDER[difficulty]} not "
                       f"found under --data-dir. Download {LRA_RELEASE_URL} and extract it into "
                       "the --data-dir folder, or generate the images: "
                       f"--set task.{subtask}.source=auto")
    else:
        splits, placed = {}, []
        for name, stream in SPLIT_STREAMS.items():
            images, labels, stats = generate_pathfinder(int(cfg[f"n_{name}"]), seed, gen, stream)
            splits[name] = PackedSequences.from_matrix(images.reshape(len(images), -1), labels)
            placed.append(stats["mean_distractors"])
        meta = {"source": "generated offline (Pathfinder generator, see tasks/lra/pathfinder.py)",
                "contour_length": gen.contour_length, "distractor_length": gen.distractor_length,
                "distractors_requested": gen.n_distractors,
                "mean_distractors_placed": round(float(np.mean(placed)), 3),
                "paddle_length": gen.paddle_length, "paddle_gap": gen.paddle_gap}
    standard = size == lra_size
    meta.update(difficulty=difficulty, image_size=size, standard_lengths=standard)
    if not standard:
        meta["note"] = f"{size}x{size} images instead of LRA's {lra_size}x{lra_size}"
    return _task_data(subtask, size * size, 2, splits, meta)


def load_pathfinder(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    return _load_pathfinder("pathfinder", 32, cfg, seed, data_dir)


def load_pathx(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    return _load_pathfinder("pathx", 128, cfg, seed, data_dir)


# --- Text (IMDb) -------------------------------------------------------------------------------
def _permuted(n: int) -> np.ndarray:
    return np.random.default_rng(SPLIT_SEED).permutation(n)


def load_text(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    context = int(cfg["context"])
    try:
        data = read_imdb(data_dir, str(cfg["hf_id"]), context)
    except FileNotFoundError as err:
        raise SkipCell(str(err)) from None
    if data is None:
        raise SkipCell(
            f"IMDb not found (looked for parquet files in --data-dir/{IMDB_FOLDER}/). Get them with "
            f"`huggingface-cli download {IMDB_HUB_ID} --repo-type dataset --local-dir "
            f"<data-dir>/{IMDB_FOLDER}`, or use the Hugging Face cache: "
            f"--set task.text.hf_id={IMDB_HUB_ID}")
    texts, labels = data["train"]
    # HF stores the reviews sorted by label: fixed permutations make the held-out val split
    # and every prefix of test (the engine scores the first test_examples) label-balanced.
    order = _permuted(len(texts))
    n_val = int(round(float(cfg["val_fraction"]) * len(texts)))
    val_idx, train_idx = order[:n_val], order[n_val:][: _limit(cfg["n_train"])]
    test_texts, test_labels = data["test"]
    test_idx = _permuted(len(test_texts))
    splits = {name: PackedSequences.from_sequences([src[i] for i in idx], lab[idx])
              for name, src, lab, idx in (("train", texts, labels, train_idx),
                                          ("val", texts, labels, val_idx),
                                          ("test", test_texts, test_labels, test_idx))}
    meta = {"source": "IMDb (Hugging Face format: --data-dir files or hf_id)",
            "standard_lengths": context == 4096,
            "note": f"UTF-8 bytes cut to {context}; val = {n_val} reviews held out of train"}
    return _task_data("text", context, 2, splits, meta)


# --- Retrieval (AAN) ---------------------------------------------------------------------------
def load_retrieval(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    folder = find_aan(data_dir)
    if folder is None:
        raise SkipCell(
            "AAN pairs not found (looked for lra_release/tsv_data/new_aan_pairs.{train,eval,test}"
            f".tsv under --data-dir). Download {LRA_RELEASE_URL} and extract it into the "
            "--data-dir folder")
    context, doc_len = int(cfg["context"]), int(cfg["doc_len"])
    per_doc = min(doc_len, (context - 1) // 2)
    if per_doc < 1:
        raise UsageError(f"task.retrieval.context={context} leaves no room for two documents")
    splits = {}
    for name, file in AAN_SPLIT_FILES.items():
        limit = _limit(cfg["n_train"]) if name == "train" else None
        docs1, docs2, labels = read_aan_tsv(folder / file, per_doc, limit)
        splits[name] = PackedSequences.from_sequences(
            [encode_pair(a, b, per_doc) for a, b in zip(docs1, docs2)], labels)
    meta = {"source": f"AAN pairs of the LRA release ({folder.name})", "bytes_per_document": per_doc,
            "standard_lengths": per_doc == 4000,
            "note": "one causal model reads doc1 SEP doc2 (LRA: two towers, 4000 bytes each); "
                    "the TSV's b'...' literals are decoded to bytes"}
    return _task_data("retrieval", context, 2, splits, meta)


# --- Image (CIFAR-10) --------------------------------------------------------------------------
def load_image(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    try:
        data = read_cifar(data_dir, str(cfg["hf_id"]))
    except FileNotFoundError as err:
        raise SkipCell(str(err)) from None
    if data is None:
        raise SkipCell(
            f"CIFAR-10 not found (looked for <data-dir>/{CIFAR_PICKLE_FOLDER}/ and "
            f"<data-dir>/{CIFAR_HF_FOLDER}/ parquet files). Extract {CIFAR_URL} into the --data-dir "
            f"folder, or use the Hugging Face cache: --set task.image.hf_id={CIFAR_HUB_ID}")
    rgb, labels = data["train"]
    cut = int(0.9 * len(rgb))  # LRA: train[:90%] / train[90%:], in file order
    gray = lra_grayscale(rgb).reshape(len(rgb), -1)
    test_rgb, test_labels = data["test"]
    n_train = _limit(cfg["n_train"])
    splits = {"train": PackedSequences.from_matrix(gray[:cut][:n_train], labels[:cut][:n_train]),
              "val": PackedSequences.from_matrix(gray[cut:], labels[cut:]),
              "test": PackedSequences.from_matrix(lra_grayscale(test_rgb).reshape(len(test_rgb), -1),
                                                  test_labels)}
    meta = {"source": "CIFAR-10", "standard_lengths": True,
            "note": "grayscale as tf.image.rgb_to_grayscale; 1024 pixels in row order"}
    return _task_data("image", 1024, 10, splits, meta)


LOADERS = {"listops": load_listops, "text": load_text, "retrieval": load_retrieval,
           "image": load_image, "pathfinder": load_pathfinder, "pathx": load_pathx}
