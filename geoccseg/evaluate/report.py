"""Score predictions against truth over a dataset: one image at a time, one table at the end.

For each (PRED, TRUTH) pair from :func:`geoccseg.evaluate.files.match_files` and each class:

- pixel metrics at ``threshold`` (precision, recall, F1, IoU), best-threshold F1 (ODS and OIS) and
  relaxed precision/recall/F1 with ``tolerance_px``, whenever one side is a raster;
- centreline completeness/correctness/quality with ``buffer_m``, whenever there is geometry: two
  vectors are compared exactly, a georeferenced raster through its skeleton (a vector compared with
  a raster is burnt onto the raster's grid, one pixel wide);
- the road-graph metrics APLS (:mod:`~geoccseg.evaluate.apls`) and TOPO precision/recall/F1
  (:mod:`~geoccseg.evaluate.topo`), whenever both sides can be measured in metres: vector lines
  become road graphs (:func:`geoccseg.vectorize.network.road_graph`), georeferenced rasters go
  through the vectoriser first (probabilities at ``threshold``, masks as they are).

Counts are summed over images, so a metric is that of the whole dataset (micro average), except
OIS, the mean of per-image best F1, and APLS, the mean of per-image APLS (as SpaceNet reports it).
"""

from __future__ import annotations


import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely
import rasterio.features
import scipy.ndimage
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.apls import APLSParams, APLSResult, apls_score
from geoccseg.evaluate.centerline import LineCounts, line_counts, skeleton_counts
from geoccseg.evaluate.files import (
    Raster,
    burn_lines,
    as_stored,
    check_same_grid,
    is_vector,
    match_files,
    prediction_scores,
    read_lines,
    read_raster,
    recorded_threshold,
    TruthReader,
    truth_masks,
)
from geoccseg.evaluate.pixel import PixelScorer
from geoccseg.evaluate.strip import clipped
from geoccseg.evaluate.topo import TopoCounts, TopoParams, topo_counts
from geoccseg.io.aoi import dissolved, read_polygons
from geoccseg.vectorize import VectorizeParams, vectorize_array
from geoccseg.vectorize.network import DEFAULT_SNAP_M, check_snap_m, road_graph

#: Default width in metres given to vector lines burnt for pixel metrics (SpaceNet road masks: 2 m each side).
DEFAULT_LINE_WIDTH_M = 4.0


@dataclass
class ClassResult:
    """Dataset metrics of one class; None where the inputs do not allow a metric.

    Pixel metrics need a raster on at least one side; centreline metrics need geometry (vectors or
    a georeferenced raster); graph metrics need both sides in metres (vectors or georeferenced
    rasters). ``ods_threshold`` is a probability in (0, 1). ``apls`` is the mean over images of the
    harmonic mean of ``apls_truth_onto_pred`` and ``apls_pred_onto_truth`` (each also a mean).
    """

    class_value: int
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    iou: float | None = None
    ods_f1: float | None = None
    ods_threshold: float | None = None
    ois_f1: float | None = None
    relaxed_precision: float | None = None
    relaxed_recall: float | None = None
    relaxed_f1: float | None = None
    completeness: float | None = None
    correctness: float | None = None
    quality: float | None = None
    apls: float | None = None
    apls_truth_onto_pred: float | None = None
    apls_pred_onto_truth: float | None = None
    topo_precision: float | None = None
    topo_recall: float | None = None
    topo_f1: float | None = None


RECORDED_NOTE = " (recorded in PRED)"
"""What the table says after a threshold read from PRED's rasters."""


@dataclass
class EvaluationResult:
    """Metrics of every class over a dataset, with the settings that produced them.

    Attributes:
        pred, truth: the PRED and TRUTH paths given.
        n_images: number of (PRED, TRUTH) pairs scored.
        threshold: probability threshold of the strict, relaxed and centreline metrics.
        threshold_recorded: whether ``threshold`` is the one PRED's probability rasters record
            (scene COGs: the one ``geoccseg predict`` drew their lines at; photos' PNGs: the
            model's), not one given.
        tolerance_px: relaxed tolerance in pixels.
        buffer_m: centreline buffer in metres.
        line_width_m: width in metres of vector lines burnt for pixel metrics.
        graph_snap_m: snapping distance of line ends when lines become road graphs, metres;
            None when the graph metrics were not asked for.
        apls_params: settings of APLS (:class:`~geoccseg.evaluate.apls.APLSParams`), or None.
        topo_params: settings of TOPO (:class:`~geoccseg.evaluate.topo.TopoParams`), or None.
        classes: one :class:`ClassResult` per class, by class value.
        aoi: the polygons only inside which was scored, or None: everywhere.
    """

    pred: str
    truth: str
    n_images: int
    threshold: float
    tolerance_px: float
    buffer_m: float
    line_width_m: float
    graph_snap_m: float | None = None
    apls_params: dict | None = None
    topo_params: dict | None = None
    classes: list[ClassResult] = field(default_factory=list)
    aoi: str | None = None
    threshold_recorded: bool = False

    def to_dict(self) -> dict:
        """JSON-safe dict (str, int, float, None, lists and dicts only)."""
        return asdict(self)

    def format_table(self) -> str:
        """A plain-text table for the terminal, one row per class; '-' where a metric is not available."""
        columns = [
            ("class", None), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("IoU", "iou"),
            ("ODS F1", "ods_f1"), ("ODS t", "ods_threshold"), ("OIS F1", "ois_f1"),
            ("relaxed P", "relaxed_precision"), ("relaxed R", "relaxed_recall"), ("relaxed F1", "relaxed_f1"),
            ("compl.", "completeness"), ("corr.", "correctness"), ("quality", "quality"),
            ("APLS", "apls"), ("TOPO P", "topo_precision"), ("TOPO R", "topo_recall"), ("TOPO F1", "topo_f1"),
        ]
        rows = [[name for name, _ in columns]]
        for result in self.classes:
            row = [str(result.class_value)]
            for _, attr in columns[1:]:
                value = getattr(result, attr)
                row.append("-" if value is None else f"{value:.{2 if attr == 'ods_threshold' else 4}f}")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        lines = [
            f"{self.n_images} image(s); threshold {self.threshold:g}{RECORDED_NOTE if self.threshold_recorded else ''}, relaxed tolerance {self.tolerance_px:g} px, "
            f"centreline buffer {self.buffer_m:g} m"
            + (
                f"; APLS snap {self.apls_params['snap_m']:g} m, TOPO radius {self.topo_params['radius_m']:g} m"
                if self.apls_params and self.topo_params else ""
            )
            + (f"; inside {self.aoi}" if self.aoi else "")
        ]
        for row in rows:
            lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip())
        return "\n".join(lines)


class _ClassTotals:
    """Running sums of one class over the images seen so far: the pixel scorer and the line counts."""

    def __init__(self, threshold: float, tolerance_px: float) -> None:
        self.pixels = PixelScorer(threshold, tolerance_px)
        self.lines: LineCounts | None = None
        self.apls: list[APLSResult] = []
        self.topo: TopoCounts | None = None

    def add_lines(self, counts: LineCounts) -> None:
        self.lines = counts if self.lines is None else self.lines + counts

    def merge(self, other: _ClassTotals) -> None:
        """Add the sums of ``other`` (the same class and settings, other images)."""
        self.pixels.merge(other.pixels)
        if other.lines is not None:
            self.add_lines(other.lines)
        self.apls += other.apls
        if other.topo is not None:
            self.topo = other.topo if self.topo is None else self.topo + other.topo

    def add_graphs(self, pred: nx.MultiGraph, truth: nx.MultiGraph, apls_params: APLSParams, topo_params: TopoParams) -> None:
        self.apls.append(apls_score(truth, pred, apls_params))
        counts = topo_counts(truth, pred, topo_params)
        self.topo = counts if self.topo is None else self.topo + counts

    def result(self, class_value: int) -> ClassResult:
        result = ClassResult(class_value=class_value)
        if self.pixels.n_images:
            scores = self.pixels.scores().to_dict()
            del scores["n_images"]
            for name, value in scores.items():
                setattr(result, name, value)
        if self.lines is not None:
            result.completeness, result.correctness = self.lines.completeness, self.lines.correctness
            result.quality = self.lines.quality
        if self.apls:
            result.apls = float(np.mean([a.apls for a in self.apls]))
            result.apls_truth_onto_pred = float(np.mean([a.truth_onto_pred for a in self.apls]))
            result.apls_pred_onto_truth = float(np.mean([a.pred_onto_truth for a in self.apls]))
        if self.topo is not None:
            result.topo_precision, result.topo_recall, result.topo_f1 = self.topo.precision, self.topo.recall, self.topo.f1
        return result


def evaluate(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    threshold: float | None = None,
    tolerance_px: float = 3,
    buffer_m: float = 5.0,
    classes: Sequence[int] | None = None,
    line_width_m: float = DEFAULT_LINE_WIDTH_M,
    graph_metrics: bool = True,
    graph_snap_m: float = DEFAULT_SNAP_M,
    apls_params: APLSParams | None = None,
    topo_params: TopoParams | None = None,
    aoi: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Score PRED against TRUTH (files, or folders matched by file stem).

    Args:
        pred: prediction raster(s) (probabilities, masks or class maps) or vector lines.
        truth: truth raster(s) (masks or class maps) or vector lines.
        threshold: a pixel is positive when its probability is ``>= threshold``, in (0, 1]; None:
            the threshold PRED's probability rasters record (``geoccseg predict`` writes the
            model's, at which it drew the lines), else 0.5.
        tolerance_px: relaxed precision/recall tolerance in pixels.
        buffer_m: centreline buffer half-width in metres.
        classes: class values to score in class maps; None scores binary masks/probabilities (class 1).
        line_width_m: width in metres of vector lines burnt onto a raster grid for pixel metrics.
        graph_metrics: compute APLS and TOPO where both sides can be measured in metres.
        graph_snap_m: line ends within this distance (metres) of other ends or lines are joined
            when lines become road graphs (:func:`geoccseg.vectorize.network.road_graph`).
        apls_params: APLS settings (metres); None for the SpaceNet defaults.
        topo_params: TOPO settings (metres); None for the SpaceNet reference's defaults.
        aoi: a vector file of polygons (any CRS): only inside them is scored (the pixels outside are
            left out, as nodata; lines are cut at their edge). Rasters must be georeferenced.

    Raises:
        GeoccsegError: bad options or inputs (see :mod:`geoccseg.evaluate.files`).
    """
    if threshold is not None and not 0 < threshold <= 1:  # as predict and vectorize take it
        raise GeoccsegError(f"threshold {threshold:g} must be in (0, 1]")
    if not (math.isfinite(tolerance_px) and tolerance_px >= 0):
        raise GeoccsegError(f"tolerance {tolerance_px} px must be >= 0")
    if not all(math.isfinite(v) and v > 0 for v in (buffer_m, line_width_m)):
        raise GeoccsegError(f"buffer ({buffer_m} m) and line width ({line_width_m} m) must be > 0")
    if classes is not None:
        classes = sorted({int(k) for k in classes})
        if not classes:
            raise GeoccsegError("no class to score; give at least one class value or none for binary masks")
    check_snap_m(graph_snap_m, "graph_snap_m")
    graphs = _GraphSettings(graph_snap_m, apls_params or APLSParams(), topo_params or TopoParams()) if graph_metrics else None
    pairs = match_files(pred, truth)
    recorded = threshold is None and (threshold := pred_threshold(pairs)) is not None
    threshold = 0.5 if threshold is None else threshold
    area = _Area(str(aoi), read_polygons(aoi)) if aoi is not None else None  # read once for every pair
    totals = {k: _ClassTotals(threshold, tolerance_px) for k in (classes or [1])}
    provisional = {k: _ClassTotals(threshold, tolerance_px) for k in totals}  # tiles of only 0 and 255, as masks
    truths = TruthReader(folder=len(pairs) > 1, classes=max(classes) if classes else None)
    results = [_score_pair(pred_path, truth_path, totals, classes, threshold, tolerance_px, buffer_m, line_width_m, graphs,
                           area, truths, provisional) for pred_path, truth_path in pairs]
    truths.finish()
    if truths.seen:  # the folder marks unlabeled pixels with 255: so do its tiles of only 0 and 255
        results = [_score_pair(pred_path, truth_path, totals, classes, threshold, tolerance_px, buffer_m, line_width_m, graphs,
                               area, truths) if result == _PROVISIONAL else result for (pred_path, truth_path), result in zip(pairs, results)]
    else:
        for k, class_totals in totals.items():
            class_totals.merge(provisional[k])
    scored = sum(result != _SKIPPED for result in results)
    if scored == 0 and area is not None and all(is_vector(p) and is_vector(t) for p, t in pairs):
        raise GeoccsegError(f"nothing to score inside AOI {aoi}: no line of PRED or TRUTH reaches it"
                            f"{' in any of the ' + str(len(pairs)) + ' pairs' if len(pairs) > 1 else ''}; check its location and CRS")
    if scored == 0 and area is not None:
        raise GeoccsegError(f"nothing to score inside AOI {aoi}: it overlaps "
                            + (f"none of the {len(pairs)} images" if len(pairs) > 1 else f"no pixel of {pairs[0][0]}")
                            + " that is valid in both PRED and TRUTH; check its location and CRS, and the files' nodata")
    if scored == 0:
        raise GeoccsegError(f"nothing to score: no pixel is valid in both PRED and TRUTH (nodata, or unlabeled, everywhere"
                            f"{' in each of the ' + str(len(pairs)) + ' pairs' if len(pairs) > 1 else ''}); check the files' nodata values")
    return EvaluationResult(
        pred=str(pred),
        truth=str(truth),
        n_images=scored,
        threshold=float(threshold),
        tolerance_px=float(tolerance_px),
        buffer_m=float(buffer_m),
        line_width_m=float(line_width_m),
        graph_snap_m=float(graph_snap_m) if graphs else None,
        apls_params=asdict(graphs.apls) if graphs else None,
        topo_params=asdict(graphs.topo) if graphs else None,
        classes=[totals[k].result(k) for k in sorted(totals)],
        aoi=str(aoi) if aoi is not None else None,
        threshold_recorded=recorded,
    )


def pred_threshold(pairs: list[tuple[Path, Path]]) -> float | None:
    """The one decision threshold PRED's probability rasters record (:func:`recorded_threshold`), or
    None where none records one.

    Raises:
        GeoccsegError: they record different thresholds (predictions of several models).
    """
    found = {}
    for pred_path, _ in pairs:
        value = recorded_threshold(pred_path)
        if value is not None:
            found.setdefault(value, pred_path)
    if len(found) > 1:
        named = ", ".join(f"{value:g} ({path.name})" for value, path in sorted(found.items())[:3])
        raise GeoccsegError(f"PRED's probability rasters record different model thresholds: {named}; give --threshold, "
                            "or score each model's predictions apart")
    return next(iter(found), None)


@dataclass(frozen=True)
class _GraphSettings:
    """How lines become road graphs, and the settings of the graph metrics."""

    snap_m: float
    apls: APLSParams
    topo: TopoParams


_SCORED, _PROVISIONAL, _SKIPPED = "scored", "provisional", "skipped"
"""What :func:`_score_pair` did with a pair."""


def _score_pair(
    pred_path: Path,
    truth_path: Path,
    totals: dict[int, _ClassTotals],
    classes: list[int] | None,
    threshold: float,
    tolerance_px: float,
    buffer_m: float,
    line_width_m: float,
    graphs: _GraphSettings | None = None,
    area: _Area | None = None,
    truths: TruthReader | None = None,
    provisional: dict[int, _ClassTotals] | None = None,
) -> str:
    """Add one (PRED, TRUTH) pair to ``totals``; with ``area``, only inside its polygons.
    ``truths``: reads TRUTH rasters (a pair alone: ``TruthReader(folder=False)``); a TRUTH it reads
    provisionally is added to ``provisional`` instead.

    Returns:
        :data:`_SCORED`; :data:`_PROVISIONAL` (added to ``provisional``); or :data:`_SKIPPED` when
        the pair has no pixel to score (all nodata or unlabeled, or a tile of a folder beside the AOI).
    """
    truths = truths or TruthReader(folder=False)
    pred_vector, truth_vector = is_vector(pred_path), is_vector(truth_path)
    if (pred_vector or truth_vector) and classes not in (None, [1]):
        raise GeoccsegError(f"vector lines ({pred_path if pred_vector else truth_path}) are one class; score them without --classes")
    if pred_vector and truth_vector:
        pred_lines, truth_lines = read_lines(pred_path, "PRED"), read_lines(truth_path, "TRUTH")
        if area is not None:
            inside, pred_lines = area.in_crs(truth_lines.crs), pred_lines.to_crs(truth_lines.crs)
            # a tile of a folder beside the AOI: neither file's lines reach it (a tile with lines only outside the AOI
            # but reaching it is scored, its empty parts inside included: both empty scores 1, as rasters do)
            reach = shapely.union_all([shapely.box(*lines.total_bounds) for lines in (pred_lines, truth_lines) if not lines.empty])
            if reach.is_empty or not inside.intersects(reach):
                return _SKIPPED
            pred_lines, truth_lines = clipped(pred_lines, inside), clipped(truth_lines, inside)
        totals[1].add_lines(line_counts(pred_lines, truth_lines, buffer_m))
        if graphs is not None:
            pred_graph, truth_graph = road_graph(pred_lines, snap_m=graphs.snap_m), road_graph(truth_lines, snap_m=graphs.snap_m)
            totals[1].add_graphs(pred_graph, truth_graph, graphs.apls, graphs.topo)
        return _SCORED
    thin_pred: np.ndarray | None = None
    thin_truth: np.ndarray | None = None
    held_back = False
    if truth_vector:
        grid = read_raster(pred_path)
        scores = prediction_scores(grid, classes)
        truth = {1: burn_lines(truth_path, grid, line_width_m, "TRUTH")}
        thin_truth = burn_lines(truth_path, grid, None, "TRUTH")
        valid = grid.valid
    elif pred_vector:
        grid, held_back = truths.read(truth_path)
        truth = truth_masks(grid, classes)
        scores = {1: burn_lines(pred_path, grid, line_width_m, "PRED")}
        thin_pred = burn_lines(pred_path, grid, None, "PRED")
        valid = grid.valid
    else:
        truth_raster, held_back = truths.read(truth_path)
        pred_raster = as_stored(read_raster(pred_path), truth_raster)
        check_same_grid(pred_raster, truth_raster)
        grid = pred_raster if pred_raster.georeferenced else truth_raster
        scores = prediction_scores(pred_raster, classes)
        truth = truth_masks(truth_raster, classes)
        valid = pred_raster.valid & truth_raster.valid
    if area is not None:
        inside = area.mask(grid, truth_path if pred_vector else pred_path)
        if inside is None:
            return _SKIPPED
        valid = valid & inside
    if not valid.any():  # it would count as a perfect image (OIS, graphs) and in the image count
        return _SKIPPED
    pixel_m = grid.pixel_m() if grid.georeferenced else None
    for k, class_totals in (provisional if held_back else totals).items():
        class_totals.pixels.add(scores[k], truth[k], valid)
        if pixel_m is not None:
            pred_lines = thin_pred if thin_pred is not None else scores[k] >= threshold
            truth_lines = thin_truth if thin_truth is not None else truth[k]
            class_totals.add_lines(skeleton_counts(pred_lines, truth_lines, buffer_m / pixel_m, pixel_m, valid, grid.pixel_xy_m()))
        if graphs is not None and pixel_m is not None:
            # vector lines against a raster: only their part on the raster is compared
            on_grid = None if pred_vector and truth_vector else grid
            pred_graph = (
                road_graph(_lines_on(read_lines(pred_path, "PRED"), on_grid, valid), snap_m=graphs.snap_m) if pred_vector
                else _raster_graph(scores[k], grid, valid, threshold, graphs.snap_m)
            )
            truth_graph = (
                road_graph(_lines_on(read_lines(truth_path, "TRUTH"), on_grid, valid), snap_m=graphs.snap_m) if truth_vector
                else _raster_graph(truth[k], grid, valid, 0.5, graphs.snap_m, truth=True)
            )
            class_totals.add_graphs(pred_graph, truth_graph, graphs.apls, graphs.topo)
    return _PROVISIONAL if held_back else _SCORED


@dataclass
class _Area:
    """The AOI of an evaluation: its polygons, read once, placed on each pair's grid."""

    path: str
    polygons: gpd.GeoDataFrame

    def in_crs(self, crs) -> BaseGeometry:
        return dissolved(self.polygons, crs, self.path)

    def mask(self, grid: Raster, path: Path) -> np.ndarray | None:
        """(H, W) bool: the pixels of a georeferenced raster whose centres lie inside the polygons;
        None where the polygons do not overlap it.

        Raises:
            GeoccsegError: the raster is not georeferenced.
        """
        if not grid.georeferenced:
            raise GeoccsegError(f"--aoi needs georeferenced rasters, and {path} has no CRS; score it without --aoi")
        inside = self.in_crs(grid.crs).intersection(_footprint(grid))
        if inside.area == 0:
            return None
        return rasterio.features.geometry_mask([inside], out_shape=grid.shape, transform=grid.transform, invert=True)


def _footprint(grid: Raster) -> shapely.Polygon:
    """The outline of a georeferenced raster in its CRS (turned rasters included)."""
    height, width = grid.shape
    return shapely.Polygon([grid.transform * corner for corner in ((0, 0), (width, 0), (width, height), (0, height))])


NODATA_SPECKLE_PX = 1024
"""Nodata patches smaller than this (pixels) do not cut the vector lines of the graph metrics."""


def _lines_on(lines: gpd.GeoSeries, grid: Raster | None, valid: np.ndarray | None = None) -> gpd.GeoSeries:
    """The parts of ``lines`` on a georeferenced raster's valid pixels (in its CRS), so that truth
    beyond a predicted scene or across its nodata is not counted as missed, nor predictions
    beyond a truth raster or over its unlabeled pixels as false (as the pixel and centreline
    scores leave those pixels out; patches of fewer than :data:`NODATA_SPECKLE_PX` do not cut
    them); ``grid`` None: all of them."""
    if grid is None:
        return lines
    if valid is None or valid.all():
        area = _footprint(grid)
    else:
        holes, _ = scipy.ndimage.label(~valid)
        speckle = np.bincount(holes.ravel()) < NODATA_SPECKLE_PX  # scattered nodata pixels would cut lines at every one
        speckle[0] = False
        kept = valid | speckle[holes]
        area = shapely.union_all([shapely.geometry.shape(g) for g, _ in
                                  rasterio.features.shapes(kept.astype(np.uint8), mask=kept, transform=grid.transform)])
    return clipped(lines.to_crs(grid.crs), area)


def _raster_graph(values: np.ndarray, grid: Raster, valid: np.ndarray, threshold: float, snap_m: float,
                  truth: bool = False) -> nx.MultiGraph:
    """The road graph of probabilities (foreground at ``threshold``) or a mask on a georeferenced grid,
    through the one vectoriser with its default settings; a ``truth`` mask keeps its roads as they
    are: no gap is bridged (its breaks are the truth's: bridging them invented connections a
    prediction was then scored against) and no small piece or short network is removed (a truth of
    one-pixel centrelines at 0.3 m lost every piece under about 100 m, and a prediction that drew
    it was charged for it). Its holes are still filled and its spurs pruned: the skeleton of a
    road-surface mask has both where the road has none."""
    params = VectorizeParams(threshold=threshold)
    if truth:
        params = replace(params, gap_m=0.0, min_blob_m2=0.0, min_length_m=0.0)
    lines: gpd.GeoDataFrame = vectorize_array(
        np.asarray(values, dtype=np.float32), transform=grid.transform, crs=grid.crs, valid=valid, params=params,
    )
    return road_graph(lines, snap_m=snap_m)
