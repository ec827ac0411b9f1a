"""Evaluation: pixel, relaxed, best-threshold and centreline metrics of predictions against truth.

``pixel`` holds the streaming pixel counters and the one scorer of in-memory probability maps
(:class:`PixelScorer`, :func:`score_arrays`), ``centerline`` the Wiedemann length metrics, ``apls``
and ``topo`` the road-graph metrics (:func:`apls_score`, :func:`topo_counts`), ``files`` reads and pairs
PRED/TRUTH files, and ``report`` runs them over a dataset (:func:`evaluate`).
"""

from __future__ import annotations

from geoccseg.evaluate.apls import APLSParams, APLSResult, apls_score
from geoccseg.evaluate.centerline import LineCounts, line_counts, skeleton_counts
from geoccseg.evaluate.pixel import (
    THRESHOLDS,
    Counts,
    PixelScorer,
    PixelScores,
    RelaxedCounts,
    ThresholdSweep,
    confusion_counts,
    pixel_counts,
    relaxed_counts,
    score_arrays,
)
from geoccseg.evaluate.report import ClassResult, EvaluationResult, evaluate
from geoccseg.evaluate.strip import Strips, clipped, score_rest, strips
from geoccseg.evaluate.topo import TopoCounts, TopoParams, topo_counts

__all__ = [
    "THRESHOLDS",
    "APLSParams",
    "APLSResult",
    "ClassResult",
    "Counts",
    "EvaluationResult",
    "LineCounts",
    "PixelScorer",
    "PixelScores",
    "RelaxedCounts",
    "Strips",
    "ThresholdSweep",
    "TopoCounts",
    "TopoParams",
    "apls_score",
    "clipped",
    "confusion_counts",
    "evaluate",
    "line_counts",
    "pixel_counts",
    "relaxed_counts",
    "score_arrays",
    "score_rest",
    "skeleton_counts",
    "strips",
    "topo_counts",
]
