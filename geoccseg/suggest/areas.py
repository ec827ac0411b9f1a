"""Where to label next on scenes: squares of S metres, ranked by what their labels would teach.

:func:`suggest_areas` is what ``geoccseg suggest SCENE... -o areas.gpkg`` and the notebooks call.
For each scene it

1. lays a grid of *cells* of S/2 metres over the scene's model grid (the scene at the model's pixel
   size); every 2 x 2 block of cells is a candidate square of S metres, so candidates overlap by
   half and lie wholly inside the scene;
2. scores the cells block by block (:func:`geoccseg.suggest.blocks.score_cells`, bounded memory,
   Dask like prediction);
3. drops squares with less than ``min_valid_share`` valid pixels (nodata), squares that overlap the
   labeled AOI (any area in common; a shared edge is not) and squares that hold a labeled geometry; squares mostly
   inside the AOI or holding labels are the *labeled reference* of the novelty term;

then ranks the candidates of all scenes together (:func:`geoccseg.suggest.select.greedy`; squares of
scenes that overlap are never both chosen where they share area) and
writes the best ``n`` as polygons in the first scene's CRS with ``rank``, ``score`` and its parts,
atomically. ``strategy="coverage"`` chooses by embedding clusters instead of the score, and
``strategy="random"`` draws the same candidates at random: the baseline that the benchmark compares with.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import scipy.sparse
import shapely
from affine import Affine
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.inference.confidence import ConfidenceThresholds
from geoccseg.inference.predict import (
    PredictOptions, bundle_files, check_workers_read_the_same_model, model_scale, open_scene_for, resolve_device,
)
from geoccseg.io.aoi import dissolved, read_polygons
from geoccseg.io.atomic import check_not_input, scratch_dir
from geoccseg.io.bundle import BundleMeta, resolve_model
from geoccseg.io.labels import reaching, read_vector
from geoccseg.io.scene import Scene, shown_name
from geoccseg.io.units import reprojected
from geoccseg.io.vector_write import check_vector_crs, check_vector_output, write_vectors
from geoccseg.models import Bundle, load_bundle
from geoccseg.suggest.blocks import CellGrid, score_cells, scoring_session
from geoccseg.suggest.select import PARTS, Candidates, SuggestParams, check_seed, check_strategy, choose
from geoccseg.suggest.terms import FEATURES, TermParams

log = logging.getLogger(__name__)

DEFAULT_SIZE_TILES = 2.0
"""Default square edge, in training chips (``tile_px`` x the model's pixel size): a labeled chip
must lie 3/4 inside the labeled area (:func:`geoccseg.data.chips.accept_labeled`), so in a square
of two chips randomly placed chips land about in proportion to its area."""


COLUMNS = ("rank", "score", "acquisition", *PARTS, "typicality", "spread", "novelty", "valid_share", "size_m", "scene")
"""Attribute columns of the written squares."""


@dataclass
class SuggestResult:
    """What :func:`suggest_areas` found.

    Attributes:
        areas: the chosen squares, best first (:data:`COLUMNS` and their polygons, first scene's CRS).
        path: the file written, or None.
        size_m: edge of the squares, metres (as asked; cells are whole model pixels, so the
            ``size_m`` column gives each square's own edge).
        candidates: squares that could be chosen (valid, outside the labeled areas).
        seconds: wall time, seconds.
    """

    areas: gpd.GeoDataFrame
    path: Path | None
    size_m: float
    candidates: int
    seconds: float


@dataclass
class _SceneCandidates:
    candidates: Candidates
    reference: np.ndarray
    boxes: np.ndarray
    valid_share: np.ndarray
    size_m: np.ndarray
    crs: CRS
    name: str


def default_size_m(meta: BundleMeta, scene_pixel_m: float) -> float:
    """:data:`DEFAULT_SIZE_TILES` training chips of the model, in metres (the scene's pixel size
    when the model's is unknown)."""
    return DEFAULT_SIZE_TILES * meta.tile_px * (meta.pixel_size_m or scene_pixel_m)


def suggest_areas(
    scenes: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    model: Bundle | str | os.PathLike = "road",
    n: int = 5,
    size_m: float | None = None,
    aoi: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    options: PredictOptions | None = None,
    params: SuggestParams | None = None,
    strategy: str = "acquisition",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SuggestResult:
    """Rank squares of ``size_m`` metres outside the labeled areas by what their labels would teach.

    Args:
        scenes: one or more GeoTIFF scenes.
        out: vector file to write (``.gpkg``, ``.geojson``, ``.fgb``, ``.shp``); None: only return.
        model: a loaded bundle, a shipped model name or a bundle folder.
        n: how many squares to suggest.
        size_m: square edge in metres; None: :func:`default_size_m`.
        aoi: polygons already labeled (complete labels inside), in any CRS.
        labels: labels already drawn (lines or polygons): squares holding any are not suggested.
        options: tile, overlap, block, batch, device and Dask settings (as ``geoccseg predict``).
        params: acquisition and selection settings.
        strategy: ``"acquisition"`` (the score), ``"coverage"`` (the most typical square of each kind
            not yet labeled, :func:`geoccseg.suggest.select.coverage`) or ``"random"`` (the baseline).
        seed: random seed of ``strategy="coverage"`` (its clustering) and ``"random"``.
        overwrite: replace an existing ``out``.
        progress: show progress bars.

    Returns:
        The chosen squares (fewer than ``n`` when fewer fit) and what was written.

    Raises:
        GeoccsegError: bad settings, an output that exists, cannot be written or is an input, a
            missing or damaged model, scene, AOI or labels file, an AOI that overlaps no scene,
            scenes where no square of ``size_m`` fits, all before any prediction.
    """
    start = time.perf_counter()
    paths = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    options, params = options or PredictOptions(), params or SuggestParams()
    check_request(paths, n, size_m, strategy, seed, options, params)
    bundle_path = model.path if isinstance(model, Bundle) else resolve_model(model)
    inputs = [*paths, *bundle_files(bundle_path), *[p for p in (aoi, labels) if p is not None]]
    if out is not None:
        out = check_vector_output(out, overwrite, example="areas.gpkg")
        check_not_input(out, inputs)
        check_vector_crs(out, paths[0])  # the areas are in the first scene's CRS
    if isinstance(model, Bundle):
        check_workers_read_the_same_model(model, options)
    bundle = copy.deepcopy(model) if isinstance(model, Bundle) else load_bundle(bundle_path)  # the caller's model keeps its mode
    device = None if options.scheduler is not None else resolve_device(options.device)  # a cluster's workers settle it
    thresholds = ConfidenceThresholds.from_meta(bundle.meta)
    opened = [open_scene_for(p, bundle.meta) for p in paths]
    for scene in opened[1:]:  # the squares are written in the first scene's CRS: found out now, not after the scoring
        reprojected(gpd.GeoSeries([scene.footprint], crs=scene.crs), opened[0].crs, what=f"scene {scene.path}")
    size_m = size_m if size_m is not None else default_size_m(bundle.meta, opened[0].pixel_size_m)
    regions = _labeled_regions(opened, aoi, labels)
    if aoi is not None and not any(r is not None and not r[0].is_empty for r in regions):
        raise GeoccsegError(f"AOI {aoi} does not overlap {'the scene' if len(paths) == 1 else 'any scene'}; check its location and CRS")
    grids = [_cell_grid(s, bundle.meta, size_m) for s in opened]
    if all(cells.rows < 2 or cells.cols < 2 for cells, _ in grids):
        raise GeoccsegError(f"no square of {size_m:g} m fits in {'the scene' if len(paths) == 1 else 'any scene'}; give a smaller --size-m")
    for scene, (cells, _) in zip(opened, grids):
        if cells.rows < 2 or cells.cols < 2:  # the others are scored: a small tile among large ones is told, not dropped unsaid
            log.warning("geoccseg: warning: no square of %g m fits in %s; it is not scored (a smaller --size-m would)", size_m, scene.path)
    per_scene = []
    file_names = [shown_name(p) for p in paths]  # of a presigned URL, not its signature
    names = [n if file_names.count(n) == 1 else shown_name(p, whole=True) for n, p in zip(file_names, paths)]  # tiles of one name: their paths
    with (
        scratch_dir(out) if out is not None else contextlib.nullcontext() as workdir,
        scoring_session(bundle, options, device, workdir if options.workers else None) as session,  # one cluster, one engine
    ):
        for index, (scene, (cells, scale), region) in enumerate(zip(opened, grids, regions)):
            if cells.rows < 2 or cells.cols < 2:
                continue
            near_px = params.near_px(bundle.meta.pixel_size_m or scene.pixel_size_m * scale)
            sums = score_cells(scene, bundle, cells, scale, thresholds, TermParams(params.likely_threshold, near_px), options, session,
                               progress=progress)
            per_scene.append(_candidates(scene, cells, scale, sums, region, params, index, names[index]))
    pooled = _pool(per_scene, CRS.from_user_input(opened[0].crs))
    spacing_m = params.spacing_m or size_m
    choice = choose(pooled.candidates, pooled.reference, n, params, spacing_m, strategy, seed)
    areas = _frame(pooled, choice, pooled.boxes.crs)
    if out is not None:
        write_vectors({"areas": areas}, out, overwrite=overwrite)
    return SuggestResult(areas, out, size_m, len(pooled.candidates), time.perf_counter() - start)


def check_request(paths: list, n: int, size_m: float | None, strategy: str, seed: int, options: PredictOptions, params: SuggestParams) -> None:
    """Refuse a request of :func:`suggest_areas` with bad settings, before any scene is read."""
    if not paths:
        raise GeoccsegError("give at least one scene")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise GeoccsegError(f"-n {n} is invalid; ask for 1 or more areas")
    if size_m is not None and not (math.isfinite(size_m) and size_m > 0):
        raise GeoccsegError(f"--size-m {size_m} is invalid; give the square's edge in metres, e.g. --size-m 200")
    check_strategy(strategy)
    check_seed(seed)
    options.check()
    params.check()
    if params.embedding != "model":
        raise GeoccsegError(f"embedding {params.embedding!r} is for photos; squares of scenes are compared by the model's embedding "
                            "(leave SuggestParams.embedding at 'model')")


def _labeled_regions(scenes: list[Scene], aoi: str | os.PathLike | None,
                     labels: str | os.PathLike | None) -> list[tuple[BaseGeometry, np.ndarray] | None]:
    """For each scene, (the AOI inside it, the labels that reach it) in its CRS; None without either.

    Both files are read once, and each scene takes only the features whose bounding boxes reach its
    footprint before anything is reprojected, repaired or dissolved: labels "of a country" given
    with 40 scene tiles were read, reprojected and unioned whole 40 times, then tested against
    every square as one geometry. The labels stay separate geometries (a hand-drawn bow tie made
    valid), which :func:`_candidates` finds through a tree.
    """
    if aoi is None and labels is None:
        return [None] * len(scenes)
    polygons = read_polygons(aoi) if aoi is not None else None
    if polygons is not None:
        dissolved(polygons, polygons.crs, aoi)  # an AOI of zero area is refused as a whole, once
    drawn = read_vector(labels, "labels").geometry if labels is not None else None
    regions = []
    for scene in scenes:
        area = shapely.Polygon()
        if polygons is not None and len(near := _reaching(polygons, scene)):
            with contextlib.suppress(GeoccsegError):  # only a sliver of it reaches this scene: none of its area
                area = dissolved(near, scene.crs, aoi).intersection(scene.footprint)
        here = shapely.make_valid(reprojected(_reaching(drawn, scene), scene.crs).values) if drawn is not None else np.array([])
        regions.append((area, here))
    return regions


def _reaching(shapes: gpd.GeoSeries | gpd.GeoDataFrame, scene: Scene) -> gpd.GeoSeries | gpd.GeoDataFrame:
    """The features of ``shapes`` (own CRS) whose bounding boxes reach the scene's footprint; all of
    them where the footprint reprojects to no finite place in their CRS.

    Raises:
        GeoccsegError: the scene and the shapes are in CRSs of which one is a local grid, with no
            place in the other (a pyproj traceback before)."""
    bounds = reprojected(gpd.GeoSeries([scene.footprint], crs=scene.crs), shapes.crs, what=f"scene {scene.path}").total_bounds
    if not np.isfinite(bounds).all():
        return shapes
    return reaching(shapes, bounds)


MIN_CELL_PX = 16
"""Smallest half-square in model pixels (squares of 32 px): smaller ones would hold no training
chip, and the cell sums of a large scene would take gigabytes (12 floats per cell)."""


def _cell_grid(scene: Scene, meta: BundleMeta, size_m: float) -> tuple[CellGrid, float]:
    """Cells of half a square over the scene's model grid, and the scale (scene pixels per model pixel)."""
    scale = model_scale(scene, meta.pixel_size_m)
    px_x_m, px_y_m = (v * scale for v in scene.pixel_size_xy_m)
    cell_h, cell_w = round(size_m / 2 / px_y_m), round(size_m / 2 / px_x_m)
    if min(cell_h, cell_w) < MIN_CELL_PX:  # memory and candidates grow with the scene's pixels / cell²
        raise GeoccsegError(f"--size-m {size_m:g} is too small for {scene.path.name} at the model's {max(px_x_m, px_y_m):.3g} m pixels; "
                            f"give at least {2 * MIN_CELL_PX * max(px_x_m, px_y_m):.3g} m ({2 * MIN_CELL_PX} pixels)")
    # whole model pixels only: the last, partial one (a scale that does not divide the scene) would let a
    # square of the last row or column reach up to a model pixel past the scene's edge
    return CellGrid.create(math.floor(scene.height / scale + 1e-6), math.floor(scene.width / scale + 1e-6), cell_h, cell_w), scale


def _candidates(scene: Scene, cells: CellGrid, scale: float, sums: np.ndarray, region, params: SuggestParams, index: int,
                name: str) -> _SceneCandidates:
    """The squares of one scene (named ``name`` in the ``scene`` column): their sums, polygons, and
    which are candidates or labeled reference."""
    ch, cw = cells.cell_h_px, cells.cell_w_px
    valid_share = (sums[0, :-1, :-1] + sums[0, 1:, :-1] + sums[0, :-1, 1:] + sums[0, 1:, 1:]).ravel() / (4 * ch * cw)
    # only squares with enough valid pixels get their sums added up and a polygon (of a large scene
    # mostly nodata, or at a small --size-m, most are not)
    enough = np.flatnonzero(valid_share >= params.min_valid_share)
    rows, cols = np.divmod(enough, cells.cols - 1)
    valid_share = valid_share[enough]
    flat = (sums[:, rows, cols] + sums[:, rows + 1, cols] + sums[:, rows, cols + 1] + sums[:, rows + 1, cols + 1]).T
    transform = scene.transform * Affine.scale(scale)
    x0, y0 = transform * (cols * cw, rows * ch)
    x1, y1 = transform * ((cols + 2) * cw, (rows + 2) * ch)
    boxes = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
    labeled = np.zeros(len(boxes), dtype=bool)
    reference = np.zeros(len(boxes), dtype=bool)
    if region is not None:
        area, drawn = region
        inside = np.zeros(len(boxes))
        if not area.is_empty:  # the share inside the AOI, computed only for the squares that touch it
            shapely.prepare(area)
            touch = np.flatnonzero(shapely.intersects(area, boxes))
            inside[touch] = shapely.area(shapely.intersection(boxes[touch], area)) / shapely.area(boxes[touch])
        holds = np.zeros(len(boxes), dtype=bool)
        holds[shapely.STRtree(drawn).query(boxes, predicate="intersects")[0]] = True  # squares that hold a label
        labeled = (inside > 1e-6) | holds
        reference = (inside >= 0.5) | holds
    keep = ~labeled
    n_valid = np.maximum(flat[:, 0:1], 1.0)
    parts = flat[:, 1:len(FEATURES)] / n_valid
    embedding = flat[:, len(FEATURES):] / n_valid
    px_x_m, px_y_m = (v * scale for v in scene.pixel_size_xy_m)
    centre_m = np.stack([(rows + 1) * ch * px_y_m, (cols + 1) * cw * px_x_m], axis=1)
    size = np.full(len(boxes), 2 * math.sqrt(ch * px_y_m * cw * px_x_m))
    return _SceneCandidates(
        Candidates(parts[keep], embedding[keep], np.full(int(keep.sum()), index), np.stack([rows, cols], 1)[keep], centre_m[keep]),
        embedding[reference], boxes[keep], valid_share[keep], size[keep], CRS.from_user_input(scene.crs), name,
    )


@dataclass
class _Pooled:
    candidates: Candidates
    reference: np.ndarray
    boxes: gpd.GeoSeries
    valid_share: np.ndarray
    size_m: np.ndarray
    scene: np.ndarray


def _pool(per_scene: list[_SceneCandidates], crs: CRS) -> _Pooled:
    """The candidates of every scene as one set; polygons in ``crs`` (the first scene's).

    With several scenes, square centres are placed in Earth-centred metres (EPSG:4978), or for tiles
    of one local grid (local coordinates, no place on the earth) in that grid, so that the spread is
    measured across scenes, and squares of scenes that overlap (or of a scene given twice) that
    share area are marked, so that no two chosen squares overlap.
    """
    boxes = gpd.GeoSeries(np.concatenate([gpd.GeoSeries(s.boxes, crs=s.crs).to_crs(crs).values for s in per_scene]), crs=crs)
    cat = lambda name: np.concatenate([getattr(s.candidates, name) for s in per_scene])  # noqa: E731
    group, centre_m, across = cat("group"), cat("centre_m"), None
    if len(per_scene) > 1 and len(boxes):
        across = _overlaps_across(boxes.values, group)
        centre = shapely.centroid(boxes.values)
        try:
            lonlat = gpd.GeoSeries(centre, crs=crs).to_crs(4326).values
        except pyproj.exceptions.ProjError:  # tiles of one local grid (scenes in others were refused): distances in it
            unit = CRS.from_user_input(crs).axis_info
            centre_m = np.stack([shapely.get_x(centre), shapely.get_y(centre)], axis=1) * (unit[0].unit_conversion_factor if unit else 1.0)
        else:
            x, y, z = pyproj.Transformer.from_crs(4326, 4978, always_xy=True).transform(
                shapely.get_x(lonlat), shapely.get_y(lonlat), np.zeros(len(lonlat)))
            centre_m = np.stack([x, y, z], axis=1)  # Earth-centred metres: straight-line distances, anywhere on Earth
    return _Pooled(
        Candidates(cat("parts"), cat("embedding"), group, cat("cell"), centre_m, across),
        np.concatenate([s.reference for s in per_scene]), boxes,
        np.concatenate([s.valid_share for s in per_scene]), np.concatenate([s.size_m for s in per_scene]),
        np.concatenate([np.full(len(s.candidates), s.name, dtype=object) for s in per_scene]),
    )


def _overlaps_across(boxes: np.ndarray, group: np.ndarray) -> scipy.sparse.csr_matrix:
    """Pairs of squares of different scenes that share more than a sliver (1e-6 of the smaller)."""
    left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    other = group[left] != group[right]
    left, right = left[other], right[other]
    shared = shapely.area(shapely.intersection(boxes[left], boxes[right]))
    real = shared > 1e-6 * np.minimum(shapely.area(boxes[left]), shapely.area(boxes[right]))
    n = len(boxes)
    return scipy.sparse.csr_matrix((np.ones(int(real.sum()), dtype=bool), (left[real], right[real])), shape=(n, n))


def _frame(pooled: _Pooled, choice, crs) -> gpd.GeoDataFrame:
    """The chosen squares as a GeoDataFrame with :data:`COLUMNS`."""
    i = choice.index
    parts = pooled.candidates.parts[i] if len(i) else np.zeros((0, len(PARTS)))
    frame = gpd.GeoDataFrame(
        {
            "rank": np.arange(1, len(i) + 1, dtype=np.int64), "score": choice.score, "acquisition": choice.acquisition,
            **{name: parts[:, k] for k, name in enumerate(PARTS)},
            "typicality": choice.typicality, "spread": choice.spread, "novelty": choice.novelty, "valid_share": pooled.valid_share[i],
            "size_m": pooled.size_m[i], "scene": pooled.scene[i].astype(str),
        },
        geometry=pooled.boxes.values[i] if len(i) else gpd.GeoSeries([], crs=crs).values, crs=crs,
    )
    frame.attrs["geometry_type"] = "Polygon"
    return frame
