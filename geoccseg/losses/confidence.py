"""Confidence levels of the teacher's pseudo-labels, and the ramp-up of the unlabelled terms.

From the teacher's class probabilities p on the weak view, the confidence is c = max_k p_k and the
pseudo-label ŷ = argmax_k p_k. Each pixel falls in exactly one level:

* high H = {c ≥ τ_h}: trusted pseudo-labels (consistency loss) and contrastive keys;
* low L = {τ_l ≤ c < τ_h}: contrastive anchors, pulled towards their class prototype;
* unreliable U = {c < τ_l}: left out.

Thresholds may be given per class (indexed by the pseudo-label), because a rare class seldom
reaches the confidence of the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geoccseg.errors import GeoccsegError
from geoccseg.label_values import IGNORE_INDEX


def check_thresholds(tau_low: float, tau_high: float, tau_high_fg: float) -> None:
    """Refuse confidence thresholds outside ``0 < tau_low <= tau_high, tau_high_fg <= 1``, NaN
    included (a NaN passed every comparison it met and switched foreground pseudo-labels off, and
    a threshold above 1 trained the supervised phase, then stopped at the first unlabeled step).

    Raises:
        GeoccsegError: thresholds out of order or range.
    """
    values = (tau_low, tau_high, tau_high_fg)
    if not (all(math.isfinite(v) for v in values) and 0 < tau_low <= min(tau_high, tau_high_fg) and max(tau_high, tau_high_fg) <= 1):
        raise GeoccsegError("confidence thresholds must satisfy 0 < tau_low <= tau_high, tau_high_fg <= 1; got "
                            f"tau_low={tau_low}, tau_high={tau_high}, tau_high_fg={tau_high_fg}")


@dataclass
class ConfidenceLevels:
    """Teacher confidence, pseudo-labels and the three confidence levels, all (B, H, W).

    Attributes:
        confidence: c = max_k p_k, float.
        pseudo: ŷ = argmax_k p_k, int64.
        high: c ≥ τ_h, bool.
        low: τ_l ≤ c < τ_h, bool.
        unreliable: c < τ_l, bool.
    """

    confidence: Tensor
    pseudo: Tensor
    high: Tensor
    low: Tensor
    unreliable: Tensor

    def target(self, keep: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
        """Pseudo-labels where ``keep`` (B, H, W) is true, ``ignore_index`` elsewhere (int64)."""
        return torch.where(keep, self.pseudo, torch.full_like(self.pseudo, ignore_index))


def _threshold(tau: float | Tensor, confidence: Tensor, pseudo: Tensor) -> Tensor:
    """τ in the dtype of the confidence: a scalar, or each pixel's per-class value (B, H, W)."""
    tau = torch.as_tensor(tau, dtype=confidence.dtype, device=confidence.device)
    return tau[pseudo] if tau.ndim == 1 else tau


def confidence_levels(probs: Tensor, tau_high: float | Tensor, tau_low: float | Tensor) -> ConfidenceLevels:
    """Split pixels into high, low and unreliable confidence.

    Args:
        probs: (B, K, H, W) class probabilities (softmax of the teacher's logits); not differentiated.
        tau_high: τ_h, a float or a (K,) tensor of per-class thresholds.
        tau_low: τ_l, a float or a (K,) tensor of per-class thresholds; τ_l ≤ τ_h.

    Returns:
        The :class:`ConfidenceLevels` of every pixel.

    Raises:
        GeoccsegError: if a threshold is outside [0, 1], τ_l > τ_h, or a per-class tensor does not
            have K values.
    """
    high_t = torch.as_tensor(tau_high, dtype=torch.float64)
    low_t = torch.as_tensor(tau_low, dtype=torch.float64)
    for tau in (high_t, low_t):
        if tau.ndim > 1 or (tau.ndim == 1 and tau.numel() != probs.shape[1]):
            raise GeoccsegError(
                f"per-class confidence thresholds need one value per class ({probs.shape[1]}), got shape {tuple(tau.shape)}"
            )
    if (low_t < 0).any() or (high_t > 1).any() or (low_t > high_t).any():
        raise GeoccsegError(
            f"confidence thresholds need 0 <= tau_low <= tau_high <= 1, got tau_low={tau_low}, tau_high={tau_high}"
        )
    confidence, pseudo = probs.detach().max(dim=1)
    high = confidence >= _threshold(tau_high, confidence, pseudo)
    unreliable = confidence < _threshold(tau_low, confidence, pseudo)
    low = ~high & ~unreliable
    return ConfidenceLevels(confidence=confidence, pseudo=pseudo, high=high, low=low, unreliable=unreliable)


def sigmoid_rampup(step: int, length: int) -> float:
    """Ramp-up factor exp(−5 (1 − t)²), t = clip(step / length, 0, 1) (Laine & Aila, 2017).

    Args:
        step: current optimiser step (0-based).
        length: number of steps to reach 1; 0 means no ramp-up.

    Returns:
        A factor in (0, 1]: exp(−5) ≈ 0.0067 at step 0, 1.0 from ``step >= length`` on.
    """
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
