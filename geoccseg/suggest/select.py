"""Choose what to label next from scored candidates (squares of scenes, or whole photos).

**Acquisition.** Each candidate has three parts, means over its valid pixels
(:mod:`geoccseg.suggest.terms`): ``low_confidence`` (share of pixels of low or unreliable
confidence on and near likely roads or cracks), ``disagreement`` (mean |p - p_flip|) and
``density`` (mean foreground probability). Each part is divided by its largest value over the
candidates, and ``acquisition`` is their weighted mean (:attr:`SuggestParams.weights`), in [0, 1].

**Diversity** (:func:`greedy`). Candidates are taken one at a time, each the best by
``score = acquisition x typicality x spread x novelty`` given those taken before:

* ``typicality = 1 - typicality_weight x (1 - t)``, t the candidate's mean similarity (cosine of
  centred mean embeddings, negative ones as 0) to every other candidate, divided by its largest
  value: an area or photo like many others of the unlabeled pool teaches about all of them, an odd
  one about itself (a representativeness term; it does not change as candidates are taken);

* ``spread = 1 - spacing_weight x max exp(-(d / spacing_m)^2)`` over the squares already taken,
  in any scene, d the distance between centres in metres (squares that overlap one taken are
  never taken);
* ``novelty = 1 - novelty_weight x max(0, cos)`` over the taken candidates and the already
  labeled ones, cos the cosine similarity of mean embeddings centred on the mean of all of them:
  areas that look like what is labeled, or like what was just chosen, teach less.

Penalties only grow as candidates are taken, so scores come out in decreasing order.

**Coverage** (:func:`coverage`), the other strategy: no acquisition at all. The candidates and the
labeled reference are clustered by embedding (k-means, ``len(reference) + n`` clusters), and each
pick is the most typical open candidate (densest among its cluster's nearest neighbours) of the
cluster holding the fewest labeled and taken items, the largest first among equals: for the first
picks, the largest kinds of area or photo that nothing labeled represents yet. This is the rule of
TypiClust (Hacohen et al. 2022, "Active learning on a budget"), made for few labels, where
uncertainty-led choices pick outliers.

:func:`random_choice` is the baseline: the same candidates, drawn at random without overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from geoccseg.errors import GeoccsegError

PARTS = ("low_confidence", "disagreement", "density")
"""The parts of the acquisition score, in the order of :attr:`SuggestParams.weights`."""

STRATEGIES = ("acquisition", "coverage", "random")
"""How candidates are chosen: :func:`greedy` by score, :func:`coverage` by cluster, or at random."""

EMBEDDINGS = ("model", "imagenet")
"""Whose view of a candidate its embedding is: the current model's, or the frozen ImageNet encoder's
(photos only; :mod:`geoccseg.suggest.imagenet`)."""

NEIGHBOURS = 20
"""Nearest neighbours (within a cluster) over which :func:`coverage` measures how typical a candidate is."""


@dataclass(frozen=True)
class SuggestParams:
    """Settings of the acquisition score and the selection.

    Attributes:
        weights: weights of :data:`PARTS` in the acquisition score (non-negative, not all 0).
        spacing_weight: strength of the spatial spread penalty, 0 (off) to 1.
        spacing_m: distance scale of the spread penalty, metres; None: the square size.
        novelty_weight: strength of the embedding-similarity penalty, 0 (off) to 1.
        typicality_weight: strength of the representativeness factor, 0 (off) to 1.
        coverage_acquisition: strategy ``coverage`` only: how much the acquisition counts when a
            cluster's pick is chosen, 0 (the most typical) to 1 (the best typicality x acquisition).
        min_valid_share: a square needs at least this share of valid (not nodata) pixels.
        likely_threshold: foreground probability from which a pixel is a likely road or crack.
        near_m: low-confidence pixels count within this distance of a likely road, metres, up to
            :data:`NEAR_MAX_PX` pixels (photos whose model has no pixel size: :attr:`near_px_photos`).
        near_px_photos: the same distance in pixels, for photos of unknown pixel size.
        embedding: one of :data:`EMBEDDINGS`: the embedding the clusters, typicality and novelty
            compare, the current model's (8 channels of its features) or, for photos, the frozen
            ImageNet encoder's (:mod:`geoccseg.suggest.imagenet`), which no label changes.
    """

    weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    spacing_weight: float = 1.0
    spacing_m: float | None = None
    novelty_weight: float = 0.5
    typicality_weight: float = 0.0
    coverage_acquisition: float = 0.0
    min_valid_share: float = 0.9
    likely_threshold: float = 0.3
    near_m: float = 8.0
    near_px_photos: int = 4
    embedding: str = "model"

    def check(self) -> None:
        """Raise :class:`GeoccsegError` for settings that cannot work."""
        numbers = [*self.weights, self.spacing_weight, self.novelty_weight, self.typicality_weight, self.coverage_acquisition,
                   self.min_valid_share, self.likely_threshold, self.near_m, self.near_px_photos,
                   *([self.spacing_m] if self.spacing_m is not None else [])]
        if not all(math.isfinite(v) for v in numbers):  # a NaN passed every comparison below and ranked by index
            raise GeoccsegError(f"suggest settings must be finite numbers; got {self}")
        if len(self.weights) != len(PARTS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise GeoccsegError(f"acquisition weights must be {len(PARTS)} non-negative numbers ({', '.join(PARTS)}), not all 0; got {self.weights}")
        for name in ("spacing_weight", "novelty_weight", "typicality_weight", "coverage_acquisition", "min_valid_share", "likely_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise GeoccsegError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.spacing_m is not None and self.spacing_m <= 0:
            raise GeoccsegError(f"spacing_m must be positive metres, got {self.spacing_m}")
        if self.near_m < 0 or self.near_px_photos < 0:
            raise GeoccsegError("near_m and near_px_photos must not be negative")
        if self.embedding not in EMBEDDINGS:
            raise GeoccsegError(f"embedding {self.embedding!r} is unknown; use one of {', '.join(EMBEDDINGS)}")

    def near_px(self, pixel_size_m: float | None) -> int:
        """:attr:`near_m` in pixels of ``pixel_size_m`` metres (:attr:`near_px_photos` where the size
        is not known), at most :data:`NEAR_MAX_PX`."""
        near = round(self.near_m / pixel_size_m) if pixel_size_m else self.near_px_photos
        return min(near, NEAR_MAX_PX)


NEAR_MAX_PX = 32
"""The most pixels :attr:`SuggestParams.near_m` reaches: it is every scored block's halo. 8 m is 8
pixels of the road model, but 4000 of a crack model at 2 mm, whose blocks then grew to 10,000 px
a side (4 GB an array) and whose "near a likely crack" covered the whole square."""


@dataclass
class Candidates:
    """Scored candidates (n of them).

    Attributes:
        parts: float64 (n, 3), :data:`PARTS` as means over each candidate's valid pixels.
        embedding: float64 (n, E), mean projected embedding.
        group: int (n,), scene index; squares of one group overlap by their cells.
        cell: int (n, 2), top-left cell (row, col) of a square (a square covers 2 x 2 cells);
            None for photos (no overlap, no spread).
        centre_m: float64 (n, 2 or 3), centre in metres, in one frame for all candidates; None for photos.
        across: bool sparse (n, n), squares of different groups that overlap (scenes that
            overlap or repeat); None: no such pair.
    """

    parts: np.ndarray
    embedding: np.ndarray
    group: np.ndarray
    cell: np.ndarray | None = None
    centre_m: np.ndarray | None = None
    across: scipy.sparse.csr_matrix | None = None

    def __len__(self) -> int:
        return len(self.parts)


@dataclass
class Choice:
    """What was chosen, in order.

    Attributes:
        index: candidate indices, best first.
        acquisition: acquisition score of each chosen candidate, in [0, 1].
        typicality: typicality factor of each chosen candidate.
        spread: spread factor when it was chosen.
        novelty: novelty factor when it was chosen.
        score: ``acquisition x typicality x spread x novelty`` (NaN for :func:`random_choice`).
    """

    index: np.ndarray
    acquisition: np.ndarray
    typicality: np.ndarray
    spread: np.ndarray
    novelty: np.ndarray
    score: np.ndarray


def acquisition(parts: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Weighted mean of the parts, each divided by its largest value over the candidates (0 when all are 0)."""
    top = parts.max(axis=0, initial=0.0)
    scaled = np.divide(parts, top, out=np.zeros_like(parts), where=top > 0)
    w = np.asarray(weights, dtype=np.float64)
    return scaled @ w / w.sum()


def _unit(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    centred = vectors - centre
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 1e-12)


CHUNK_VALUES = 1 << 22
"""Values (float64: 32 MB) of the largest items x items temporary of the selections: rows are taken
in chunks of ``CHUNK_VALUES // columns``, so that memory stays flat whatever the number of squares
(a scene of 100,000 candidates against 25,000 labeled squares made 14 GB matrices in one go)."""


def row_chunks(rows: int, columns: int) -> Iterator[slice]:
    """The row chunks of a (rows, columns) temporary: :data:`CHUNK_VALUES` values each (at least one row)."""
    step = max(1, CHUNK_VALUES // max(1, columns))
    return (slice(start, start + step) for start in range(0, rows, step))


def typicality(unit: np.ndarray) -> np.ndarray:
    """Mean clipped cosine similarity of each unit vector to all the others, divided by its largest
    value (all 1 when there are fewer than two or no similarity is positive); rows in chunks
    (:func:`row_chunks`)."""
    n = len(unit)
    if n < 2:
        return np.ones(n)
    mean = np.empty(n)
    for chunk in row_chunks(n, n):
        rows = unit[chunk]
        similar = np.clip(rows @ unit.T, 0, None).sum(axis=1) - np.clip(np.einsum("ij,ij->i", rows, rows), 0, None)
        mean[chunk] = similar / (n - 1)
    top = mean.max()
    return mean / top if top > 0 else np.ones(n)


def most_similar(unit: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Largest clipped cosine similarity of each unit vector to any of ``others`` (unit vectors, at
    least one); rows in chunks (:func:`row_chunks`)."""
    out = np.empty(len(unit))
    for chunk in row_chunks(len(unit), len(others)):
        out[chunk] = np.clip((unit[chunk] @ others.T).max(axis=1), 0, None)
    return out


def _overlapping(candidates: Candidates, i: int) -> np.ndarray:
    """Indices of the candidates whose square overlaps square ``i`` (itself included; a photo: itself alone)."""
    if candidates.cell is None:
        return np.array([i])
    d = np.abs(candidates.cell - candidates.cell[i])
    out = (candidates.group == candidates.group[i]) & (d[:, 0] < 2) & (d[:, 1] < 2)
    if candidates.across is not None:
        out[candidates.across[i].indices] = True
    return np.flatnonzero(out)


def greedy(candidates: Candidates, reference: np.ndarray, n: int, params: SuggestParams, spacing_m: float) -> Choice:
    """Take up to ``n`` candidates one by one, each the best ``acquisition x typicality x spread x novelty``.

    Args:
        candidates: the scored candidates.
        reference: float64 (m, E) mean embeddings of already labeled areas or photos (m may be 0).
        n: how many to take (fewer when fewer fit).
        params: weights of the score and of the penalties.
        spacing_m: distance scale of the spread penalty, metres.

    Returns:
        The chosen candidates, best first.
    """
    base = acquisition(candidates.parts, params.weights)
    pool = np.concatenate([candidates.embedding, reference])
    centre = pool.mean(axis=0) if len(pool) else np.zeros(pool.shape[1])
    unit = _unit(candidates.embedding, centre)
    typical = 1 - params.typicality_weight * (1 - typicality(unit)) if params.typicality_weight else np.ones(len(candidates))
    near_space = np.zeros(len(candidates))
    similar = np.zeros(len(candidates))
    if len(reference):
        similar = most_similar(unit, _unit(reference, centre))
    open_ = np.ones(len(candidates), dtype=bool)
    taken: list[tuple[int, float, float, float, float, float]] = []
    while len(taken) < n and open_.any():
        spread = 1 - params.spacing_weight * near_space
        novelty = 1 - params.novelty_weight * similar
        score = np.where(open_, base * typical * spread * novelty, -np.inf)
        i = int(np.argmax(score))
        taken.append((i, base[i], typical[i], spread[i], novelty[i], score[i]))
        open_[_overlapping(candidates, i)] = False
        similar = np.maximum(similar, np.clip(unit @ unit[i], 0, None))
        if candidates.centre_m is not None:
            d = np.linalg.norm(candidates.centre_m - candidates.centre_m[i], axis=1)
            near_space = np.maximum(near_space, np.exp(-(d / spacing_m) ** 2))
    return _choice(taken)


def kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 10, iterations: int = 100) -> np.ndarray:
    """Cluster index (0 to k - 1) of each point: the best (least within-cluster sum of squares) of
    ``restarts`` runs of k-means++ seeding then Lloyd's iterations until no point moves (at most
    ``iterations``), all drawn with ``seed``. ``k`` must not exceed ``len(points)``."""
    rng = np.random.default_rng(seed)
    squared = (points**2).sum(axis=1)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = [points[rng.integers(len(points))]]
        nearest = ((points - centres[0]) ** 2).sum(axis=1)
        for _ in range(1, k):
            total = nearest.sum()
            i = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
            centres.append(points[i])
            nearest = np.minimum(nearest, ((points - points[i]) ** 2).sum(axis=1))
        centres = np.stack(centres)
        label = np.full(len(points), -1)
        for _ in range(iterations):
            moved = nearest_centre(points, squared, centres)
            if np.array_equal(moved, label):
                break
            label = moved
            order = np.argsort(label, kind="stable")  # each cluster's points in their order, summed at once
            count = np.bincount(label, minlength=k)
            kept = np.flatnonzero(count)  # a cluster left empty keeps its centre
            centres[kept] = np.add.reduceat(points[order], np.cumsum(count)[kept] - count[kept], axis=0) / count[kept, None]
        inertia = ((points - centres[label]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = label, inertia
    return best


def nearest_centre(points: np.ndarray, squared: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``centres`` to each of ``points`` (``squared``: their squared norms);
    rows in chunks (:func:`row_chunks`)."""
    out = np.empty(len(points), dtype=np.int64)
    centre_squared = (centres**2).sum(axis=1)
    for chunk in row_chunks(len(points), len(centres)):
        out[chunk] = np.argmin(squared[chunk, None] - 2 * points[chunk] @ centres.T + centre_squared[None, :], axis=1)
    return out


def knn_typicality(points: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """TypiClust's typicality of each point among ``points``: 1 / (mean Euclidean distance to its
    ``neighbours`` nearest others), divided by the largest (1 for a point alone); rows in chunks
    (:func:`row_chunks`)."""
    n = len(points)
    if n < 2:
        return np.ones(n)
    k = min(neighbours, n - 1)
    squared = (points**2).sum(axis=1)
    mean = np.empty(n)
    for chunk in row_chunks(n, n):
        rows = points[chunk]
        d2 = squared[chunk, None] - 2 * rows @ points.T + squared[None, :]
        d2[np.arange(len(rows)), np.arange(chunk.start, chunk.start + len(rows))] = np.inf  # not itself
        mean[chunk] = np.sqrt(np.clip(np.partition(d2, k - 1, axis=1)[:, :k], 0, None)).mean(axis=1)
    inverse = 1 / np.maximum(mean, 1e-12)
    return inverse / inverse.max()


def coverage(candidates: Candidates, reference: np.ndarray, n: int, seed: int, params: SuggestParams, take: int | None = None) -> Choice:
    """Choose ``n`` candidates that cover the kinds of area or photo not yet labeled (TypiClust), and
    go on to ``take`` (default ``n``) by the same rule to rank more of them.

    Candidates and reference are clustered together by centred, normalised mean embedding
    (:func:`kmeans`, ``len(reference) + n`` clusters, at most one per item, seeded with ``seed``). Each
    pick is the most typical open candidate (:func:`knn_typicality` within its cluster) of the cluster with
    the fewest labeled and taken members, the largest cluster first among equals; with
    ``params.coverage_acquisition`` w > 0, the best by ``typicality x (1 - w + w x acquisition)``
    instead. Overlapping squares are closed as in :func:`greedy`.

    Returns:
        The chosen candidates in the order taken; ``typicality`` holds each one's typicality within
        its cluster (1: the cluster's most typical), ``score`` is NaN, ``spread`` and ``novelty`` 1.
    """
    if not len(candidates):
        return _choice([])
    base = acquisition(candidates.parts, params.weights)
    w = params.coverage_acquisition
    embedding = np.concatenate([candidates.embedding, reference])
    unit = _unit(embedding, embedding.mean(axis=0))
    label = kmeans(unit, min(len(reference) + n, len(unit)), seed)
    typical = np.zeros(len(unit))
    for j in np.unique(label):
        members = np.flatnonzero(label == j)
        typical[members] = knn_typicality(unit[members])
    size = np.bincount(label)
    covered = np.bincount(label[len(candidates):], minlength=len(size))
    open_ = np.ones(len(candidates), dtype=bool)
    cluster = label[: len(candidates)]
    # each cluster's candidates and how many are open, kept up to date pick by pick: ranking all of
    # 100,000 photos scanned every candidate at each pick (minutes to hours after scoring)
    order = np.argsort(cluster, kind="stable")
    members_of = np.split(order, np.cumsum(np.bincount(cluster, minlength=len(size)))[:-1])
    open_count = np.bincount(cluster, minlength=len(size))
    taken = []
    while len(taken) < (n if take is None else take) and open_count.any():
        live = np.flatnonzero(open_count)
        j = live[np.lexsort((-size[live], covered[live]))[0]]
        members = members_of[j][open_[members_of[j]]]
        i = int(members[np.argmax(typical[members] * (1 - w + w * base[members]))])
        taken.append((i, base[i], typical[i], 1.0, 1.0, np.nan))
        covered[j] += 1
        closed = _overlapping(candidates, i)
        closed = closed[open_[closed]]
        open_[closed] = False
        np.subtract.at(open_count, cluster[closed], 1)
    return _choice(taken)


def random_choice(candidates: Candidates, n: int, seed: int, weights: tuple[float, ...]) -> Choice:
    """Up to ``n`` candidates drawn uniformly at random (``seed``), none overlapping another: the baseline."""
    base = acquisition(candidates.parts, weights)
    open_ = np.ones(len(candidates), dtype=bool)
    taken = []
    for i in np.random.default_rng(seed).permutation(len(candidates)):
        if len(taken) == n:
            break
        if open_[i]:
            taken.append((int(i), base[i], 1.0, 1.0, 1.0, np.nan))
            open_[_overlapping(candidates, int(i))] = False
    return _choice(taken)


def check_seed(seed: int) -> None:
    """Raise :class:`GeoccsegError` unless ``seed`` is a whole number from 0 (what numpy draws with)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GeoccsegError(f"seed {seed} is invalid; give a whole number from 0")


def check_strategy(strategy: str) -> None:
    """Raise :class:`GeoccsegError` unless ``strategy`` is one of :data:`STRATEGIES`."""
    if strategy not in STRATEGIES:
        raise GeoccsegError(f"strategy {strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")


def choose(candidates: Candidates, reference: np.ndarray, n: int, params: SuggestParams, spacing_m: float, strategy: str = "acquisition",
           seed: int = 0, take: int | None = None) -> Choice:
    """The ``n`` candidates to label by ``strategy`` (:data:`STRATEGIES`): :func:`greedy`,
    :func:`coverage` or :func:`random_choice` (``seed`` draws the last two), ranked on to ``take``
    (default ``n``) candidates by the same rule."""
    check_strategy(strategy)
    check_seed(seed)
    take = n if take is None else take
    if strategy == "random":
        return random_choice(candidates, take, seed, params.weights)
    if strategy == "coverage":
        return coverage(candidates, reference, n, seed, params, take)
    return greedy(candidates, reference, take, params, spacing_m)


def _choice(taken: list[tuple[int, float, float, float, float, float]]) -> Choice:
    columns = list(zip(*taken)) if taken else [[]] * 6
    index, *values = columns
    return Choice(np.asarray(index, dtype=np.int64), *(np.asarray(v, dtype=np.float64) for v in values))
