"""Score a whole scene block by block into sums over cells, with bounded memory.

The model grid of a scene (the scene resampled to the model's pixel size, as in
:func:`geoccseg.inference.predict.predict_scene`) is cut into *cells* of half a candidate square
(:class:`CellGrid`); a square is 2 x 2 cells. Blocks of about ``block_px`` (whole cells, or parts
of a cell larger than that, :func:`block_spans`) are the tasks (:func:`score_block`): each reads
the pixels of every chip of the scene's global chip grid that touches the block (plus a halo of
``near_px`` for the neighbourhood of likely roads), blends them over the block and its halo alone
through :func:`geoccseg.inference.predict.blend_chips` with
:func:`~geoccseg.suggest.terms.scoring_engine`, so each pixel's values are exactly those of
whole-scene prediction, and returns only the sums of the per-pixel terms over its cells (or their
parts, which add up). Chips at block borders are computed by both neighbours (about 2 x tile /
block more work); in exchange no accumulator is written and the tasks are independent.

Tasks run in this process or on Dask exactly as prediction's blocks do (``workers``/``scheduler``
of :class:`~geoccseg.inference.predict.PredictOptions`), in one :func:`scoring_session` for all the
scenes of a run (one local cluster started, one existing cluster's workers probed); the result is
one array per scene of features x cell rows x cell columns (12 floats per cell of half a square):
no pixel of the scene is kept, so memory follows the number of squares, not of pixels.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from geoccseg.errors import GeoccsegError
from geoccseg.inference.blend import ChipGrid, blend_window
from geoccseg.inference.confidence import ConfidenceThresholds
from geoccseg.inference.cluster import settle_on_workers
from geoccseg.inference.predict import (
    GDAL_CACHE_BYTES,
    ModelRef,
    PredictOptions,
    _run_dask,
    _run_local,
    blend_chips,
    blocks_at_once,
    cached_engine,
    dask_client,
    model_ref,
    read_model_window,
    scene_norm,
    share_bundle,
    trim_heap,
)
from geoccseg.io.normalize import NormStats
from geoccseg.io.scene import Scene
from geoccseg.models import Bundle
from geoccseg.suggest.terms import FEATURES, EMBED_DIMS, TermParams, cell_features, n_channels, scoring_engine, settle_scoring

if TYPE_CHECKING:
    import distributed


@dataclass(frozen=True)
class CellGrid:
    """Cells over a model grid: whole cells from the top-left corner (a remainder at the bottom
    and right edges, under one cell, belongs to no cell).

    Attributes:
        cell_h_px: cell height in model pixels.
        cell_w_px: cell width in model pixels.
        rows: number of cell rows.
        cols: number of cell columns.
    """

    cell_h_px: int
    cell_w_px: int
    rows: int
    cols: int

    @classmethod
    def create(cls, height_px: int, width_px: int, cell_h_px: int, cell_w_px: int) -> CellGrid:
        """Cells of the given size over a ``height_px x width_px`` grid."""
        return cls(cell_h_px, cell_w_px, height_px // cell_h_px, width_px // cell_w_px)


@dataclass(frozen=True)
class ScoreJob:
    """One block of cells to score (small and picklable: no model, no pixels).

    Attributes:
        scene: the scene (re-opens its file in the worker).
        model: the model (:func:`~geoccseg.inference.predict.cached_model`).
        device: torch device string.
        grid: the scene's global chip grid (model pixels).
        cells: the cell grid.
        rows: (first, end) model-pixel rows of the block (:func:`block_spans`).
        cols: (first, end) model-pixel columns of the block.
        scale: scene pixels per model pixel.
        batch_size: chips per forward pass.
        thresholds: the model's confidence thresholds.
        params: per-pixel term settings.
        norm: the scene's own statistics for a per-image model; None: the bundle's.
        engine: the scoring engine's name, ``torch`` or ``onnx`` (:func:`~geoccseg.suggest.terms.scoring_engine`).
    """

    scene: Scene
    model: ModelRef
    device: str
    grid: ChipGrid
    cells: CellGrid
    rows: tuple[int, int]
    cols: tuple[int, int]
    scale: float
    batch_size: int
    thresholds: ConfidenceThresholds
    params: TermParams
    norm: NormStats | None = None
    engine: str = "torch"


@dataclass
class CellBlock:
    """Sums of the per-pixel features over the cells of one block (over their parts in the block,
    where it cuts cells: the sums of a cell's parts add up to the cell's).

    Attributes:
        row: first cell row the block reaches.
        col: first cell column the block reaches.
        sums: float64 (len(FEATURES) + EMBED_DIMS, rows, cols).
    """

    row: int
    col: int
    sums: np.ndarray


def block_spans(cells: int, cell_px: int, block_px: int) -> list[tuple[int, int]]:
    """(first, end) model pixels of the blocks along one axis: whole cells making about ``block_px``;
    a cell longer than ``block_px`` is cut into equal parts of at most that, so that a block's
    memory follows ``block_px`` whatever the square size (a 10,000-px cell, 1 km squares of a 10 cm
    model, was one block of some 12 GB)."""
    if cell_px <= block_px:
        per = max(1, round(block_px / cell_px))
        return [(r * cell_px, min(r + per, cells) * cell_px) for r in range(0, cells, per)]
    parts = math.ceil(cell_px / block_px)
    edges = [k * cell_px // parts for k in range(parts + 1)]
    return [(r * cell_px + a, r * cell_px + b) for r in range(cells) for a, b in zip(edges, edges[1:])]


def chips_touching(grid: ChipGrid, top: int, left: int, bottom: int, right: int) -> list[tuple[int, int]]:
    """Top-left corners (row_px, col_px) of the grid's chips that overlap a region (pixels, end exclusive)."""
    s, t = grid.stride_px, grid.tile_px
    rows, cols = grid.shape

    def span(start: int, end: int, count: int) -> range:
        first = max(0, (start - t) // s + 1)  # k s + t > start
        last = min(count - 1, (end - 1) // s)  # k s < end
        return range(first, last + 1)

    return [(r * s, c * s) for r in span(top, bottom, rows) for c in span(left, right, cols)]


def score_block(job: ScoreJob) -> CellBlock:
    """Score one block: blend the chips that touch it (with a halo) and sum the per-pixel terms over its
    cells; then hand the C heap's free pages back to the system (:func:`~geoccseg.inference.predict.trim_heap`)."""
    block = _score_block(job)
    trim_heap()
    return block


def _score_block(job: ScoreJob) -> CellBlock:
    engine, meta = cached_engine(job.model, job.device, job.engine, build=scoring_engine)
    ch, cw = job.cells.cell_h_px, job.cells.cell_w_px
    (top, bottom), (left, right) = job.rows, job.cols
    halo = job.params.near_px
    k_top, k_left = max(0, top - halo), max(0, left - halo)  # the cells and their halo: what is added up
    k_bottom, k_right = min(job.grid.height_px, bottom + halo), min(job.grid.width_px, right + halo)
    chips = chips_touching(job.grid, k_top, k_left, k_bottom, k_right)
    shapes = [job.grid.chip_shape(r, c) for r, c in chips]
    reg_top, reg_left = min(r for r, _ in chips), min(c for _, c in chips)
    reg_bottom = max(r + h for (r, _), (h, _) in zip(chips, shapes))
    reg_right = max(c + w for (_, c), (_, w) in zip(chips, shapes))
    window = Window(reg_left, reg_top, reg_right - reg_left, reg_bottom - reg_top)
    image, valid = read_model_window(job.scene, window, job.scale)
    relative = [(r - reg_top, c - reg_left, h, w) for (r, c), (h, w) in zip(chips, shapes)]
    n_classes = len(meta.classes)
    weighted, weight = blend_chips(
        engine, job.norm or meta.norm, image, valid, relative,
        blend_window(job.grid.tile_px, job.grid.overlap_px), job.batch_size, n_channels(n_classes),
        keep=(k_top - reg_top, k_left - reg_left, k_bottom - k_top, k_right - k_left),
    )
    del image, valid  # the features need the blend sums alone
    inside = (slice(top - k_top, bottom - k_top), slice(left - k_left, right - k_left))
    sums = cell_features(weighted, weight, n_classes, job.thresholds, job.params, (ch, cw), inside, (top % ch, left % cw))
    return CellBlock(top // ch, left // cw, sums)


@dataclass(frozen=True)
class ScoringSession:
    """Where the blocks of a run's scenes are scored (:func:`scoring_session`).

    Attributes:
        client: the Dask client, or None (this process).
        device: the device the blocks run on.
        engine: the scoring engine's name (:func:`~geoccseg.suggest.terms.settle_scoring`).
        ref: what the blocks name the model by (:func:`~geoccseg.inference.predict.model_ref`).
    """

    client: distributed.Client | None
    device: str
    engine: str
    ref: ModelRef


@contextlib.contextmanager
def scoring_session(bundle: Bundle, options: PredictOptions, device: str | None,
                    workdir: str | os.PathLike | None = None) -> Iterator[ScoringSession]:
    """Settle where and how every scene of a run is scored, once: the Dask client of
    ``options.workers`` (a local cluster started once, not per scene) or ``options.scheduler``
    (its workers probed once, :func:`~geoccseg.inference.cluster.settle_on_workers`), or none;
    the device and the scoring engine (the network exported once).

    Args:
        bundle: the loaded bundle.
        options: device, engine and Dask settings.
        device: the resolved device; None on an existing Dask cluster, whose workers settle it.
        workdir: scratch folder of a local Dask cluster; None: a temporary one.
    """
    settle = lambda device: settle_scoring(options.engine, bundle.model, device, bundle.meta)  # noqa: E731  (exported once, here)
    with (
        tempfile.TemporaryDirectory(prefix="geoccseg-suggest-") if workdir is None else contextlib.nullcontext(workdir) as scratch,
        dask_client(options.workers, options.scheduler, scratch) as client,
    ):
        if device is None:
            device, engine = settle_on_workers(client, options.device, options.engine, "fp32", settle)
        else:
            engine = settle(device)
        ref = model_ref(bundle)
        if client is None:
            share_bundle(bundle, device, ref)  # once for every scene (a copy of the model, its engine built once)
        yield ScoringSession(client, device, engine, ref)


def score_cells(
    scene: Scene,
    bundle: Bundle,
    cells: CellGrid,
    scale: float,
    thresholds: ConfidenceThresholds,
    params: TermParams,
    options: PredictOptions,
    session: ScoringSession,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Sums of the per-pixel terms over every cell of a scene, block by block.

    Args:
        scene: the opened scene (input bands of the model).
        bundle: the loaded bundle (its path is what Dask workers load).
        cells: the cell grid over the scene's model grid.
        scale: scene pixels per model pixel.
        thresholds: the model's confidence thresholds.
        params: per-pixel term settings.
        options: tile, overlap, block size (pixels, :func:`block_spans`), batch settings.
        session: where the blocks run, on which device and engine (:func:`scoring_session`).
        progress: show a progress bar over blocks.

    Returns:
        float64 (len(FEATURES) + EMBED_DIMS, cells.rows, cells.cols).
    """
    if cells.rows == 0 or cells.cols == 0:
        return np.zeros((len(FEATURES) + EMBED_DIMS, cells.rows, cells.cols))
    tile_px = options.scoring_tile_for(bundle.meta)
    grid = ChipGrid.create(math.ceil(scene.height / scale), math.ceil(scene.width / scale), tile_px, options.overlap_px, options.block_px)
    norm = scene_norm(scene, bundle.meta)
    client, device, engine, ref = session.client, session.device, session.engine, session.ref
    blocks = [(rows, cols) for rows in block_spans(cells.rows, cells.cell_h_px, options.block_px)
              for cols in block_spans(cells.cols, cells.cell_w_px, options.block_px)]
    sums = np.zeros((len(FEATURES) + EMBED_DIMS, cells.rows, cells.cols))
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES),
        tqdm(total=len(blocks), unit="block", desc=f"score {scene.path.name}", disable=not progress) as bar,
    ):
        jobs = [
            ScoreJob(scene, ref, device, grid, cells, rows, cols, scale, options.batch_for(tile_px, device), thresholds, params, norm, engine)
            for rows, cols in blocks
        ]
        if client is None:
            results = _run_local(jobs, threads=blocks_at_once(device), task=score_block)
        else:
            results = _run_dask(client, jobs, task=score_block)
        with contextlib.closing(results):
            for block in results:
                _, h, w = block.sums.shape
                sums[:, block.row:block.row + h, block.col:block.col + w] += block.sums  # parts of a cell add up
                bar.update()
    if not np.isfinite(sums).all():
        raise GeoccsegError(f"the model gave non-finite values on {scene.path}; check the bundle")
    return sums
