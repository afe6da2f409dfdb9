"""Pathfinder generator: shapes and values, determinism, balance, and every label checked by an
independent flood fill over the rendered pixels (markers = the two 255-valued blobs; contour
pixels are linked when within `paddle_gap + 1` of each other, Chebyshev)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from scipy import ndimage

from bimix_bench.tasks.lra.pathfinder import (MARKER_VALUE, PADDLE_VALUES, PathfinderConfig,
                                              generate_pathfinder)

CONFIGS = {
    "easy32": PathfinderConfig.lra("easy"),
    "intermediate32": PathfinderConfig.lra("intermediate"),
    "hard32": PathfinderConfig.lra("hard"),
    "tiny16": PathfinderConfig.lra("easy", image_size=16, paddle_gap=0, seed_distance=4.0,
                                   distractor_paddles=6),
}
PATHX = PathfinderConfig.lra("hard", distractor_paddles=35, image_size=128, paddle_length=5,
                             paddle_gap=2, continuity=1.8, seed_distance=20.0, marker_radius=3.0)


def markers(img: np.ndarray) -> list[np.ndarray]:
    """Pixel coordinates of each 8-connected blob of marker-valued pixels."""
    lab, n = ndimage.label(img == MARKER_VALUE, structure=np.ones((3, 3)))
    return [np.argwhere(lab == i + 1) for i in range(n)]


def linked(img: np.ndarray, start: np.ndarray, goal: np.ndarray, link: int) -> bool:
    """Breadth-first search over non-zero pixels, stepping to any non-zero pixel within
    Chebyshev distance `link`: does it reach a goal pixel from the start pixels?"""
    on = img > 0
    size = img.shape[0]
    goals = {tuple(p) for p in goal}
    seen = {tuple(p) for p in start}
    queue = deque(seen)
    while queue:
        y, x = queue.popleft()
        if (y, x) in goals:
            return True
        for ny in range(max(0, y - link), min(size, y + link + 1)):
            for nx in range(max(0, x - link), min(size, x + link + 1)):
                if on[ny, nx] and (ny, nx) not in seen:
                    seen.add((ny, nx))
                    queue.append((ny, nx))
    return False


def check_labels(images: np.ndarray, labels: np.ndarray, cfg: PathfinderConfig) -> None:
    disc = int(np.sum(np.add.outer(np.arange(-3, 4) ** 2, np.arange(-3, 4) ** 2)
                      <= cfg.marker_radius ** 2))
    for i, (img, label) in enumerate(zip(images, labels)):
        blobs = markers(img)
        assert len(blobs) == 2, f"image {i}: {len(blobs)} marker blobs"
        assert all(len(b) == disc for b in blobs), f"image {i}: partial marker"
        assert linked(img, blobs[0], blobs[1], cfg.link) == bool(label), f"image {i}, label {label}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_labels_match_an_independent_flood_fill(name):
    cfg = CONFIGS[name]
    images, labels, stats = generate_pathfinder(120, seed=11, cfg=cfg)
    check_labels(images, labels, cfg)
    assert stats["mean_distractors"] > 0.3 * cfg.n_distractors  # distractors are really there


def test_path_x_labels_and_shape():
    images, labels, _ = generate_pathfinder(12, seed=5, cfg=PATHX)
    assert images.shape == (12, 128, 128)
    check_labels(images, labels, PATHX)


def test_shape_dtype_values_and_balance():
    cfg = CONFIGS["hard32"]
    images, labels, _ = generate_pathfinder(101, seed=0, cfg=cfg)
    assert images.shape == (101, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    assert abs(int(labels.sum()) - 50) <= 1
    for k in (10, 33, 64):  # every prefix is balanced: the engine scores the first N
        assert abs(labels[:k].mean() - 0.5) <= 0.5 / k + 1e-9
    values = set(np.unique(images).tolist())
    assert 0 in values and MARKER_VALUE in values
    assert all(v in (0, MARKER_VALUE) or PADDLE_VALUES[0] <= v <= PADDLE_VALUES[1] for v in values)
    assert not images[:, 0].any() and not images[:, -1].any()  # the blank border (padding 1)
    assert not images[:, :, 0].any() and not images[:, :, -1].any()


def test_deterministic_by_seed_and_stream_and_independent_of_workers():
    cfg = CONFIGS["tiny16"]
    a, la, _ = generate_pathfinder(70, seed=3, cfg=cfg)
    b, lb, _ = generate_pathfinder(70, seed=3, cfg=cfg)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, generate_pathfinder(70, seed=4, cfg=cfg)[0])
    assert not np.array_equal(a, generate_pathfinder(70, seed=3, cfg=cfg, stream=1)[0])
    # Chunks are seeded independently: two processes give the same images as one.
    one, _, _ = generate_pathfinder(70, seed=3, cfg=cfg, chunk=32, workers=1)
    two, _, _ = generate_pathfinder(70, seed=3, cfg=cfg, chunk=32, workers=2)
    assert np.array_equal(one, two)


def test_no_trivial_shortcut():
    """Neither marker distance nor ink amount separates the classes by itself."""
    cfg = CONFIGS["hard32"]
    images, labels, _ = generate_pathfinder(400, seed=21, cfg=cfg)
    centers = [[b.mean(axis=0) for b in markers(img)] for img in images]
    features = {"marker distance": np.array([np.hypot(*(c[0] - c[1])) for c in centers]),
                "ink": (images > 0).sum(axis=(1, 2)).astype(float)}
    for name, f in features.items():
        best = max(max(((f > t) == labels).mean(), ((f <= t) == labels).mean()) for t in np.unique(f))
        assert best < 0.68, f"{name} alone predicts the label with accuracy {best:.2f}"


def test_difficulty_sets_lra_lengths_and_bad_settings_are_rejected():
    lengths = {d: PathfinderConfig.lra(d) for d in ("easy", "intermediate", "hard")}
    assert [c.contour_length for c in lengths.values()] == [6, 9, 14]
    assert [c.distractor_length for c in lengths.values()] == [2, 3, 4]
    assert [c.n_distractors for c in lengths.values()] == [10, 6, 5]  # 20 // distractor length
    with pytest.raises(ValueError, match="difficulty"):
        PathfinderConfig.lra("extreme")
    with pytest.raises(ValueError):
        PathfinderConfig(contour_length=1)
    with pytest.raises(RuntimeError, match="no room"):
        generate_pathfinder(4, 0, PathfinderConfig.lra("hard", image_size=8))
