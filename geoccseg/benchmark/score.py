"""Scoring a trained bundle on the benchmark's test images.

Each test image is predicted whole (:func:`geoccseg.inference.array.predict_array`, the forward
path of ``geoccseg predict`` with the image as one chip); the foreground probability
(1 - background) is scored by :class:`geoccseg.evaluate.PixelScorer`: pixel precision, recall, F1
and IoU at :data:`THRESHOLD`, ODS and OIS F1 over the threshold grid and, with a tolerance, relaxed
F1. Counts are summed over the test images (micro average); OIS averages per-image best F1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoccseg.benchmark.split import Pair
from geoccseg.data.photos import mask_files_mark_unlabeled_255, read_mask, read_photo_valid
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import PixelScorer, PixelScores, ThresholdSweep
from geoccseg.inference.array import predict_array
from geoccseg.io.probability import encode_uint8
from geoccseg.label_values import IGNORE_INDEX
from geoccseg.models import Bundle

#: Number of test images shown in ``examples.png``.
N_EXAMPLES = 3
#: Threshold on the foreground probability of the strict and relaxed metrics.
THRESHOLD = 0.5


@dataclass
class Score:
    """Test-set metrics of one bundle.

    Attributes:
        pixels: the pixel metrics over the test images (:class:`geoccseg.evaluate.PixelScores`).
        examples: foreground probability (H, W) uint8 (0..255) of the requested example images, by stem.
        model_threshold: the bundle's own decision threshold (chosen on its validation images by
            training; what ``geoccseg predict`` uses), None for 0.5.
        model_threshold_f1: F1 over the test images at that threshold (None without one).
        sweep: the counts over the evaluation's threshold grid (not in :meth:`metrics`).
    """

    pixels: PixelScores
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    model_threshold: float | None = None
    model_threshold_f1: float | None = None
    sweep: ThresholdSweep | None = None

    def metrics(self) -> dict[str, float | int | None]:
        """The metrics as a benchmark record holds them: ``n_test`` (images scored), then the pixel
        metrics (at :data:`THRESHOLD`), then the F1 at the model's own threshold."""
        metrics = self.pixels.to_dict()
        return {"n_test": metrics.pop("n_images"), **metrics, "model_threshold": self.model_threshold,
                "model_threshold_f1": self.model_threshold_f1}


def read_truth_mask(path, unlabeled_255: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A benchmark mask as ``(truth, labeled)``: (H, W) bool foreground, and the labeled pixels
    (255 beside class indices marks unlabeled ones, :func:`geoccseg.data.photos.read_mask`), None
    where every pixel is; ``PixelScorer.add(prob, truth, labeled)`` scores only those.
    ``unlabeled_255``: how a mask of only 0 and 255 reads, decided over its set of masks
    (:func:`pairs_mark_unlabeled_255`); None: as a 0/255 mask."""
    labels = read_mask(path, unlabeled_255=unlabeled_255)
    unlabeled = labels == IGNORE_INDEX
    if not unlabeled.any():
        return labels > 0, None
    return (labels > 0) & ~unlabeled, ~unlabeled


def pairs_mark_unlabeled_255(pairs: dict[str, Pair]) -> bool:
    """Whether the masks of ``pairs`` mark unlabeled pixels with 255 beside class indices: then a
    mask of only 0 and 255 among them is a photo without the class, its 255 unlabeled, as training
    and ``evaluate`` read such a folder (:func:`geoccseg.data.photos.masks_mark_unlabeled_255`)."""
    return mask_files_mark_unlabeled_255(mask for _, mask in pairs.values())


def read_whole_truth_mask(path) -> np.ndarray:
    """The (H, W) bool foreground of a benchmark mask that labels every pixel (:func:`read_truth_mask`),
    for the diagnoses that count every pixel.

    Raises:
        GeoccsegError: the mask marks unlabeled pixels (255).
    """
    truth, labeled = read_truth_mask(path)
    if labeled is not None:
        raise GeoccsegError(f"{path} marks unlabeled pixels (255): this diagnosis counts wholly labeled masks only")
    return truth


def foreground_probability(bundle: Bundle, image: np.ndarray, device: str = "auto", valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 probability that a pixel is not background, for a (C, H, W) uint8 image (one
    chip); ``valid``: its opaque pixels ((H, W) bool, None: all), the only ones a per-image
    normalisation is computed on, as ``geoccseg predict`` does (NaN elsewhere)."""
    return predict_array(bundle, image, valid, device=device)[1:].sum(0)


def score_bundle(bundle: Bundle, pairs: dict[str, Pair], tolerance_px: float | None = None, device: str = "auto",
                 examples: Sequence[str] = ()) -> Score:
    """Score a bundle on (image, mask) pairs at :data:`THRESHOLD` (every run compares at one
    threshold), and its F1 at its own decision threshold, one image at a time.

    Args:
        bundle: a loaded model bundle.
        pairs: (image, mask) paths by stem; masks are read as background (0) / foreground (> 0),
            their unlabeled pixels left out (:func:`read_truth_mask`).
        tolerance_px: relaxed-metric tolerance in pixels (None: no relaxed metrics).
        device: ``auto``, ``cpu`` or ``cuda``.
        examples: stems whose probability maps are kept in :attr:`Score.examples`.

    Raises:
        GeoccsegError: if ``pairs`` is empty or an image and its mask differ in size.
    """
    kept: dict[str, np.ndarray] = {}

    def probability(stem: str, image: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        prob = foreground_probability(bundle, image, device, valid)
        if stem in examples:
            kept[stem] = encode_uint8(prob)
        return prob

    (score,) = score_thresholds(pairs, (THRESHOLD,), probability, tolerance_px, bands=len(bundle.meta.bands))
    score.examples = kept
    own = bundle.meta.threshold
    if own is not None:  # one of the sweep's grid (every one training chooses) is read from its counts
        score.model_threshold, score.model_threshold_f1 = own, score.sweep.f1_at(own)
        if score.model_threshold_f1 is None:  # set by hand off the grid: a pass of its own
            (at_own,) = score_thresholds(pairs, (own,), probability, bands=len(bundle.meta.bands))
            score.model_threshold_f1 = at_own.pixels.f1
    return score


def read_scored_pair(image_path, mask_path, bands: int | None,
                     unlabeled_255: bool | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """(image, valid, truth, labeled) of a pair as training reads it: the photo with ``bands`` bands
    (a grey photo beside colour ones is read as colour), its opaque pixels (None: all), its
    transparent part left out of ``labeled``; the mask read by :func:`read_truth_mask` with
    ``unlabeled_255``.

    Raises:
        GeoccsegError: if the image and its mask differ in size.
    """
    image, valid = read_photo_valid(image_path, bands=bands)
    truth, labeled = read_truth_mask(mask_path, unlabeled_255)
    if image.shape[1:] != truth.shape:
        raise GeoccsegError(f"mask {mask_path.name} is {truth.shape[1]}x{truth.shape[0]} but image {image_path.name} is {image.shape[2]}x{image.shape[1]}; masks must match their images")
    if valid is not None:
        labeled = valid if labeled is None else labeled & valid
    return image, valid, truth, labeled


def score_thresholds(pairs: dict[str, Pair], thresholds: Sequence[float],
                     probability: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray], tolerance_px: float | None = None,
                     bands: int | None = None) -> list[Score]:
    """The pixel metrics of (image, mask) pairs at each threshold, each image predicted once.

    Args:
        pairs: (image, mask) paths by stem (masks read by :func:`read_truth_mask`, the 255 of a mask
            of only 0 and 255 as the set shows, :func:`pairs_mark_unlabeled_255`).
        thresholds: decision thresholds on the foreground probability.
        probability: ``(stem, (C, H, W) uint8 image, (H, W) opaque pixels or None) -> (H, W)``
            foreground probability, e.g. ``lambda stem, image, valid: foreground_probability(bundle,
            image, valid=valid)`` (the opaque pixels are what a per-image normalisation reads).
        tolerance_px: relaxed-metric tolerance in pixels (None: no relaxed metrics).
        bands: bands the model takes (``len(bundle.meta.bands)``; None: each photo's own).

    Raises:
        GeoccsegError: if ``pairs`` is empty or an image and its mask differ in size.
    """
    if not pairs:
        raise GeoccsegError("no test image to score; check the test folder")
    scorers = [PixelScorer(t, tolerance_px) for t in thresholds]
    unlabeled_255 = pairs_mark_unlabeled_255(pairs)
    for stem, (image_path, mask_path) in pairs.items():
        image, valid, truth, labeled = read_scored_pair(image_path, mask_path, bands, unlabeled_255)
        prob = probability(stem, image, valid)
        for scorer in scorers:
            scorer.add(prob, truth, labeled)
    return [Score(pixels=scorer.scores(), sweep=scorer.sweep) for scorer in scorers]


def pick_examples(pairs: dict[str, Pair], n: int = N_EXAMPLES) -> list[str]:
    """The ``n`` stems with the most foreground pixels (ties by stem): the most telling examples."""
    unlabeled_255 = pairs_mark_unlabeled_255(pairs)
    sizes = {stem: int(np.count_nonzero(read_truth_mask(mask, unlabeled_255)[0])) for stem, (_, mask) in pairs.items()}
    return sorted(sorted(sizes), key=lambda s: -sizes[s])[:n]
