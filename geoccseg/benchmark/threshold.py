"""Choosing a model's decision threshold on its select images.

The threshold of the best F1 on the select images (ODS) fits their own look. A crack model meets
fainter cracks on other pavements (thinner, lighter, on brighter or rougher surfaces), where its
probabilities are lower: the shipped model's on CrackForest are an order of magnitude below those on
DeepCrack, and CrackForest's best threshold is 0.04 against DeepCrack's 0.58. With ``contrast``
the select images count twice, as they are and as copies whose deviation from their mean grey is
multiplied by ``contrast`` (:func:`fainter`); the threshold is the best F1 over both. Nothing but
the select images is read: the copies are made from them, so the choice stays on the select split
(``pipelines/diagnose_crack_transfer.py --faint`` measures it; README, "Cracks, a threshold for
fainter cracks").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from geoccseg.benchmark.score import foreground_probability, pairs_mark_unlabeled_255, read_scored_pair
from geoccseg.benchmark.split import Pair
from geoccseg.evaluate import PixelScorer
from geoccseg.models import Bundle


def fainter(image: np.ndarray, contrast: float) -> np.ndarray:
    """A (C, H, W) uint8 photo with its deviation from its mean grey multiplied by ``contrast`` (< 1: fainter)."""
    x = image.astype(np.float32)
    mean = x.mean()
    return ((x - mean) * contrast + mean).round().clip(0, 255).astype(np.uint8)


class ThresholdChoice(NamedTuple):
    """A threshold chosen by :func:`choose_threshold`, with the F1 of the select images at it:
    as they are (``select_f1``), and pooled with their fainter copies (``pooled_f1``: the F1 the
    threshold maximises, equal to ``select_f1`` without copies). Models chosen by one rule are
    compared by ``pooled_f1``, the figure their threshold was chosen on."""

    threshold: float
    select_f1: float
    pooled_f1: float


def choose_threshold(bundle: Bundle, pairs: dict[str, Pair], contrast: float | None = None) -> ThresholdChoice:
    """The decision threshold chosen on the select ``pairs``, and the select F1 at it.

    Args:
        bundle: a loaded model bundle.
        pairs: the select (image, mask) paths by stem.
        contrast: None: the threshold of the best F1 on the pairs (ODS). A number in (0, 1): the
            best F1 on the pairs pooled with their :func:`fainter` copies.

    Returns:
        The threshold, the F1 of the pairs as they are at it, and the pooled F1 at it.
    """
    if contrast is not None and not 0 < contrast < 1:
        raise ValueError(f"contrast must lie in (0, 1), got {contrast}")
    select, pooled = PixelScorer(), PixelScorer()
    unlabeled_255 = pairs_mark_unlabeled_255(pairs)
    for image_path, mask_path in pairs.values():
        image, valid, truth, labeled = read_scored_pair(image_path, mask_path, len(bundle.meta.bands), unlabeled_255)
        prob = foreground_probability(bundle, image, valid=valid)
        select.add(prob, truth, labeled)
        pooled.add(prob, truth, labeled)
        if contrast is not None:
            pooled.add(foreground_probability(bundle, fainter(image, contrast), valid=valid), truth, labeled)
    best = pooled.scores()
    # ODS: a threshold of the grid
    return ThresholdChoice(best.ods_threshold, select.sweep.f1_at(best.ods_threshold), best.ods_f1)
