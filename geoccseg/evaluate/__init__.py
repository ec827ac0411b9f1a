"""Evaluation: pixel, relaxed, best-threshold and centreline metrics of predictions against truth.

``pixel`` holds the streaming pixel counters, ``centerline`` the Wiedemann length metrics, ``files``
reads and pairs PRED/TRUTH files, and ``report`` runs them over a dataset (:func:`evaluate`).
"""

from __future__ import annotations

from geoccseg.evaluate.centerline import LineCounts, line_counts, skeleton_counts
from geoccseg.evaluate.pixel import (
    THRESHOLDS,
    Counts,
    RelaxedCounts,
    ThresholdSweep,
    pixel_counts,
    relaxed_counts,
)
from geoccseg.evaluate.report import ClassResult, EvaluationResult, evaluate

__all__ = [
    "THRESHOLDS",
    "ClassResult",
    "Counts",
    "EvaluationResult",
    "LineCounts",
    "RelaxedCounts",
    "ThresholdSweep",
    "evaluate",
    "line_counts",
    "pixel_counts",
    "relaxed_counts",
    "skeleton_counts",
]
