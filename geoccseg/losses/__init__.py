"""Losses of the method: data imbalance loss, confidence levels and the contrastive term."""

from __future__ import annotations

from geoccseg.losses.alignment import DistributionAlignment
from geoccseg.losses.confidence import ConfidenceLevels, confidence_levels, sigmoid_rampup
from geoccseg.losses.contrastive import ConfidenceContrastiveLoss, KeyQueue
from geoccseg.losses.imbalance import ImbalanceLoss, class_counts, class_weights

__all__ = [
    "ConfidenceContrastiveLoss",
    "ConfidenceLevels",
    "DistributionAlignment",
    "ImbalanceLoss",
    "KeyQueue",
    "class_counts",
    "class_weights",
    "confidence_levels",
    "sigmoid_rampup",
]
