"""Probability → clean binary mask: threshold or hysteresis, small blobs out, small holes in.

These are the raster steps of the vectoriser. They run on one window of the scene (a block plus
its halo), so each connected-component decision is made only where the window can see the
whole component:

- a blob that touches an *open* window edge (a side where the scene continues beyond the halo)
  is never removed: it may be larger than what the window shows. A blob smaller than
  ``min_blob_m2`` that touches the halo's outer edge cannot reach the block core as long as its
  area in pixels is below ``halo_px``, so the core sees the same result as a whole-scene run;
- a background region that touches any window edge is never a hole, the same rule as for a
  whole scene, whose outer edge is not a hole either;
- hysteresis (``low_threshold``) is not decided here: every low-threshold region is kept and
  :func:`seeded` says which regions hold a high-threshold pixel *in this window*. The sparse
  skeleton graph then drops the connected networks without any seed, which is exact across blocks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from geoccseg.vectorize.params import VectorizeParams

_EIGHT = np.ones((3, 3), dtype=bool)


def foreground_mask(
    prob: np.ndarray,
    valid: np.ndarray,
    params: VectorizeParams,
    pixel_area_m2: float,
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> np.ndarray:
    """Threshold a probability window and clean it.

    Args:
        prob: (H, W) probabilities in [0, 1].
        valid: (H, W) bool, False where the raster has no data (treated as background).
        params: thresholds and the blob/hole areas in square metres.
        pixel_area_m2: area of one pixel in square metres.
        open_edges: (top, bottom, left, right): True where the scene continues beyond this window.

    Returns:
        (H, W) bool foreground mask, 8-connected.
    """
    low = params.threshold if params.low_threshold is None else params.low_threshold
    mask = valid & (prob >= low)
    min_blob_px = params.min_blob_m2 / pixel_area_m2
    if min_blob_px > 1 and mask.any():
        labels, n = ndi.label(mask, structure=_EIGHT)
        small = np.bincount(labels.ravel(), minlength=n + 1) < min_blob_px
        small[0] = False
        small[_edge_labels(labels, open_edges)] = False
        mask &= ~small[labels]
    max_hole_px = params.max_hole_m2 / pixel_area_m2
    if max_hole_px >= 1 and mask.any():
        holes, n = ndi.label(~mask)  # 4-connected background, the dual of 8-connected foreground
        fill = np.bincount(holes.ravel(), minlength=n + 1) <= max_hole_px
        fill[0] = False
        fill[_edge_labels(holes, (True, True, True, True))] = False
        mask |= fill[holes]
    return mask


def seeded(mask: np.ndarray, prob: np.ndarray, threshold: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Say, for some mask pixels, whether their 8-connected region holds a pixel >= ``threshold``.

    Args:
        mask: (H, W) bool foreground mask.
        prob: (H, W) probabilities in [0, 1].
        threshold: the high (seed) threshold of hysteresis.
        rows: (N,) row indices of the pixels asked about (pixels).
        cols: (N,) column indices (pixels).

    Returns:
        (N,) bool.
    """
    labels, n = ndi.label(mask, structure=_EIGHT)
    has_seed = np.bincount(labels[mask & (prob >= threshold)], minlength=n + 1) > 0
    return has_seed[labels[rows, cols]]


def _edge_labels(labels: np.ndarray, edges: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Labels found on the chosen (top, bottom, left, right) edges of a label image."""
    top, bottom, left, right = edges
    sides = ((labels[0], top), (labels[-1], bottom), (labels[:, 0], left), (labels[:, -1], right))
    strips = [strip for strip, use in sides if use]
    return np.unique(np.concatenate(strips)) if strips else np.zeros(0, dtype=labels.dtype)
