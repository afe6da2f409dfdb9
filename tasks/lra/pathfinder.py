"""Pathfinder (Linsley et al. 2018; LRA's 32x32 setting, and Path-X at 128x128) as a generator.

An image shows two target contours ("snakes") and a few distractor snakes, each a chain of
short line segments ("paddles"), plus two bright markers. The label says whether the markers
sit on the two ends of ONE snake (1) or on ends of the two DIFFERENT target snakes (0).

What follows the original generator (github.com/drewlinsley/pathfinder, ``snakes2.py``, with
the parameters LRA's ``lra_benchmarks/data/pathfinder.py`` lists for pathfinder32/128):
* Both target snakes start near each other: the first origin tip lies at least
  ``2 * seed_distance`` from the border (clipped so that the region is not empty), the second
  ``seed_distance`` away from it in a uniform direction; first paddles point anywhere.
* A snake extends by picking the next paddle's direction with weight
  ``cos(min(continuity * |turn|, pi/2))**2`` among the directions whose paddle lands on free
  space (so with continuity 1.0 turns stay below 90 degrees, with 1.8 below 50).
* One marker goes on the origin tip of a random target snake, the other on the far end of the
  same snake (positive) or of the other target snake (negative). Both target snakes always
  exist, so the classes differ only in which end carries the second marker.
* Difficulty = paddles per target snake: LRA's easy / intermediate / hard (``curv_baseline``,
  ``curv_contour_length_9``, ``curv_contour_length_14``) = 6 / 9 / 14. Distractor snakes have
  ``contour_length // 3`` paddles; their number is ``distractor_paddles // distractor_length``
  (LRA: 20 at 32x32, 35 at 128x128). A distractor that finds no room after 4 re-seeds is left
  out, as in the original (``allow_incomplete``); `generate_pathfinder` reports how many fit.

Where this generator simplifies (and why):
* Pixel-exact digital geometry instead of anti-aliased drawing: a paddle is a digital line of
  ``paddle_length + 1`` pixels (8-connected), consecutive paddles are separated by exactly
  ``paddle_gap`` blank pixels (Chebyshev), directions come in ``n_directions`` equal steps.
  Lines are one pixel thick (the original's ``paddle_thickness`` 0.5 at 32x32 also renders
  to about one pixel); markers are pixel discs of ``marker_radius``.
* Every object (a whole snake with its markers) keeps a Chebyshev distance greater than
  ``link = paddle_gap + 1`` from every other object, while within a snake consecutive paddles
  are exactly ``link`` apart. So "linked" (pixels within ``link`` of each other, chained) is
  the same relation as "same snake": the label can be checked from the pixels alone, which
  the tests do with an independent flood fill. The original keeps a similar margin through
  its dilated occupancy masks but does not guarantee it.
* The target snakes grow one after the other, in a random order per image, instead of
  alternately paddle by paddle; a snake that runs into a dead end is regrown alone (4 times,
  LRA's ``max_target_contour_retrial``) before the image is restarted. The far-end marker is
  part of the last paddle's room check rather than a separate test afterwards.
* Intensities: one gray level per paddle, uniform in 160..230 (the original's per-paddle
  contrast); markers are 255, the only pixels at that value. Background is 0.
* No single-paddle distractors (LRA's wrapper script sets ``use_single_paddles = False``).
* Labels alternate 0, 1, 0, 1 ... by example index: every prefix is balanced (the engine
  scores the first ``test_examples`` of a split) and training order is shuffled anyway.

Generation is vectorized over a chunk of images (one numpy step per paddle) on boolean maps
of a frame padded by a margin, so that every offset is one linear index with no clipping and
the border is just pre-set "occupied" pixels. It is deterministic given (seed, stream, n,
config): chunks of images have their own random streams, so they can be generated in
parallel processes with the same result.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# LRA's difficulty levels -> paddles per target snake, and the LRA release's folder names.
DIFFICULTY_CONTOUR_LENGTH = {"easy": 6, "intermediate": 9, "hard": 14}
DIFFICULTY_FOLDER = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9",
                     "hard": "curv_contour_length_14"}
MARKER_VALUE = 255
PADDLE_VALUES = (160, 230)  # inclusive range of a paddle's gray level
CHUNK_PIXELS = 2**22  # frame pixels per independently seeded chunk of images
_IMAGE_ROUNDS = 200  # image restarts before a configuration is declared infeasible
_SEED_TRIES = 8  # draws of the two target seeds per round
_SNAKE_RETRIES = 4  # regrowths of one target snake from its first paddle
_DISTRACTOR_SEEDS = 64  # random (position, direction) candidates per distractor attempt
_DISTRACTOR_RETRIES = 4  # LRA's max_distractor_contour_retrial


@dataclass(frozen=True)
class PathfinderConfig:
    image_size: int = 32
    contour_length: int = 14  # paddles per target snake
    distractor_length: int = 4  # paddles per distractor snake
    n_distractors: int = 5
    paddle_length: int = 2  # Chebyshev length: a paddle covers paddle_length + 1 pixels
    paddle_gap: int = 1  # blank pixels between consecutive paddles of one snake
    continuity: float = 1.0  # turn weight cos(min(continuity * |turn|, pi/2))**2
    seed_distance: float = 7.0  # distance between the origin tips of the two target snakes
    marker_radius: float = 1.5
    padding: int = 1  # blank border (pixels)
    n_directions: int = 32

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.contour_length < 2:
            raise ValueError(f"contour_length must be >= 2, got {self.contour_length}")
        if self.distractor_length < 1 or self.n_distractors < 0:
            raise ValueError("distractor_length must be >= 1 and n_distractors >= 0")
        if self.paddle_length < 1 or self.paddle_gap < 0:
            raise ValueError("paddle_length must be >= 1 and paddle_gap >= 0")
        if self.continuity <= 0 or self.n_directions < 4:
            raise ValueError("continuity must be > 0 and n_directions >= 4")
        if self.marker_radius < 0 or self.seed_distance <= 0 or self.padding < 0:
            raise ValueError("marker_radius and padding must be >= 0, seed_distance > 0")

    @property
    def link(self) -> int:
        """Chebyshev distance between consecutive paddles; objects stay farther apart."""
        return self.paddle_gap + 1

    @classmethod
    def lra(cls, difficulty: str, *, distractor_paddles: int = 20, **geometry) -> "PathfinderConfig":
        """LRA's level: target and distractor lengths from the difficulty name."""
        if difficulty not in DIFFICULTY_CONTOUR_LENGTH:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTY_CONTOUR_LENGTH)}, "
                             f"got {difficulty!r}")
        length = DIFFICULTY_CONTOUR_LENGTH[difficulty]
        distractor_length = max(1, length // 3)
        return cls(contour_length=length, distractor_length=distractor_length,
                   n_distractors=distractor_paddles // distractor_length, **geometry)

    @cached_property
    def tables(self) -> "_Tables":
        return _Tables(self)


class _Tables:
    """Offsets as linear indices into the padded frame, precomputed once per configuration."""

    def __init__(self, cfg: PathfinderConfig) -> None:
        s, k, r = cfg.image_size, cfg.n_directions, cfg.marker_radius
        # Margin wide enough that any candidate (gap + paddle + marker) and its clearance zone,
        # taken from a pixel inside the image, stays inside the frame.
        self.margin = 2 * cfg.link + cfg.paddle_length + math.ceil(r) + 1
        self.width = w = s + 2 * self.margin
        theta = 2 * math.pi * np.arange(k) / k
        unit = np.stack([np.sin(theta), np.cos(theta)], axis=1)  # (K, 2) as (dy, dx)
        cheb = unit / np.abs(unit).max(axis=1, keepdims=True)  # Chebyshev norm 1
        steps = np.arange(cfg.paddle_length + 1)[None, :, None]
        # A paddle relative to its first pixel: a digital line, one pixel per step.
        self.paddle_yx = np.rint(steps * cheb[:, None, :]).astype(np.int64)  # (K, L+1, 2)
        self.paddle = self.paddle_yx @ np.array([w, 1])  # (K, L+1)
        # From a paddle's last pixel to the next paddle's first pixel (Chebyshev = link).
        self.gap = np.rint(cfg.link * cheb).astype(np.int64) @ np.array([w, 1])  # (K,)
        turn = np.abs(theta[:, None] - theta[None, :])
        turn = np.minimum(turn, 2 * math.pi - turn) * cfg.continuity
        weight = np.cos(np.minimum(turn, math.pi / 2)) ** 2
        self.turn_weight = np.where(turn >= math.pi / 2, 0.0, weight)  # (K_prev, K_next)
        span = np.arange(-math.floor(r), math.floor(r) + 1)
        yy, xx = np.meshgrid(span, span, indexing="ij")
        inside = yy**2 + xx**2 <= r * r
        self.disc_yx = np.stack([yy[inside], xx[inside]], axis=1)  # (M, 2)
        self.disc = self.disc_yx @ np.array([w, 1])  # (M,)
        d = np.arange(-cfg.link, cfg.link + 1)
        self.zone = (d[:, None] * w + d[None, :]).ravel()  # (Z,): Chebyshev <= link
        frame = np.ones((w, w), dtype=bool)  # True = no pixel may go there
        lo, hi = self.margin + cfg.padding, self.margin + s - cfg.padding
        frame[lo:hi, lo:hi] = False
        self.frame = frame.ravel()
        self.center = (self.margin + s // 2) * (w + 1)  # a safe spot to park dead snakes
        # Images per chunk: a power of two, large enough to amortize numpy's per-call cost.
        self.chunk = max(32, min(1024, 2 ** int(math.log2(max(1, CHUNK_PIXELS // (w * w))))))

    def index(self, yx: np.ndarray) -> np.ndarray:
        """Image coordinates (..., 2) -> linear frame indices (...)."""
        return (yx[..., 0] + self.margin) * self.width + yx[..., 1] + self.margin


def _mark(maps: np.ndarray, rows: np.ndarray, pix: np.ndarray, zone: np.ndarray) -> None:
    """maps[rows] |= clearance zone of pixels pix (m, P), in place (maps: C-contiguous)."""
    if len(rows):
        idx = (pix[:, :, None] + zone).reshape(len(rows), -1) + (rows * maps.shape[1])[:, None]
        maps.reshape(-1)[idx] = True


def _lookup(maps: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """maps (m, F), pix (m, ...) linear pixels of row i in pix[i] -> the bits (m, ...)."""
    offset = (np.arange(len(maps)) * maps.shape[1]).reshape((-1,) + (1,) * (pix.ndim - 1))
    return maps.reshape(-1)[pix + offset]


def _extend(rng: np.random.Generator, cfg: PathfinderConfig, end: np.ndarray, prev: np.ndarray,
            blocked: np.ndarray, tail: np.ndarray | None):
    """One more paddle for m snakes ending at pixel `end` (m,) in direction `prev` (m,), among
    directions whose pixels avoid `blocked` (m, F). Where `tail` (m,) is True, the marker disc
    around the new far end must fit too. Returns the paddle (m, L+1), the disc (m, M) (the end
    pixel repeated where no disc), the direction (m,), and ok (m,) (False at a dead end)."""
    t, m, L = cfg.tables, len(end), cfg.paddle_length
    pix = (end[:, None] + t.gap)[:, :, None] + t.paddle  # (m, K, L+1)
    far = pix[:, :, L:]  # (m, K, 1)
    free = ~_lookup(blocked, pix).any(-1)  # (m, K)
    if tail is None:
        disc = np.broadcast_to(far, far.shape[:2] + (len(t.disc),))
    else:
        disc = np.where(tail[:, None, None], far + t.disc, far)  # (m, K, M)
        free &= ~_lookup(blocked, disc).any(-1)
    cum = np.cumsum(t.turn_weight[prev] * free, axis=1)
    total = cum[:, -1]
    draw = rng.random(m) * total
    choice = np.minimum((cum <= draw[:, None]).sum(axis=1), cfg.n_directions - 1)
    rows = np.arange(m)
    return pix[rows, choice], disc[rows, choice], choice, total > 0


def _grow(rng: np.random.Generator, cfg: PathfinderConfig, avoid: np.ndarray, first: np.ndarray,
          first_dir: np.ndarray, length: int, end_disc: np.ndarray | None):
    """Grow m snakes from their first paddle. first (m, P): the paddle's L+1 pixels, then any
    pixels that belong with it (the origin marker); avoid (m, F): what the snake must keep
    clear of. end_disc (m,): rows whose far end carries a marker (or None).
    Returns paddles (m, length, L+1), far-end discs (m, M), the snake's zone (m, F), ok (m,)."""
    t, m, L = cfg.tables, len(first), cfg.paddle_length
    rows = np.arange(m)
    paddles = np.empty((m, length, L + 1), dtype=np.int64)
    paddles[:, 0] = first[:, : L + 1]
    own = np.zeros_like(avoid)  # the snake's zone except its last paddle: a snake may touch
    last = np.zeros_like(avoid)  # ... its own last paddle, nothing else
    _mark(last, rows, first, t.zone)
    end, direction = first[:, L].copy(), first_dir
    disc = np.repeat(end[:, None], len(t.disc), axis=1)
    ok = np.ones(m, dtype=bool)
    for step in range(1, length):
        tail = end_disc if step == length - 1 else None
        pix, disc, direction, good = _extend(rng, cfg, end, direction, avoid | own, tail)
        ok &= good
        own |= last
        last[:] = False
        _mark(last, rows, np.concatenate([pix, disc], axis=1), t.zone)
        paddles[:, step] = pix
        end = np.where(ok, pix[:, L], t.center)  # dead snakes wait inside the frame
    return paddles, disc, own | last, ok


# --- the two target snakes ---------------------------------------------------------------------
def _seed_targets(rng: np.random.Generator, cfg: PathfinderConfig, origin: np.ndarray):
    """First paddles of both target snakes for n images; the snake `origin` gets the first
    marker on its tip. Returns units (n, 2, L+1+M) linear pixels (paddle, then the disc or the
    tip repeated), dirs (n, 2), ok (n,). The two units keep more than `link` apart."""
    t, n, s = cfg.tables, len(origin), cfg.image_size
    border = min(max(cfg.padding, round(2 * cfg.seed_distance)), (s - 1) // 2 - 1)
    units = np.zeros((n, 2, cfg.paddle_length + 1 + len(t.disc)), dtype=np.int64)
    dirs = np.zeros((n, 2), dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for _ in range(_SEED_TRIES):
        todo = np.flatnonzero(~ok)
        if not len(todo):
            break
        m = len(todo)
        tip0 = rng.integers(border, s - border, size=(m, 2))
        angle = rng.random(m) * 2 * math.pi
        tip1 = tip0 + np.rint(cfg.seed_distance * np.stack([np.sin(angle), np.cos(angle)], 1))
        tips = np.stack([tip0, tip1.astype(np.int64)], axis=1)[:, :, None, :]  # (m, 2, 1, 2)
        d = rng.integers(0, cfg.n_directions, size=(m, 2))
        marked = (np.arange(2) == origin[todo][:, None])[:, :, None, None]  # (m, 2, 1, 1)
        discs = tips + t.disc_yx  # (m, 2, M, 2)
        extra = np.where(marked, discs, np.broadcast_to(tips, discs.shape))
        u = np.concatenate([tips + t.paddle_yx[d], extra], axis=2)  # (m, 2, P, 2) coordinates
        lo, hi = cfg.padding, s - cfg.padding
        inside = ((u >= lo) & (u < hi)).all(axis=(1, 2, 3))
        apart = np.abs(u[:, 0, :, None] - u[:, 1, None, :]).max(-1).min(axis=(1, 2)) > cfg.link
        good = inside & apart
        units[todo[good]] = t.index(u[good])
        dirs[todo[good]] = d[good]
        ok[todo[good]] = True
    return units, dirs, ok


def _targets(rng: np.random.Generator, cfg: PathfinderConfig, origin: np.ndarray,
             terminal: np.ndarray):
    """Both target snakes and the two markers for n images. Returns ok (n,), the canvas
    (n, F) uint8 and the occupied zone (n, F) that distractors must keep clear of."""
    t, n, L = cfg.tables, len(origin), cfg.paddle_length
    rows = np.arange(n)
    units, dirs, ok = _seed_targets(rng, cfg, origin)
    first = rng.integers(0, 2, size=n)  # which snake grows first: neither is favoured
    zone = np.zeros((n, 2, len(t.frame)), dtype=bool)  # each snake's clearance zone
    paddles = np.zeros((n, 2, cfg.contour_length, L + 1), dtype=np.int64)
    far = np.zeros((n, len(t.disc)), dtype=np.int64)
    for order in (0, 1):
        k = np.where(order == 0, first, 1 - first)  # (n,) the snake grown now
        other = 1 - k
        avoid = t.frame | zone[rows, other]
        if order == 0:  # the other snake is only its first paddle so far
            _mark(avoid, rows, units[rows, other], t.zone)
        todo = np.flatnonzero(ok)
        for _ in range(_SNAKE_RETRIES + 1):
            if not len(todo):
                break
            kk = k[todo]
            got, disc, own, good = _grow(rng, cfg, avoid[todo], units[todo, kk], dirs[todo, kk],
                                         cfg.contour_length, terminal[todo] == kk)
            done = todo[good]
            paddles[done, kk[good]] = got[good]
            zone[done, kk[good]] = own[good]
            ends = terminal[done] == kk[good]
            far[done[ends]] = disc[good][ends]
            todo = todo[~good]
        ok[todo] = False

    canvas = np.zeros((n, len(t.frame)), dtype=np.uint8)
    shade = rng.integers(PADDLE_VALUES[0], PADDLE_VALUES[1] + 1, size=(n, 2 * cfg.contour_length))
    pix = paddles.reshape(n, -1, L + 1)
    canvas[rows[:, None, None], pix] = shade[:, :, None]
    near = units[rows, origin, L + 1 :]  # the disc on the origin tip
    canvas[rows[:, None], np.concatenate([near, far], axis=1)] = MARKER_VALUE
    return ok, canvas, t.frame | zone.any(axis=1)


# --- distractors -------------------------------------------------------------------------------
def _distractors(rng: np.random.Generator, cfg: PathfinderConfig, canvas: np.ndarray,
                 occupied: np.ndarray) -> np.ndarray:
    """Draw up to cfg.n_distractors snakes into canvas (n, F) in place, keeping clear of
    `occupied` (n, F) (updated). Returns how many each image received (n,)."""
    t, n, s = cfg.tables, len(canvas), cfg.image_size
    placed = np.zeros(n, dtype=np.int64)
    c = _DISTRACTOR_SEEDS
    for _ in range(cfg.n_distractors):
        todo = np.arange(n)
        for _attempt in range(_DISTRACTOR_RETRIES + 1):
            if not len(todo):
                break
            m = len(todo)
            tips = t.index(rng.integers(cfg.padding, s - cfg.padding, size=(m, c, 2)))
            d = rng.integers(0, cfg.n_directions, size=(m, c))
            cand = tips[:, :, None] + t.paddle[d]  # (m, c, L+1)
            sub = occupied[todo]
            free = ~_lookup(sub, cand).any(-1)  # (m, c)
            pick = free.argmax(axis=1)
            first = cand[np.arange(m), pick]
            got, _, own, good = _grow(rng, cfg, sub, first, d[np.arange(m), pick],
                                      cfg.distractor_length, None)
            good &= free.any(axis=1)
            done = todo[good]
            shade = rng.integers(PADDLE_VALUES[0], PADDLE_VALUES[1] + 1,
                                 size=(len(done), cfg.distractor_length))
            canvas[done[:, None, None], got[good]] = shade[:, :, None]
            occupied[done] |= own[good]
            placed[done] += 1
            todo = todo[~good]
    return placed


# --- public API --------------------------------------------------------------------------------
def _chunk(rng: np.random.Generator, cfg: PathfinderConfig, labels: np.ndarray):
    """Images (n, S, S) uint8 for the given labels, and the distractors each received (n,)."""
    t, n, s = cfg.tables, len(labels), cfg.image_size
    origin = rng.integers(0, 2, size=n)
    terminal = np.where(labels == 1, origin, 1 - origin)
    canvas = np.zeros((n, len(t.frame)), dtype=np.uint8)
    occupied = np.zeros((n, len(t.frame)), dtype=bool)
    todo = np.arange(n)
    for _ in range(_IMAGE_ROUNDS):
        ok, got, occ = _targets(rng, cfg, origin[todo], terminal[todo])
        canvas[todo[ok]], occupied[todo[ok]] = got[ok], occ[ok]
        todo = todo[~ok]
        if not len(todo):
            break
    else:
        raise RuntimeError(f"pathfinder: no room for two {cfg.contour_length}-paddle snakes in "
                           f"{_IMAGE_ROUNDS} tries at {s}x{s}; use a larger image or shorter "
                           "contours")
    placed = _distractors(rng, cfg, canvas, occupied)
    m, w = t.margin, t.width
    return canvas.reshape(n, w, w)[:, m : m + s, m : m + s], placed


def _chunk_job(args: tuple[PathfinderConfig, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    cfg, seed, stream, index, size = args
    rng = np.random.default_rng([0x9A7F, seed, stream, index])
    return _chunk(rng, cfg, np.arange(index * size, (index + 1) * size) % 2)


def generate_pathfinder(n: int, seed: int, cfg: PathfinderConfig | None = None, stream: int = 0,
                        workers: int = 0, chunk: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """n images (n, S, S) uint8 and labels (n,) int64 (alternating 0, 1, ...), with statistics.
    `stream` separates independent sets under one seed (e.g. train / val / test). Chunks of
    `chunk` images (default: the configuration's) are independent, so `workers` processes
    (0 = one per CPU when there are several chunks) give the same images as one."""
    cfg = cfg or PathfinderConfig()
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # Small requests get a small chunk, so that n = 64 does not generate 1024 images.
    size = chunk or min(cfg.tables.chunk, max(32, 1 << max(0, n - 1).bit_length()))
    jobs = [(cfg, seed, stream, c, size) for c in range(-(-n // size))]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1 and "fork" in mp.get_all_start_methods():
        # fork: the children need only numpy and this module, already loaded.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_chunk_job, jobs))
    else:
        parts = [_chunk_job(job) for job in jobs]
    images = np.concatenate([p[0] for p in parts])[:n] if parts else \
        np.zeros((0, cfg.image_size, cfg.image_size), dtype=np.uint8)
    placed = np.concatenate([p[1] for p in parts])[:n] if parts else np.zeros(0, dtype=np.int64)
    stats = {"mean_distractors": float(placed.mean()) if n else 0.0,
             "distractors_requested": cfg.n_distractors}
    return images, np.arange(n, dtype=np.int64) % 2, stats
