"""Pixel metrics of binary maps, accumulated one image at a time.

Three counters add up over a dataset without keeping any image in memory:

- :class:`Counts`: strict confusion counts at one threshold, giving precision, recall, F1 and IoU.
- :class:`RelaxedCounts`: relaxed precision and recall with a tolerance of rho pixels (Mnih 2013),
  as road-extraction papers report them: a predicted pixel is correct when a true pixel lies within
  rho pixels (Euclidean distance between pixel centres), a true pixel is found when a predicted pixel
  lies within rho pixels.
- :class:`ThresholdSweep`: tp/fp/fn at every threshold of a grid, giving ODS F1 (one threshold for
  the whole dataset) and OIS F1 (the best threshold of each image, F1 averaged over images).

:class:`PixelScorer` holds the three for one class and is the one scorer of in-memory probability
maps: ``geoccseg evaluate`` (per class), the quality benchmark and :func:`score_arrays` use it. The
trainer's validation counts with the same :func:`confusion_counts` (on torch tensors, summed over
DDP ranks) and reads its metrics from :class:`Counts`.

A pixel is positive at threshold ``t`` when its score is ``>= t``.

Empty cases follow one convention everywhere: when neither the prediction nor the truth has a
positive pixel, every score is 1 (a perfect answer to an empty question); otherwise a zero
denominator gives 0 (e.g. precision of an empty prediction against a non-empty truth).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
from scipy.ndimage import distance_transform_edt

#: numpy arrays or torch tensors (see :func:`confusion_counts`).
ArrayT = TypeVar("ArrayT")

#: Default threshold grid of :class:`ThresholdSweep`: 0.01, 0.02, ..., 0.99.
THRESHOLDS = np.arange(1, 100) / 100


def ratio(num: float, den: float, empty: bool) -> float:
    """``num / den``, or the convention for ``den == 0``: 1.0 if ``empty`` (nothing on either side) else 0.0."""
    if den > 0:
        return float(num) / float(den)
    return 1.0 if empty else 0.0


def f1_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Element-wise F1 = 2 tp / (2 tp + fp + fn), 1.0 where tp = fp = fn = 0. Shapes broadcast."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def counts_by_threshold(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp and fn at each threshold of a grid of T thresholds, from the (T + 1,) counts of true
    positive and true negative pixels by level (the number of thresholds at or below a pixel's score:
    the pixel is positive at thresholds[:level])."""
    positive, negative = np.asarray(positive), np.asarray(negative)
    tp = np.cumsum(positive[::-1])[::-1][1:]  # tp[j] = positive[j + 1:].sum()
    fp = np.cumsum(negative[::-1])[::-1][1:]
    return tp, fp, positive.sum() - tp


def _restrict(
    pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check shapes and clear pixels outside ``valid``; return (pred, truth, number of valid pixels)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if valid is None:
        return pred, truth, pred.size
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != pred.shape:
        raise ValueError(f"valid shape {valid.shape} differs from prediction shape {pred.shape}")
    return pred & valid, truth & valid, int(np.count_nonzero(valid))


class Rates:
    """Precision, recall and F1 of anything with ``tp``, ``fp``, ``fn`` counts and an ``empty`` flag
    (an empty prediction against an empty truth scores 1): pixel counts here, TOPO's holes and marbles."""

    tp: int
    fp: int
    fn: int
    empty: bool

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return ratio(self.tp, self.tp + self.fp, self.empty)

    @property
    def recall(self) -> float:
        """tp / (tp + fn)."""
        return ratio(self.tp, self.tp + self.fn, self.empty)

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self.empty)


@dataclass
class Counts(Rates):
    """Strict confusion counts of binary maps, in pixels; add counts of several images with ``+``."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def empty(self) -> bool:
        """True when neither prediction nor truth has a positive pixel."""
        return self.tp + self.fp + self.fn == 0

    @property
    def iou(self) -> float:
        """tp / (tp + fp + fn), the intersection over union of the positive class."""
        return ratio(self.tp, self.tp + self.fp + self.fn, self.empty)


def confusion_counts(pred: ArrayT, truth: ArrayT, valid: ArrayT | None = None) -> tuple[ArrayT, ArrayT, ArrayT]:
    """tp, fp and fn of boolean maps, counted with the inputs' own library.

    Works on numpy arrays and on torch tensors alike (only ``&`` and ``.sum()`` are used), so the
    trainer counts on its device without a host synchronisation and sums the counts over DDP ranks
    before reading them into :class:`Counts`.

    Args:
        pred: bool, predicted positive pixels (any shape, e.g. (H, W) or (B, H, W)).
        truth: bool, true positive pixels, same shape.
        valid: bool, pixels to count, same shape; all pixels when None.

    Returns:
        (tp, fp, fn) as 0-d values of the inputs' type (numpy integers, or int64 tensors).
    """
    if valid is not None:
        pred, truth = pred & valid, truth & valid
    tp = (pred & truth).sum()
    return tp, pred.sum() - tp, truth.sum() - tp


def pixel_counts(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Counts:
    """Count tp/fp/fn/tn of one image.

    Args:
        pred: (H, W) bool, predicted positive pixels.
        truth: (H, W) bool, true positive pixels.
        valid: (H, W) bool, pixels to score (e.g. not nodata); all pixels when None.
    """
    pred, truth, n = _restrict(pred, truth, valid)
    tp, fp, fn = (int(v) for v in confusion_counts(pred, truth))
    return Counts(tp=tp, fp=fp, fn=fn, tn=n - tp - fp - fn)


def within_px(mask: np.ndarray, distance_px: float, sampling: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies within ``distance_px`` pixels (Euclidean, ``<=``) of a True pixel of ``mask``.

    Uses :func:`scipy.ndimage.distance_transform_edt` (a transient float64 map of the image).
    With ``sampling`` (a pixel's height and width in some unit), ``distance_px`` is in that unit.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return distance_transform_edt(~mask, sampling=sampling) <= distance_px


@dataclass
class RelaxedCounts:
    """Matched and total pixel counts of relaxed precision/recall; add images with ``+``.

    Attributes:
        pred_matched: predicted positive pixels within the tolerance of a true pixel.
        pred_total: predicted positive pixels.
        truth_matched: true pixels within the tolerance of a predicted pixel.
        truth_total: true pixels.
    """

    pred_matched: int = 0
    pred_total: int = 0
    truth_matched: int = 0
    truth_total: int = 0

    def __add__(self, other: RelaxedCounts) -> RelaxedCounts:
        return RelaxedCounts(
            self.pred_matched + other.pred_matched,
            self.pred_total + other.pred_total,
            self.truth_matched + other.truth_matched,
            self.truth_total + other.truth_total,
        )

    @property
    def empty(self) -> bool:
        """True when neither prediction nor truth has a positive pixel."""
        return self.pred_total + self.truth_total == 0

    @property
    def precision(self) -> float:
        """Relaxed precision: pred_matched / pred_total."""
        return ratio(self.pred_matched, self.pred_total, self.empty)

    @property
    def recall(self) -> float:
        """Relaxed recall: truth_matched / truth_total."""
        return ratio(self.truth_matched, self.truth_total, self.empty)

    @property
    def f1(self) -> float:
        """Harmonic mean of relaxed precision and recall."""
        p, r = self.precision, self.recall
        return ratio(2 * p * r, p + r, self.empty)


def relaxed_counts(
    pred: np.ndarray, truth: np.ndarray, tolerance_px: float, valid: np.ndarray | None = None
) -> RelaxedCounts:
    """Relaxed matching of one image with a tolerance of ``tolerance_px`` pixels.

    Args:
        pred: (H, W) bool, predicted positive pixels.
        truth: (H, W) bool, true positive pixels.
        tolerance_px: the tolerance rho in pixels; 0 gives the strict precision and recall.
        valid: (H, W) bool, pixels to score; pixels outside it neither count nor match.
    """
    pred, truth, _ = _restrict(pred, truth, valid)
    return RelaxedCounts(
        pred_matched=int(np.count_nonzero(pred & within_px(truth, tolerance_px))),
        pred_total=int(np.count_nonzero(pred)),
        truth_matched=int(np.count_nonzero(truth & within_px(pred, tolerance_px))),
        truth_total=int(np.count_nonzero(truth)),
    )


class ThresholdSweep:
    """tp/fp/fn at every threshold of a grid, summed over images, and each image's best F1.

    One call to :meth:`update` per image quantises its scores to the grid (``np.searchsorted``) and
    counts them with ``np.bincount``; the per-threshold counts follow by cumulative sums, so the cost
    does not grow with the number of thresholds.

    Attributes:
        thresholds: (T,) increasing thresholds in (0, 1].
        tp, fp, fn: (T,) int64 pixel counts over all images so far, at each threshold.
        image_f1: best F1 of each image so far (over the grid), in update order.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray = THRESHOLDS) -> None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
            raise ValueError("thresholds must be a non-empty, strictly increasing 1-D sequence")
        self.thresholds = thresholds
        self.tp = np.zeros(thresholds.size, dtype=np.int64)
        self.fp = np.zeros(thresholds.size, dtype=np.int64)
        self.fn = np.zeros(thresholds.size, dtype=np.int64)
        self.image_f1: list[float] = []

    def update(self, score: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image.

        Args:
            score: (H, W) probabilities in [0, 1] (float) or a bool mask (read as 0/1).
            truth: (H, W) bool, true positive pixels.
            valid: (H, W) bool, pixels to score; all pixels when None.
        """
        score = np.asarray(score)
        if score.dtype == bool or not np.issubdtype(score.dtype, np.floating):
            score = score.astype(np.float32)
        elif np.isnan(score).any():  # negative at every threshold, as `score >= t` reads it (sorted last, it was positive)
            score = np.nan_to_num(score, nan=0.0)
        truth = np.asarray(truth, dtype=bool)
        if score.shape != truth.shape:
            raise ValueError(f"score shape {score.shape} differs from truth shape {truth.shape}")
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            score, truth = score[valid], truth[valid]
        # level = number of thresholds <= score: the pixel is positive at thresholds[:level].
        # Thresholds are cast to the score dtype so that 0.2 as float32 meets 51/255 as float32 exactly.
        level = np.searchsorted(self.thresholds.astype(score.dtype), score.ravel(), side="right")
        truth = truth.ravel()
        n_levels = self.thresholds.size + 1
        tp, fp, fn = counts_by_threshold(np.bincount(level[truth], minlength=n_levels), np.bincount(level[~truth], minlength=n_levels))
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.image_f1.append(float(f1_scores(tp, fp, fn).max()))

    def merge(self, other: ThresholdSweep) -> None:
        """Add the images of ``other`` (the same thresholds)."""
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("the sweeps have different thresholds")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.image_f1 += other.image_f1

    @property
    def n_images(self) -> int:
        """Number of images added."""
        return len(self.image_f1)

    @property
    def f1(self) -> np.ndarray:
        """(T,) dataset F1 at each threshold."""
        return f1_scores(self.tp, self.fp, self.fn)

    def f1_at(self, threshold: float) -> float | None:
        """Dataset F1 at ``threshold`` when it is one of the grid's (from the sweep's own counts,
        as a :class:`PixelScorer` at that threshold counts them), else None."""
        index = np.flatnonzero(np.abs(self.thresholds - threshold) < 1e-9)
        if not index.size:
            return None
        i = int(index[0])
        return Counts(int(self.tp[i]), int(self.fp[i]), int(self.fn[i])).f1

    @property
    def ods_f1(self) -> float:
        """Best dataset F1 over the grid (optimal dataset scale)."""
        return float(self.f1.max())

    @property
    def ods_threshold(self) -> float:
        """Threshold of :attr:`ods_f1`; the lowest one on ties."""
        return float(self.thresholds[int(np.argmax(self.f1))])

    @property
    def ois_f1(self) -> float:
        """Mean over images of each image's best F1 (optimal image scale). An image without the
        class in its truth counts 1.0 where some threshold draws nothing on it (:func:`f1_scores`)."""
        if not self.image_f1:
            raise ValueError("no image added")
        return float(np.mean(self.image_f1))


@dataclass(frozen=True)
class PixelScores:
    """Pixel metrics of one class over a set of images (counts summed over images: micro average).

    Attributes:
        n_images: images scored.
        precision, recall, f1, iou: strict metrics at the scorer's threshold.
        ods_f1, ods_threshold: best dataset F1 over the threshold grid, and its threshold (0-1).
        ois_f1: mean over images of each image's best F1.
        relaxed_precision, relaxed_recall, relaxed_f1: with the tolerance in pixels; None without one.
    """

    n_images: int
    precision: float
    recall: float
    f1: float
    iou: float
    ods_f1: float
    ods_threshold: float
    ois_f1: float
    relaxed_precision: float | None = None
    relaxed_recall: float | None = None
    relaxed_f1: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """The fields in their order, JSON-safe."""
        return asdict(self)


class PixelScorer:
    """Scores probability maps of one class against truth, one image at a time.

    Each :meth:`add` updates the strict counts at ``threshold``, the relaxed counts (when
    ``tolerance_px`` is given) and the threshold sweep; :meth:`scores` reads the metrics of all
    images so far. No image is kept.

    Attributes:
        threshold: a pixel is positive when its score is ``>= threshold`` (0-1).
        tolerance_px: relaxed-metric tolerance rho in pixels; None: no relaxed metrics.
        counts: strict counts so far.
        relaxed: relaxed counts so far (zero without a tolerance).
        sweep: counts at every threshold of the grid so far.
    """

    def __init__(self, threshold: float = 0.5, tolerance_px: float | None = None,
                 thresholds: Sequence[float] | np.ndarray = THRESHOLDS) -> None:
        self.threshold = float(threshold)
        self.tolerance_px = tolerance_px
        self.counts = Counts()
        self.relaxed = RelaxedCounts()
        self.sweep = ThresholdSweep(thresholds)

    @property
    def n_images(self) -> int:
        """Number of images added."""
        return self.sweep.n_images

    def add(self, score: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image.

        Args:
            score: (H, W) probabilities in [0, 1] (float) or a bool mask.
            truth: (H, W) bool, true positive pixels.
            valid: (H, W) bool, pixels to score (e.g. not nodata); all pixels when None.
        """
        pred = np.asarray(score) >= self.threshold
        self.counts += pixel_counts(pred, truth, valid)
        if self.tolerance_px is not None:
            self.relaxed += relaxed_counts(pred, truth, self.tolerance_px, valid)
        self.sweep.update(score, truth, valid)

    def merge(self, other: PixelScorer) -> None:
        """Add the images of ``other`` (the same threshold and tolerance)."""
        self.counts += other.counts
        self.relaxed += other.relaxed
        self.sweep.merge(other.sweep)

    def scores(self) -> PixelScores:
        """The metrics of every image added so far.

        Raises:
            ValueError: if no image was added.
        """
        if not self.n_images:
            raise ValueError("no image added")
        relaxed = self.tolerance_px is not None
        return PixelScores(
            n_images=self.n_images, precision=self.counts.precision, recall=self.counts.recall, f1=self.counts.f1,
            iou=self.counts.iou, ods_f1=self.sweep.ods_f1, ods_threshold=self.sweep.ods_threshold, ois_f1=self.sweep.ois_f1,
            relaxed_precision=self.relaxed.precision if relaxed else None,
            relaxed_recall=self.relaxed.recall if relaxed else None,
            relaxed_f1=self.relaxed.f1 if relaxed else None,
        )


def score_arrays(
    scores: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    *,
    threshold: float = 0.5,
    tolerance_px: float | None = None,
) -> PixelScores:
    """Pixel metrics of in-memory probability maps against their truth (one :class:`PixelScorer`).

    Args:
        scores: (H, W) probabilities in [0, 1] (or bool masks), one per image; may be a generator.
        truths: (H, W) bool truth of the same images, in the same order.
        threshold: a pixel is positive when its score is ``>= threshold`` (0-1).
        tolerance_px: relaxed-metric tolerance in pixels; None: no relaxed metrics.

    Raises:
        ValueError: no image, a different number of scores and truths, or shapes that differ.
    """
    scorer = PixelScorer(threshold, tolerance_px)
    scores, truths = iter(scores), iter(truths)
    for score in scores:
        truth = next(truths, None)
        if truth is None:
            raise ValueError("more scores than truths; give one truth per image")
        scorer.add(score, truth)
    if next(truths, None) is not None:
        raise ValueError("more truths than scores; give one score per image")
    return scorer.scores()
