"""Centreline metrics of road or crack networks (Wiedemann et al. 1998).

With a buffer of ``buffer_m`` metres around each network:

- completeness = length of truth within the buffer of the prediction / truth length,
- correctness = length of prediction within the buffer of the truth / prediction length,
- quality = matched prediction length / (prediction length + unmatched truth length), Wiedemann's
  definition; it equals ``compl * corr / (compl - compl * corr + corr)`` when the matched lengths of
  both networks are equal.

Two routes give the lengths. Vector lines are measured exactly in a metric CRS (the lines' own CRS
when projected in metres, otherwise the local UTM zone from ``GeoSeries.estimate_utm_crs()``).
Rasters are reduced to one-pixel skeletons (``skimage.morphology.skeletonize``) and each skeleton
pixel stands for half the length of its links to its skeleton neighbours (:func:`skeleton_lengths`:
a pixel's width across, its height along a column, their hypotenuse diagonally), so that a diagonal
road and a road across non-square pixels (a raster in degrees) are measured at their length; the
buffer is converted to pixels.

Empty cases follow :mod:`geoccseg.evaluate.pixel`: 1.0 when both networks are empty, otherwise a
zero denominator gives 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from skimage.morphology import skeletonize

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.pixel import ratio, within_px
from geoccseg.io.units import metric_crs


@dataclass
class LineCounts:
    """Matched and total lengths of the two networks, in metres; add images with ``+``."""

    truth_matched_m: float = 0.0
    truth_total_m: float = 0.0
    pred_matched_m: float = 0.0
    pred_total_m: float = 0.0

    def __add__(self, other: LineCounts) -> LineCounts:
        return LineCounts(
            self.truth_matched_m + other.truth_matched_m,
            self.truth_total_m + other.truth_total_m,
            self.pred_matched_m + other.pred_matched_m,
            self.pred_total_m + other.pred_total_m,
        )

    @property
    def empty(self) -> bool:
        """True when both networks have zero length."""
        return self.truth_total_m + self.pred_total_m == 0

    @property
    def completeness(self) -> float:
        """truth_matched_m / truth_total_m."""
        return ratio(self.truth_matched_m, self.truth_total_m, self.empty)

    @property
    def correctness(self) -> float:
        """pred_matched_m / pred_total_m."""
        return ratio(self.pred_matched_m, self.pred_total_m, self.empty)

    @property
    def quality(self) -> float:
        """pred_matched_m / (pred_total_m + truth_total_m - truth_matched_m)."""
        unmatched_truth_m = self.truth_total_m - self.truth_matched_m
        return ratio(self.pred_matched_m, self.pred_total_m + unmatched_truth_m, self.empty)


def line_counts(
    pred_lines: gpd.GeoSeries | gpd.GeoDataFrame, truth_lines: gpd.GeoSeries | gpd.GeoDataFrame, buffer_m: float
) -> LineCounts:
    """Match two vector networks with a buffer of ``buffer_m`` metres.

    Both are reprojected to the metric CRS of the truth (of the prediction when the truth is empty);
    each network is merged (``shapely.union_all``) first so that overlapping lines count once.

    Args:
        pred_lines: predicted (multi)line strings, with a CRS.
        truth_lines: true (multi)line strings, with a CRS.
        buffer_m: buffer half-width in metres.
    """
    pred = gpd.GeoSeries(pred_lines.geometry)
    truth = gpd.GeoSeries(truth_lines.geometry)
    pred, truth = pred[~(pred.isna() | pred.is_empty)], truth[~(truth.isna() | truth.is_empty)]
    if pred.crs is None or truth.crs is None:
        raise GeoccsegError("prediction or truth lines have no CRS; set a CRS on both vector files")
    if len(pred) + len(truth) == 0:
        return LineCounts()
    crs = metric_crs(truth if len(truth) else pred)
    pred_net = shapely.union_all(pred.to_crs(crs).values)
    truth_net = shapely.union_all(truth.to_crs(crs).values)
    return LineCounts(
        truth_matched_m=truth_net.intersection(pred_net.buffer(buffer_m)).length,
        truth_total_m=truth_net.length,
        pred_matched_m=pred_net.intersection(truth_net.buffer(buffer_m)).length,
        pred_total_m=pred_net.length,
    )


def skeleton_lengths(skeleton: np.ndarray, x_m: float, y_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels of a one-pixel skeleton and the length in metres each stands for: half of each of
    its links to a skeleton neighbour, ``x_m`` across a row, ``y_m`` along a column, their hypotenuse
    diagonally (a diagonal link only where no pair of 4-neighbour links joins the two pixels already,
    so a corner is not counted twice); an isolated pixel stands for ``sqrt(x_m * y_m)``. A straight
    run of n pixels measures n - 1 steps, as the line through their centres.

    Returns:
        rows, cols (int arrays) and lengths (float64, metres) of the skeleton's pixels.
    """
    rows, cols = np.nonzero(skeleton)
    padded = np.pad(np.asarray(skeleton, dtype=bool), 1)

    def at(dr: int, dc: int) -> np.ndarray:
        return padded[rows + 1 + dr, cols + 1 + dc]

    right, left, down, up = at(0, 1), at(0, -1), at(1, 0), at(-1, 0)
    diagonals = ((at(1, 1) & ~right & ~down).astype(np.int8) + (at(-1, -1) & ~left & ~up) + (at(1, -1) & ~left & ~down)
                 + (at(-1, 1) & ~right & ~up))
    lengths = (right.astype(np.int8) + left) * (x_m / 2) + (down.astype(np.int8) + up) * (y_m / 2) + diagonals * (np.hypot(x_m, y_m) / 2)
    lengths[lengths == 0] = np.sqrt(x_m * y_m)
    return rows, cols, lengths


def skeleton_counts(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    buffer_px: float,
    pixel_m: float = 1.0,
    valid: np.ndarray | None = None,
    pixel_xy_m: tuple[float, float] | None = None,
) -> LineCounts:
    """Match the skeletons of two binary masks with a buffer of ``buffer_px`` pixels.

    Args:
        pred_mask: (H, W) bool, predicted positive pixels (e.g. probabilities >= threshold).
        truth_mask: (H, W) bool, true positive pixels (a mask, or lines burnt one pixel wide).
        buffer_px: buffer half-width in pixels (Euclidean distance between pixel centres, ``<=``).
        pixel_m: the pixel size in metres (square pixels), to report lengths in metres.
        valid: (H, W) bool, pixels to score; masks are cleared outside it before skeletonising.
        pixel_xy_m: (x, y) size of a pixel in metres where they differ (square pixels in degrees):
            lengths are measured with them (:func:`skeleton_lengths`) and the buffer is
            ``buffer_px x pixel_m`` metres in every direction.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    truth_mask = np.asarray(truth_mask, dtype=bool)
    if valid is not None:
        pred_mask, truth_mask = pred_mask & valid, truth_mask & valid
    pred_skel = skeletonize(pred_mask)
    truth_skel = skeletonize(truth_mask)
    # in pixels, or in metres along each axis (rows are y) where the pixel sizes are given
    distance, sampling = (buffer_px, None) if pixel_xy_m is None else (buffer_px * pixel_m, (pixel_xy_m[1], pixel_xy_m[0]))
    x_m, y_m = pixel_xy_m if pixel_xy_m is not None else (pixel_m, pixel_m)
    truth_rows, truth_cols, truth_m = skeleton_lengths(truth_skel, x_m, y_m)
    pred_rows, pred_cols, pred_m = skeleton_lengths(pred_skel, x_m, y_m)
    return LineCounts(
        truth_matched_m=float(truth_m[within_px(pred_skel, distance, sampling)[truth_rows, truth_cols]].sum()),
        truth_total_m=float(truth_m.sum()),
        pred_matched_m=float(pred_m[within_px(truth_skel, distance, sampling)[pred_rows, pred_cols]].sum()),
        pred_total_m=float(pred_m.sum()),
    )
