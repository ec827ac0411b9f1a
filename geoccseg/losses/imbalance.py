"""Data imbalance loss: class-balanced cross-entropy plus a Tversky or Dice region term.

Roads and cracks are thin and rare (a few per cent of the pixels), so plain pixel cross-entropy is
dominated by the background. :class:`ImbalanceLoss` replaces it on every supervised term:

* a class-weighted cross-entropy, with weights from the class frequencies of the labelled data
  (:func:`class_counts`, :func:`class_weights`);
* a soft Dice (or Tversky) term over the foreground classes, computed over the whole batch; the
  region term scores each class by its overlap, whatever its share of the pixels. Tversky, with
  a false-negative weight larger than the false-positive weight, favours recall of thin
  structures further (an option; by default it overshot on DeepCrack).

Pixels equal to ``ignore_index`` (nodata, outside the area of interest, unreliable pseudo-labels)
are left out of both terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoccseg.errors import GeoccsegError
from geoccseg.label_values import IGNORE_INDEX

#: Effective numbers are computed on counts rescaled to this total (one unit = one per-mille).
EFFECTIVE_TOTAL = 1000.0

WEIGHT_METHODS = ("effective", "inv_sqrt", "none")
REGION_TERMS = ("tversky", "dice")


def class_counts(masks: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Count the labelled pixels of each class.

    Args:
        masks: integer label maps of any shape, e.g. (B, H, W) or (H, W).
        num_classes: number of classes K (class 0 is the background).
        ignore_index: label value of pixels that are not counted.

    Returns:
        Pixel counts, float64 tensor of shape (K,), on the CPU.

    Raises:
        GeoccsegError: if a label is neither ``ignore_index`` nor in ``[0, K)``.
    """
    labels = masks.reshape(-1)
    labels = labels[labels != ignore_index].long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise GeoccsegError(
            f"label value {bad} is outside the {num_classes} classes [0, {num_classes - 1}] "
            f"and is not the ignore value {ignore_index}; fix the label rasters or the number of classes"
        )
    return torch.bincount(labels.cpu(), minlength=num_classes).to(torch.float64)


def class_weights(
    counts: Tensor,
    method: str = "effective",
    beta: float = 0.98,
    max_weight: float = 50.0,
) -> Tensor:
    """Per-class loss weights from pixel counts.

    Methods:

    * ``"effective"``: w_k ∝ (1 − β) / (1 − β^{n_k}), the inverse "effective number of samples"
      (Cui et al., CVPR 2019).
    * ``"inv_sqrt"``: w_k ∝ 1 / sqrt(f_k), with f_k the pixel frequency of class k.
    * ``"none"``: all weights 1.

    Units of n_k: with raw pixel counts (millions) every β^{n_k} underflows to 0 for the usual
    β = 0.999..0.9999, all effective numbers equal 1 / (1 − β) and the weights are flat. Pixels of
    one chip are also far from independent samples. So the counts are first rescaled to a fixed
    total of 1000 (n_k = 1000 · f_k, one unit per per-mille of the labelled pixels). The weights
    then depend on the class frequencies only, not on chip size or number of chips, and β is a
    single knob from "none" (β = 0) to inverse frequency (β → 1): with λ = −1000 · ln β,
    w_k ∝ 1 / (1 − exp(−λ f_k)), so classes above a frequency of about 1/λ count as well sampled
    and rarer classes get about 1 / (λ f_k) times their weight. The default β = 0.98 (λ ≈ 20,
    ``class_weight_beta`` of the training config) gives a 3 % road class about 2.2 times the weight
    of the background (β = 0.995: 7 times; β = 0.999: 21 times; β = 0.9999: 31 times, nearly
    inverse frequency; inverse square root: 5.7 times).

    The weights are normalised so that the pixel-frequency-weighted mean weight is 1
    (Σ_k f_k w_k = 1), then clipped to ``max_weight``; a class with no pixels gets ``max_weight``
    (it is in the label set but rare enough to be missing from the labelled chips).

    Args:
        counts: pixel counts per class, shape (K,) (see :func:`class_counts`).
        method: ``"effective"``, ``"inv_sqrt"`` or ``"none"``.
        beta: β of the effective number, in [0, 1).
        max_weight: upper bound of every weight.

    Returns:
        Weights, float32 tensor of shape (K,).

    Raises:
        GeoccsegError: on an unknown method, β outside [0, 1), or no labelled pixel at all.
    """
    if method not in WEIGHT_METHODS:
        raise GeoccsegError(f"unknown class weighting {method!r}; use one of {', '.join(WEIGHT_METHODS)}")
    if not 0.0 <= beta < 1.0:
        raise GeoccsegError(f"class weighting beta must be in [0, 1), got {beta}")
    counts = counts.detach().to(torch.float64).cpu()
    if method == "none":
        return torch.ones(counts.shape, dtype=torch.float32)
    total = float(counts.sum())
    if total <= 0:
        raise GeoccsegError("no labelled pixel to compute class weights from; check the labels and the ignore value")
    freq = counts / total
    present = counts > 0
    raw = torch.zeros_like(freq)
    if method == "effective" and beta == 0:
        raw[present] = 1.0
    elif method == "effective":
        effective = -torch.expm1(EFFECTIVE_TOTAL * freq[present] * math.log(beta))  # 1 − β^{n_k}
        raw[present] = (1.0 - beta) / effective
    else:
        raw[present] = freq[present].rsqrt()
    weights = raw / (freq * raw).sum()
    weights = torch.where(present, weights.clamp(max=max_weight), torch.full_like(weights, max_weight))
    return weights.to(torch.float32)


class ImbalanceLoss(nn.Module):
    """Class-weighted cross-entropy plus a soft Tversky or Dice term on the foreground classes.

    loss = CE_w + region_weight · (1 − mean_{k ≥ 1} TI_k), with the Tversky index
    TI_k = (TP_k + s) / (TP_k + α FP_k + β FN_k + s) summed over every non-ignored pixel of the
    batch (soft counts: TP_k = Σ p_k g_k, FP_k = Σ p_k (1 − g_k), FN_k = Σ (1 − p_k) g_k).
    Dice is the Tversky index with α = β = 0.5. ``weights=None, region=None`` is plain
    cross-entropy, the ablation baseline.

    Args:
        weights: class weights, shape (K,) (see :func:`class_weights`); None for unweighted CE.
        region: ``"tversky"``, ``"dice"`` or None (no region term).
        alpha: Tversky weight of false positives.
        beta: Tversky weight of false negatives; β > α favours recall.
        region_weight: factor of the region term.
        ignore_index: label value left out of both terms.
        smooth: s, added to the numerator and denominator of the Tversky index (in pixels).
    """

    weights: Tensor | None

    def __init__(
        self,
        weights: Tensor | None = None,
        region: str | None = "dice",
        alpha: float = 0.3,
        beta: float = 0.7,
        region_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if region is not None and region not in REGION_TERMS:
            raise GeoccsegError(f"unknown region loss {region!r}; use one of {', '.join(REGION_TERMS)} or none")
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise GeoccsegError(f"Tversky alpha and beta must be >= 0 and not both 0, got {alpha} and {beta}")
        self.register_buffer("weights", None if weights is None else weights.detach().float().clone())
        self.region = region
        self.alpha, self.beta = (0.5, 0.5) if region == "dice" else (alpha, beta)
        self.region_weight = region_weight
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
        """Loss of one batch.

        Args:
            logits: (B, K, H, W) class scores.
            target: (B, H, W) int64 labels in [0, K) or ``ignore_index``.
            pixel_weight: optional (B, H, W) factor per pixel (e.g. pseudo-label confidence),
                multiplied into the cross-entropy term only.

        Returns:
            Scalar loss; 0 (finite, differentiable) when every pixel is ignored.
        """
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} are not (B,K,H,W) and (B,H,W)")
        num_classes = logits.shape[1]
        if self.weights is not None and self.weights.numel() != num_classes:
            raise ValueError(f"{self.weights.numel()} class weights for {num_classes} classes")
        logits = logits.float()
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        return self._cross_entropy(logits, safe_target, valid, pixel_weight) + self._region(logits, safe_target, valid)

    def _cross_entropy(self, logits: Tensor, target: Tensor, valid: Tensor, pixel_weight: Tensor | None) -> Tensor:
        """Weighted mean CE as in torch: Σ w_{y_i} p_i CE_i / Σ w_{y_i} over non-ignored pixels i."""
        per_pixel = F.cross_entropy(logits, target, reduction="none")
        class_weight = valid.float() if self.weights is None else self.weights[target] * valid
        numerator = class_weight * per_pixel
        if pixel_weight is not None:
            numerator = numerator * pixel_weight
        return numerator.sum() / class_weight.sum().clamp_min(1e-12)

    def _region(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """1 − mean Tversky index of the foreground classes k ≥ 1, over the whole batch."""
        num_classes = logits.shape[1]
        if self.region is None or num_classes < 2:
            return logits.new_zeros(())
        probs = logits.softmax(dim=1)[:, 1:]
        mask = valid.unsqueeze(1).float()
        truth = F.one_hot(target, num_classes).permute(0, 3, 1, 2)[:, 1:].float() * mask
        probs = probs * mask
        dims = (0, 2, 3)
        true_pos = (probs * truth).sum(dims)
        false_pos = (probs * (1 - truth)).sum(dims)
        false_neg = ((1 - probs) * truth).sum(dims)
        index = (true_pos + self.smooth) / (true_pos + self.alpha * false_pos + self.beta * false_neg + self.smooth)
        return self.region_weight * (1 - index).mean()
