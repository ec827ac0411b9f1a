"""Crack measurements: length, width and orientation of every crack branch of a photo.

A photo's probability map goes through the vectoriser's own steps, with a pixel size of 1 so that
every length is in pixels: threshold, small blobs out, small holes in, skeleton and distance to
the background, block by block (:func:`geoccseg.vectorize.skeleton.skeleton_pixels`, so memory
follows the block, not the photo), then the skeleton graph with spurs pruned and short cracks
dropped (:func:`geoccseg.vectorize.lines.clean_graph`). Each branch of the graph (from a junction
or an end to a junction or an end, or a closed ring) is one crack branch, measured as follows:

- ``length_px``: length of the skeleton path through pixel centres (a diagonal step counts √2),
  plus half the crack's width at each free end, since the skeleton stops about that short of the
  tip (the line geometry itself is the skeleton path).
- width at a skeleton pixel: its distance to the background on both sides, i.e. the Euclidean
  distance from the pixel centre to the nearest background pixel centre, plus the distance to
  the first background pixel centre straight across in the opposite direction, less 1 px (the
  two half pixels between those centres and the crack's edges). On the centre line of a crack
  this is 2 x the distance to the background (a band 5 px wide measures 5 px); a band of even
  width has no centre pixel, and the opposite side keeps it from measuring 1 px narrow.
  ``mean_width_px`` and ``max_width_px`` are taken over the branch's own pixels: pixels within
  a junction (closer to a junction's centre than its half-width) are left out, since where
  cracks meet the inscribed circle is wider than any of them.
- ``orientation_deg``: direction of the principal axis of the branch's vertices, in degrees
  counter-clockwise from the photo's x axis (pointing right), in [0, 180): 0 is horizontal,
  90 vertical.
- ``probability``: mean probability on the branch's skeleton pixels (0-1).
- ``length_mm``, ``mean_width_mm``, ``max_width_mm``: the same times the pixel size in
  millimetres, when it is known (else NaN, written as empty).

Geometries are LineStrings in the photo's pixel coordinates as QGIS shows a photo without
georeferencing: pixel (column, row) has its centre at ``x = column + 0.5``, ``y = -(row + 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np
import shapely
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from geoccseg.errors import GeoccsegError
from geoccseg.io.probability import probabilities
from geoccseg.vectorize.blocks import _blocks
from geoccseg.vectorize.graph import SkeletonGraph, owners
from geoccseg.vectorize.lines import clean_graph
from geoccseg.vectorize.mask import foreground_mask
from geoccseg.vectorize.params import VectorizeParams
from geoccseg.vectorize.skeleton import SkeletonPixels, skeleton_pixels

PIXEL = (1.0, 1.0)
"""Pixel size handed to the vectoriser: its lengths in "metres" are then pixels."""

COLUMNS = (
    "image", "length_px", "mean_width_px", "max_width_px", "orientation_deg", "probability",
    "length_mm", "mean_width_mm", "max_width_mm",
)
"""Columns of a crack branch, in order (plus ``geometry``)."""


@dataclass(frozen=True)
class CrackParams:
    """How a crack probability map becomes measured crack branches (all sizes in pixels).

    Attributes:
        threshold: probability at or above which a pixel is crack (0-1); None: the model's own
            (:meth:`resolved`), as for :class:`~geoccseg.vectorize.VectorizeParams`.
        min_blob_px: crack blobs smaller than this area (pixels) are removed.
        max_hole_px: holes inside a crack up to this area (pixels) are filled.
        spur_px: end branches shorter than this (pixels) hanging off a junction are pruned
            (the stubs that thinning grows towards the corners of a wide crack).
        min_length_px: connected cracks shorter than this in total (pixels) are dropped.
        simplify_px: Douglas-Peucker tolerance of the output lines (pixels); 0 keeps every
            skeleton pixel. Lengths are measured before simplification.
        block_px: side of the blocks the raster steps run on (pixels; memory).
        halo_px: pixels read around each block; wider than half the widest crack.
    """

    threshold: float | None = None
    min_blob_px: float = 20.0
    max_hole_px: float = 4.0
    spur_px: float = 10.0
    min_length_px: float = 20.0
    simplify_px: float = 0.5
    block_px: int = 1024
    halo_px: int = 64

    def __post_init__(self) -> None:
        if self.block_px < 1 or self.halo_px < 0:
            raise GeoccsegError(f"block_px must be >= 1 and halo_px >= 0, got {self.block_px} and {self.halo_px}")
        if max(self.min_blob_px, self.max_hole_px) >= self.halo_px > 0:
            raise GeoccsegError(f"min_blob_px and max_hole_px must stay below halo_px ({self.halo_px}) for block-wise results")
        self.vectorize_params()  # checks the threshold and that every size is >= 0

    def resolved(self, model_threshold: float | None) -> CrackParams:
        """These settings at a definite threshold (:meth:`VectorizeParams.resolved`)."""
        return replace(self, threshold=self.vectorize_params().resolved(model_threshold).threshold)

    def vectorize_params(self) -> VectorizeParams:
        """The vectoriser's settings for a pixel size of 1 (its metres are these pixels); no gap bridging."""
        return VectorizeParams(
            threshold=self.threshold, min_blob_m2=self.min_blob_px, max_hole_m2=self.max_hole_px,
            spur_m=self.spur_px, min_length_m=self.min_length_px, gap_m=0.0, simplify_m=self.simplify_px,
        )


@dataclass
class CrackMeasurements:
    """The crack branches of one photo and its summary.

    Attributes:
        branches: one row per crack branch, columns :data:`COLUMNS` and ``geometry`` (pixel
            coordinates, no CRS).
        width_px: photo width in pixels.
        height_px: photo height in pixels.
        crack_count: connected cracks (a network of branches counts once).
        total_length_px: sum of the branch lengths, pixels.
        max_width_px: widest point of any crack, pixels (0 without cracks).
        cracked_area_share: sum over branches of length x mean width, divided by the photo's area.
        pixel_size_mm: pixel size used for the millimetre columns, None when unknown.
    """

    branches: gpd.GeoDataFrame
    width_px: int
    height_px: int
    crack_count: int
    total_length_px: float
    max_width_px: float
    cracked_area_share: float
    pixel_size_mm: float | None

    def mm(self, value_px: float) -> float | None:
        """A length in pixels as millimetres; None when the pixel size is unknown."""
        return None if self.pixel_size_mm is None else value_px * self.pixel_size_mm


def crack_skeleton(prob: np.ndarray, params: CrackParams) -> SkeletonPixels:
    """Skeleton pixels of a probability map, computed block by block.

    Args:
        prob: (H, W) probabilities, uint8 (p x 255) or float in [0, 1].
        params: crack settings (thresholds and sizes in pixels).

    Returns:
        The skeleton pixels with their width (pixels) and probability, as one whole-photo run gives.
    """
    if prob.ndim != 2:
        raise GeoccsegError(f"prob must be a 2-D (H, W) array, got shape {prob.shape}")
    settings = params.vectorize_params()
    parts = []
    for window, core, open_edges in _blocks(*prob.shape, params.block_px, params.halo_px):
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        block = probabilities(prob[rows, cols])
        pixels = skeleton_pixels(block, None, settings, PIXEL, core=core, offset_px=(rows.start, cols.start), open_edges=open_edges)
        mask = foreground_mask(block, np.ones(block.shape, dtype=bool), settings, 1.0, open_edges)
        width = width_across_px(mask, pixels.rows - rows.start, pixels.cols - cols.start)
        parts.append(SkeletonPixels(pixels.rows, pixels.cols, width.astype(np.float32), pixels.prob, pixels.seeded))
    return SkeletonPixels.concat(parts)


def width_across_px(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Width of a mask across some of its pixels, from the distance to the background on both sides.

    For each pixel: ``near``, the distance from its centre to the nearest background pixel centre
    (exact, with a k-d tree over the background pixels that touch the mask), and ``far``, the
    distance to the first background pixel centre met going straight away from that nearest one
    (in half-pixel steps; outside the window counts as background). The width is
    ``near + far - 1``: on a crack's centre line, ``2 x (near - 0.5)``. Where several background
    pixels are nearest (up to :data:`TIES`), the narrowest of their widths is taken, so the result
    does not depend on the order of the pixels (nor on the blocks).

    Args:
        mask: (H, W) bool crack mask of a window.
        rows: (N,) rows of mask pixels in the window.
        cols: (N,) columns of mask pixels in the window.

    Returns:
        (N,) float64 widths in pixels; NaN where the window holds no background.
    """
    edge_rows, edge_cols = np.nonzero(ndi.binary_dilation(mask) & ~mask)
    if len(rows) == 0 or len(edge_rows) == 0:
        return np.full(len(rows), np.nan)
    here = np.stack([rows, cols], axis=1).astype(np.float64)
    edges = np.stack([edge_rows, edge_cols], axis=1)
    distance, nearest = cKDTree(edges).query(here, k=min(TIES, len(edges)))
    distance, nearest = distance.reshape(len(here), -1), nearest.reshape(len(here), -1)
    near = distance[:, 0]
    width = np.full(len(here), np.inf)
    for k in range(distance.shape[1]):
        tie = distance[:, k] <= near + 1e-9
        away = (here[tie] - edges[nearest[tie, k]]) / near[tie, None]
        width[tie] = np.minimum(width[tie], near[tie] + _far(mask, here[tie], away, near[tie]) - 1.0)
    return width


TIES = 4
"""Equally near background pixels considered for the width at a pixel."""


def _far(mask: np.ndarray, here: np.ndarray, away: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Distance from each pixel to the first background pixel centre along its unit direction ``away``
    (outside the window counts as background); ``near`` where none is met within ``2 x near + 2``."""
    far = np.full(len(here), np.nan)
    height, width = mask.shape
    for step in np.arange(0.5, 2 * near.max(initial=0.0) + 2.0, 0.5):
        open_ = np.isnan(far) & (step <= 2 * near + 2)
        if not open_.any():
            break
        at = np.floor(here[open_] + step * away[open_] + 0.5).astype(np.int64)
        inside = (at[:, 0] >= 0) & (at[:, 0] < height) & (at[:, 1] >= 0) & (at[:, 1] < width)
        hit = ~inside
        hit[inside] = ~mask[at[inside, 0], at[inside, 1]]
        index = np.flatnonzero(open_)[hit]
        far[index] = np.hypot(*(at[hit] - here[index]).T)
    return np.where(np.isnan(far), near, far)


def measure_cracks(
    prob: np.ndarray,
    *,
    image: str = "",
    params: CrackParams | None = None,
    pixel_size_mm: float | None = None,
) -> CrackMeasurements:
    """Measure every crack branch of one photo's probability map.

    Args:
        prob: (H, W) crack probabilities, uint8 (p x 255) or float in [0, 1].
        image: value of the ``image`` column (the photo's file name).
        params: crack settings; None for the defaults (a threshold of None: 0.5, this function
            knows no model; :func:`geoccseg.inference.predict_photos` gives the model's).
        pixel_size_mm: size of one pixel in millimetres, for the ``*_mm`` columns; None: unknown.

    Returns:
        The branches and the photo's summary (see the module docstring for each measure).
    """
    params = (params or CrackParams()).resolved(None)
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise GeoccsegError(f"pixel size must be a positive number of millimetres, got {pixel_size_mm}")
    graph = clean_graph(crack_skeleton(prob, params), PIXEL, params.vectorize_params())
    branches = _branches(graph, image, params.simplify_px, pixel_size_mm)
    height, width = prob.shape
    network = graph.pixel_network[graph.branch_pixels[graph.branch_ptr[:-1]]]
    return CrackMeasurements(
        branches=branches,
        width_px=width,
        height_px=height,
        crack_count=len(np.unique(network)),
        total_length_px=float(branches["length_px"].sum()),
        max_width_px=float(np.nan_to_num(branches["max_width_px"].max())) if len(branches) else 0.0,
        cracked_area_share=float((branches["length_px"] * branches["mean_width_px"]).sum() / (height * width)),
        pixel_size_mm=pixel_size_mm,
    )


def _branches(graph: SkeletonGraph, image: str, simplify_px: float, pixel_size_mm: float | None) -> gpd.GeoDataFrame:
    """One row per branch of the graph, columns :data:`COLUMNS` and ``geometry``."""
    n = graph.n_branches
    pixel = graph.branch_pixels
    branch = owners(graph.branch_ptr)
    at_junction = _in_junction(graph)
    own = np.bincount(branch, ~at_junction, minlength=n) > 0
    use = ~at_junction | ~own[branch]  # a branch made of junction pixels only keeps them
    width = graph.pixels.width_m[pixel].astype(np.float64)
    count = np.bincount(branch[use], minlength=n)
    mean_width = np.bincount(branch[use], width[use], minlength=n) / np.maximum(count, 1)
    max_width = np.full(n, -np.inf)
    np.maximum.at(max_width, branch[use], width[use])
    probability = np.bincount(branch, graph.pixels.prob[pixel].astype(np.float64), minlength=n) / np.maximum(np.diff(graph.branch_ptr), 1)

    point_branch = owners(graph.point_ptr)
    x, y = graph.point_rc[:, 1] + 0.5, -(graph.point_rc[:, 0] + 0.5)
    geometry = shapely.linestrings(x, y, indices=point_branch) if n else np.array([], dtype=object)
    if simplify_px > 0 and n:
        geometry = shapely.simplify(geometry, simplify_px, preserve_topology=True)
    length = graph.branch_length_m + _tip_px(graph)
    scale = np.nan if pixel_size_mm is None else pixel_size_mm
    data = {
        "image": np.full(n, image, dtype=object),
        "length_px": length,
        "mean_width_px": mean_width,
        "max_width_px": np.where(count > 0, max_width, np.nan),
        "orientation_deg": _orientation_deg(point_branch, x, y, n),
        "probability": probability,
        "length_mm": length * scale,
        "mean_width_mm": mean_width * scale,
        "max_width_mm": np.where(count > 0, max_width, np.nan) * scale,
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geometry, crs=None), crs=None)


def _tip_px(graph: SkeletonGraph) -> np.ndarray:
    """(B,) half the width at each free end (a node of degree 1) of each branch, added up (pixels)."""
    tip = np.zeros(graph.n_branches)
    node_width = np.zeros(len(graph.node_degree))
    on_node = graph.node_of_pixel >= 0
    np.maximum.at(node_width, graph.node_of_pixel[on_node], np.nan_to_num(graph.pixels.width_m[on_node].astype(np.float64)))
    free = np.append(graph.node_degree == 1, False)  # node -1 (ring) is none
    for side in (0, 1):
        end = graph.branch_nodes[:, side]
        tip += np.where(free[end], node_width[end] / 2, 0.0)
    return tip


def _in_junction(graph: SkeletonGraph) -> np.ndarray:
    """(P,) over ``graph.branch_pixels``: the pixel lies within a junction at either end of its
    branch, closer to the junction's centre than half the junction's width."""
    owner = owners(graph.branch_ptr)
    pixel = graph.branch_pixels
    node = graph.node_of_pixel
    radius = np.zeros(len(graph.node_degree))
    on_node = node >= 0
    np.maximum.at(radius, node[on_node], np.nan_to_num(graph.pixels.width_m[on_node].astype(np.float64)) / 2)
    is_junction = np.append(graph.node_degree >= 3, False)  # node -1 (ring) is none
    rc = np.stack([graph.pixels.rows[pixel], graph.pixels.cols[pixel]], axis=1).astype(np.float64)
    inside = np.zeros(len(pixel), dtype=bool)
    for side in (0, 1):
        end = graph.branch_nodes[owner, side]
        junction = is_junction[end]
        distance = np.hypot(*(rc[junction] - graph.node_rc[end[junction]]).T)
        inside[np.flatnonzero(junction)[distance <= radius[end[junction]]]] = True
    return inside


def empty_branches() -> gpd.GeoDataFrame:
    """A frame of crack branches with no row (the columns of :data:`COLUMNS` and ``geometry``)."""
    data = {name: np.array([], dtype=object if name == "image" else np.float64) for name in COLUMNS}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=None), crs=None)


def _orientation_deg(group: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Principal-axis direction of each group of points, degrees in [0, 180) counter-clockwise from +x."""
    count = np.maximum(np.bincount(group, minlength=n), 1)
    mx, my = np.bincount(group, x, minlength=n) / count, np.bincount(group, y, minlength=n) / count
    dx, dy = x - mx[group], y - my[group]
    sxx = np.bincount(group, dx * dx, minlength=n)
    syy = np.bincount(group, dy * dy, minlength=n)
    sxy = np.bincount(group, dx * dy, minlength=n)
    angle = 0.5 * np.degrees(np.arctan2(2 * sxy, sxx - syy))
    return np.mod(angle, 180.0)


def summary_numbers(measured: CrackMeasurements) -> dict[str, float | int | None]:
    """The per-photo numbers of a summary row (millimetres None when the pixel size is unknown)."""
    return {
        "crack_count": measured.crack_count,
        "branch_count": len(measured.branches),
        "total_length_px": round(measured.total_length_px, 2),
        "total_length_mm": _round(measured.mm(measured.total_length_px), 3),
        "max_width_px": round(measured.max_width_px, 2),
        "max_width_mm": _round(measured.mm(measured.max_width_px), 3),
        "cracked_area_share": round(measured.cracked_area_share, 6),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)
