"""Label a strip, score the rest: the split and the scores of "label part of a scene, map the rest".

A user digitises the roads of one full-height strip of their scene (the labeled AOI of
``geoccseg train --aoi``), trains on it and lets the model map the rest of the scene.
:func:`strips` cuts a scene into its western strip and the rest, :func:`clipped` keeps the lines
inside one part, and :func:`score_rest` scores predicted lines against the truth in the unlabeled
rest with the centreline metrics of ``geoccseg evaluate`` (:func:`line_counts`). ``geoccseg demo``
and ``pipelines/benchmark_own_scene.py`` share them.
"""

from __future__ import annotations

import os
from typing import NamedTuple, TypeVar

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import Polygon, box

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.centerline import LineCounts, line_counts
from geoccseg.io.scene import open_scene

Lines = TypeVar("Lines", gpd.GeoSeries, gpd.GeoDataFrame)


class Strips(NamedTuple):
    """A scene cut in two at a meridian of its CRS (unpacks as ``crs, labeled, rest``).

    Attributes:
        crs: CRS of the scene, in which both polygons are given.
        labeled: the western strip, full height (the labeled AOI).
        rest: the eastern remainder, full height (the scored part).
    """

    crs: CRS
    labeled: Polygon
    rest: Polygon


def strips(scene: str | os.PathLike, fraction: float) -> Strips:
    """The labeled western strip and the scored rest of ``scene``, in its CRS.

    Args:
        scene: GeoTIFF scene.
        fraction: width of the western strip as a share of the scene's width (in its CRS units), in (0, 1).

    Raises:
        GeoccsegError: ``fraction`` outside (0, 1), or an unreadable scene.
    """
    if not 0 < fraction < 1:
        raise GeoccsegError(f"the labeled strip must be a share of the scene between 0 and 1 (exclusive), got {fraction}")
    s = open_scene(scene)
    xmin, ymin, xmax, ymax = s.bounds
    cut = xmin + fraction * (xmax - xmin)
    return Strips(CRS.from_user_input(s.crs), box(xmin, ymin, cut, ymax), box(cut, ymin, xmax, ymax))


def clipped(lines: Lines, region: Polygon) -> Lines:
    """The line parts of ``lines`` inside ``region`` (same CRS), one per input line, empty pieces
    dropped (a line that only touches the region's edge leaves no point behind)."""
    out = lines.clip(region)
    out = out[~out.is_empty]
    mixed = ~np.isin(shapely.get_type_id(out.geometry.values), (1, 5))  # neither LineString nor MultiLineString
    if mixed.any():  # points and collections: keep their lines only
        geometry = out.geometry.values.copy()
        geometry[mixed] = [_lines_only(g) for g in geometry[mixed]]
        out = out.set_geometry(geometry) if isinstance(out, gpd.GeoDataFrame) else gpd.GeoSeries(geometry, index=out.index, crs=out.crs)
        out = out[~out.is_empty]
    return out


def _lines_only(geometry) -> shapely.Geometry:
    """The (multi)line string of the line parts of a geometry (empty when it has none)."""
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in ("LineString", "MultiLineString")]
    lines = [line for p in parts for line in shapely.get_parts(p)]
    return lines[0] if len(lines) == 1 else shapely.MultiLineString(lines)


def score_rest(pred_lines: Lines, truth_lines: Lines, split: Strips, buffer_m: float = 5.0) -> LineCounts:
    """Completeness, correctness and quality of the predicted lines against the truth in ``split.rest``.

    Both networks are brought to the scene's CRS and clipped to the rest before matching, so
    neither the labeled strip nor lines that cross into it count.

    Args:
        pred_lines: predicted (multi)line strings, with a CRS.
        truth_lines: true (multi)line strings, with a CRS.
        split: the scene's strips (:func:`strips`).
        buffer_m: buffer half-width in metres.

    Returns:
        The matched and total lengths in metres; ``completeness``, ``correctness`` and
        ``quality`` are its properties (0 for an empty prediction against some truth).

    Raises:
        GeoccsegError: lines without a CRS.
    """
    if pred_lines.crs is None or truth_lines.crs is None:
        raise GeoccsegError("prediction or truth lines have no CRS; set a CRS on both vector files")
    pred = clipped(pred_lines.to_crs(split.crs), split.rest)
    truth = clipped(truth_lines.to_crs(split.crs), split.rest)
    return line_counts(pred, truth, buffer_m)
