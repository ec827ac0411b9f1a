"""Confident foreground pseudo-labels cut to the width of the labels: a band around their centrelines.

Road masks of the benchmark datasets are lines of a fixed width (Massachusetts: about 5-6 px, a
half-width of 2.7 px from the median skeleton pixel to the mask's edge), while the teacher marks the whole visible
road surface. Most of its *wrong* confident road labels lie within 5 px of a true road (README,
Results): the road's edges, which the masks leave out by convention. Taught to the student, they
widen its roads and lower its precision against the masks.

:func:`centreline_band` keeps, of a confident foreground region, the pixels within a half-width of
its skeleton; the rest (the edges of a wide region) is neither foreground nor background to the
student: it is left out of the pseudo-label loss, as unreliable pixels are.

:func:`label_half_width_px` measures that half-width on the labeled masks themselves (the median
distance from a skeleton pixel to the mask's edge): ``pseudo_centreline_px: auto`` uses it, so the
band follows the labels of any dataset and pixel size (Massachusetts: 2.7 px; DeepCrack: 2.5-3.5 px,
depending on which photos are labeled, its cracks being of very uneven width).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.morphology import skeletonize
from torch import Tensor

from geoccseg.errors import GeoccsegError
from geoccseg.label_values import IGNORE_INDEX

if TYPE_CHECKING:
    from geoccseg.data.base import TrainingData

#: Labeled chips sampled (with a fixed seed, so a resumed run measures the same) by :func:`label_half_width_px`.
SAMPLE_CHIPS = 32


def centreline_band(mask: Tensor | np.ndarray, half_width_px: float) -> Tensor | np.ndarray:
    """Pixels of ``mask`` within ``half_width_px`` (Euclidean) of the mask's skeleton.

    Args:
        mask: (H, W) or (B, H, W) boolean foreground, a tensor (any device) or an array.
        half_width_px: half the kept width, pixels (the skeleton pixel itself is always kept).

    Returns:
        The kept pixels, a subset of ``mask``, of its type, shape and device.
    """
    is_tensor = isinstance(mask, Tensor)
    array = mask.detach().cpu().numpy() if is_tensor else np.asarray(mask)
    array = array.astype(bool, copy=False)
    flat = array.reshape(-1, *array.shape[-2:])
    out = np.zeros_like(flat)
    for i, m in enumerate(flat):
        if m.any():
            skeleton = skeletonize(m)
            out[i] = m & (ndi.distance_transform_edt(~skeleton) <= half_width_px)
    out = out.reshape(array.shape)
    return torch.from_numpy(out).to(mask.device) if is_tensor else out


def half_widths_px(foreground: np.ndarray) -> np.ndarray:
    """At each skeleton pixel of a (H, W) boolean foreground, the distance to the mask's edge: half a
    pixel short of the nearest background pixel's centre (a 5-px line: 2.5)."""
    return ndi.distance_transform_edt(foreground)[skeletonize(foreground)] - 0.5


def label_half_width_px(data: TrainingData, chips: int = SAMPLE_CHIPS) -> float:
    """Half-width of the foreground labels: the median, over the skeleton pixels of the foreground of
    ``chips`` labeled chips drawn with a fixed seed, of the distance to the mask's edge (half a pixel
    short of the nearest background pixel's centre), so that :func:`centreline_band` at it keeps a
    line as wide as the labels (a 5-px line measures 2.5 and its band is 5 px; measured to the
    background pixel's centre it was 3, a 7-px band). A band across a straight line is always an
    odd number of pixels wide (2⌊r⌋ + 1 around a one-pixel skeleton), so labels of an even width 2k
    (whose skeleton runs beside the middle: they measure k − 0.5) get a band of 2k − 1 pixels.

    Raises:
        GeoccsegError: the sampled chips hold no foreground label (nothing to measure).
    """
    generator = torch.Generator().manual_seed(0)
    widths = []
    for _ in range(chips):
        mask = data.labeled_chip(generator)["mask"].numpy()
        foreground = (mask > 0) & (mask != IGNORE_INDEX)
        if foreground.any():
            widths.append(half_widths_px(foreground))
    if not widths:
        raise GeoccsegError(f"pseudo_centreline_px auto: {chips} labeled chips hold no foreground pixel to measure the labels' "
                            "width on; give the half-width in pixels instead (e.g. --pseudo-centreline-px 3)")
    return float(np.median(np.concatenate(widths)))
