"""Block-wise vectorisation of probability GeoTIFFs larger than memory.

The raster steps (threshold, blob and hole cleaning, skeleton, distance transform) are local:
each block is read with a halo of ``halo_px`` pixels on every side, and contributes only the
skeleton pixels of its core. As long as the halo is wider than half the widest road (so that
thinning near the window's edge cannot reach the core) and ``min_blob_m2`` / ``max_hole_m2`` are
below ``halo_px`` pixels in area (see :mod:`geoccseg.vectorize.mask`; the halo is widened to that,
up to :data:`MAX_HALO_PX`, by :func:`cleaning_halo_px`), the cores hold exactly the skeleton of a
whole-scene run. The sparse pixels of all blocks are then vectorised together, once
(:func:`geoccseg.vectorize.lines.lines_from_skeleton`), so lines cross block borders without
breaks, duplicates or stubs. Memory: one block with its halo, plus the skeleton pixels.

Input: a GeoTIFF with one band per foreground class (band descriptions are the class names,
``class_1``, ``class_2``, ... where missing), either uint8 with ``round(p * 255)`` and nodata in
the dataset's mask, or floating point with p in [0, 1] and NaN as nodata: the probability raster
of ``geoccseg predict`` (marked with :data:`~geoccseg.io.probability.PROBABILITY_TAG`; its encoding is
:mod:`geoccseg.io.probability`), or one of another tool. Images are
refused: bands coloured red, green, blue, alpha, ... (:func:`check_probability_raster`), other
sample types, and floats outside [0, 1] (found while reading).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from pyproj import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from tqdm.auto import tqdm

from geoccseg.errors import GeoccsegError
from geoccseg.io.formats import IMAGE_SUFFIXES
from geoccseg.io.probability import CLASS_MAP_MAX, PROBABILITY_TAG, THRESHOLD_TAG, parse_threshold, probabilities, refuse_confidence
from geoccseg.io.scene import is_gdal_path, open_raster, readable
from geoccseg.vectorize.lines import lines_from_skeleton, scene_pixel_size_m
from geoccseg.vectorize.params import VectorizeParams
from geoccseg.vectorize.skeleton import SkeletonPixels, skeleton_pixels

log = logging.getLogger(__name__)

def recorded_threshold(path: str | os.PathLike) -> float | None:
    """The model's threshold that ``geoccseg predict`` recorded in a probability raster, or None."""
    try:
        with open_raster(path) as ds:
            return tagged_threshold(ds)
    except RasterioIOError:
        return None


def tagged_threshold(ds: rasterio.DatasetReader) -> float | None:
    """The model's threshold recorded in an opened probability raster's tags, or None."""
    return parse_threshold(ds.tags().get(THRESHOLD_TAG))


RANGE_TOLERANCE = 1e-3
"""Float probabilities may stray this far outside [0, 1] (rounding in resampling) and still be read."""

_EXPECTED = (
    "expected the probability raster of `geoccseg predict --prob-out`, or one band per class "
    "of probabilities (float 0-1 with NaN nodata, or uint8 0-255)"
)


BLOCK_PX = 4096
"""Default block edge of the vectoriser, pixels of the probability raster."""

MIN_LINE_BLOCK_PX = 1024
"""Smallest block :func:`line_block_px` gives: each block is read with a halo of 128 px or more,
so smaller blocks read and skeletonise the scene several times over."""


def line_block_px(predict_block_px: int) -> int:
    """The vectoriser's block edge after a prediction in blocks of ``predict_block_px``: twice it,
    within [:data:`MIN_LINE_BLOCK_PX`, :data:`BLOCK_PX`] pixels of the probability raster (the
    default prediction block, 2048, gives the default 4096), so that a smaller ``--block-px``
    bounds the vectoriser's memory too."""
    return int(min(BLOCK_PX, max(MIN_LINE_BLOCK_PX, 2 * predict_block_px)))


def vectorize_raster(
    path: str | os.PathLike,
    *,
    params: VectorizeParams | None = None,
    block_px: int = BLOCK_PX,
    halo_px: int = 128,
    classes: list[str] | None = None,
    progress: bool = True,
) -> dict[str, gpd.GeoDataFrame]:
    """Vectorise a probability GeoTIFF block by block.

    Args:
        path: probability GeoTIFF (one band per foreground class): a file, or a URL or GDAL
            virtual file (``https://...``, ``/vsicurl/...``) given as a string.
        params: vectoriser settings (lengths in metres); None for the defaults. A threshold of
            None is the one ``geoccseg predict`` recorded in the raster (the model's), else 0.5.
        block_px: side of a block (pixels), without its halo.
        halo_px: pixels read around each block (pixels).
        classes: names of the classes (bands) to vectorise; None for all.
        progress: show a progress bar over the blocks.

    Returns:
        One GeoDataFrame of lines per class, in the raster's CRS, with columns ``class``,
        ``length_m``, ``width_m``, ``probability`` and ``geometry``.

    Raises:
        GeoccsegError: if the file is missing, not a raster, has no CRS, an unsupported data
            type, or lacks a requested class.
    """
    remote = is_gdal_path(path)
    path = os.fspath(path) if remote else Path(path)  # messages show a URL as given
    if block_px < 1 or halo_px < 0:
        raise GeoccsegError(f"block_px must be >= 1 and halo_px >= 0, got {block_px} and {halo_px}")
    if not remote and not path.exists():
        raise GeoccsegError(f"{path} does not exist; pass the probability GeoTIFF written by prediction")
    if not remote and not path.is_file():
        raise GeoccsegError(f"{path} is a folder; pass the probability GeoTIFF written by prediction")
    try:
        src = open_raster(path)
    except RasterioIOError as exc:
        if remote:
            raise GeoccsegError(f"{path} cannot be opened ({exc}); check the address and that its server answers range requests") from None
        raise GeoccsegError(f"{path} is not a raster that can be read ({exc}); pass a probability GeoTIFF") from None
    name = Path(path).name
    with src:
        if src.crs is None:
            if PROBABILITY_TAG in src.tags() or Path(name).suffix.lower() in IMAGE_SUFFIXES:  # a photo's: lines in pixels
                raise GeoccsegError(f"{path} has no CRS: a photo's probabilities, whose crack lines come from `geoccseg predict "
                                    "PHOTO -o OUT_DIR` (cracks.gpkg, in the photo's pixel coordinates)")
            raise GeoccsegError(f"{path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32611 {name})")
        if src.transform.is_identity:  # a CRS written without a geotransform: lines at (0, 0), upside down
            raise GeoccsegError(f"{path} has a CRS but no georeferencing (identity transform); georeference it first, e.g. "
                                f"with gdal_translate -a_ullr")
        dtype = check_probability_raster(src, path)
        names = band_classes(src)
        wanted = names if classes is None else list(classes)
        if not wanted:
            raise GeoccsegError("no classes to vectorise; pass class names or None for all")
        missing = [name for name in wanted if name not in names]
        if missing:
            raise GeoccsegError(f"{path} has no class {', '.join(missing)}; its classes are {', '.join(names)}")
        bands = [names.index(name) + 1 for name in wanted]
        crs = CRS.from_wkt(src.crs.to_wkt())
        pixel_size_m = scene_pixel_size_m(crs, src.transform, src.height, src.width)
        params = (params or VectorizeParams()).resolved(tagged_threshold(src))
        halo_px = cleaning_halo_px(halo_px, params, pixel_size_m)
        if max(src.height, src.width) > block_px and halo_px < _cleaning_span_px(params, pixel_size_m):
            log.warning("geoccseg: note: at %.2g m pixels, holes under %g m² and blobs under %g m² that are longer than %.0f m "
                        "and cross a border of the %d-px blocks may be cleaned unlike in one block (lines that differ there); "
                        "fewer, larger blocks (--block-px of geoccseg vectorize, or of predict) leave fewer borders", min(pixel_size_m), params.max_hole_m2, params.min_blob_m2,
                        halo_px * min(pixel_size_m), block_px)

        parts: dict[str, list[SkeletonPixels]] = {name: [] for name in wanted}
        blocks = list(_blocks(src.height, src.width, block_px, halo_px))
        if dtype != np.uint8:  # a raster of other values shows it in its first block: say so before any work
            first = blocks[0][0]
            with readable(path):
                first_data, first_valid = src.read(bands, window=first), src.read_masks(bands, window=first) > 0
            check_probability_range(first_data, str(path), valid=first_valid, fix=f"; {_EXPECTED}")
        top = 0  # largest uint8 value read
        for window, core, open_edges in tqdm(blocks, desc=f"vectorise {name}", unit="block", disable=not progress):
            with readable(path):
                data = src.read(bands, window=window)
                valid = src.read_masks(bands, window=window) > 0
            if dtype == np.uint8:
                top = max(top, int(np.max(data, where=valid, initial=0)))  # nodata (a 255 collar) is no value of the map
            prob = probabilities(data)
            if dtype != np.uint8:
                check_probability_range(prob, str(path), valid=valid, fix=f"; {_EXPECTED}")
            for k, name in enumerate(wanted):
                parts[name].append(
                    skeleton_pixels(
                        prob[k], valid[k], params, pixel_size_m,
                        core=core, offset_px=(window.row_off, window.col_off), open_edges=open_edges,
                    )
                )
        if dtype == np.uint8 and top == 1 and PROBABILITY_TAG not in src.tags():
            # uint8 probabilities are value / 255: a 0/1 mask of another tool reads as "no road anywhere"
            raise GeoccsegError(f"{path} holds only the values 0 and 1, a 0/1 mask rather than probabilities (uint8 "
                                f"0-255); rescale it to 0/255 first, e.g. gdal_calc.py -A {Path(path).name} --calc \"A*255\" "
                                "--outfile mask255.tif")
        if dtype == np.uint8 and 1 < top < round(params.threshold * 255) and PROBABILITY_TAG not in src.tags():
            # not refused: another tool's probabilities of a scene without roads look the same
            kind = ("a class map (0 background, 1 road, ...): make the class to draw 255 and the rest 0 first, e.g. "
                    f"gdal_calc.py -A {Path(path).name} --calc \"(A==1)*255\" --outfile road255.tif") if top <= CLASS_MAP_MAX else \
                "percentages (0-100): rescale them to 0-255 first"
            log.warning("geoccseg: warning: %s holds values up to %d, probabilities of at most %.2f (uint8 / 255), under the "
                        "threshold %.2f: no line is drawn; if it holds %s", path, top, top / 255, params.threshold, kind)
        return {
            name: lines_from_skeleton(
                SkeletonPixels.concat(parts[name]),
                transform=src.transform, crs=crs, pixel_size_m=pixel_size_m, class_name=name, params=params,
            )
            for name in wanted
        }


MAX_HALO_PX = 1024
"""Largest halo :func:`cleaning_halo_px` widens to (a block of 4096 px then reads 6144 px a side)."""


def cleaning_halo_px(halo_px: int, params: VectorizeParams, pixel_size_m: tuple[float, float]) -> int:
    """``halo_px`` widened so that every blob smaller than ``min_blob_m2`` and every hole smaller
    than ``max_hole_m2`` that touches a block's core lies whole inside its window (an 8-connected
    region of N pixels spans at most N), as the whole-scene run sees it; at most :data:`MAX_HALO_PX`.
    At 1 m the defaults need 50 px; at 0.3 m (SpaceNet) 556: with 128 a hole of 27 m² between two
    carriageways that a seam crossed was left open, and gave two lines instead of one."""
    return max(halo_px, min(MAX_HALO_PX, _cleaning_span_px(params, pixel_size_m)))


def _cleaning_span_px(params: VectorizeParams, pixel_size_m: tuple[float, float]) -> int:
    """The longest span in pixels of a blob or hole small enough to be cleaned (one pixel more)."""
    span = max(params.min_blob_m2, params.max_hole_m2) / (pixel_size_m[0] * pixel_size_m[1])
    return int(np.ceil(min(span, MAX_HALO_PX))) + 1  # a huge finite area overflows to inf in the division


def check_probability_raster(src: rasterio.DatasetReader, path: str | os.PathLike) -> np.dtype:
    """Refuse a raster that does not hold probabilities, from its header: another sample type than
    uint8 or float, or bands coloured as an image (red, green, blue, alpha, palette, ...) in a
    raster not marked with :data:`PROBABILITY_TAG`.

    Returns:
        The sample type of the bands.

    Raises:
        GeoccsegError: what was found and what is expected.
    """
    refuse_confidence(src.tags(), path)
    dtypes = sorted(set(src.dtypes))
    dtype = np.dtype(dtypes[0])
    if len(dtypes) > 1 or (dtype != np.uint8 and not np.issubdtype(dtype, np.floating)):
        raise GeoccsegError(f"{path} holds {src.count} band(s) of {', '.join(dtypes)}, not probabilities; {_EXPECTED}")
    colours = [c.name for c in src.colorinterp]
    if PROBABILITY_TAG not in src.tags() and any(c not in (ColorInterp.gray, ColorInterp.undefined) for c in src.colorinterp):
        raise GeoccsegError(f"{path} holds {src.count} {dtype} band(s) coloured {', '.join(colours)}: an image, not probabilities; {_EXPECTED}")
    return dtype


def check_probability_range(
    values: np.ndarray, name: str, *, valid: np.ndarray | None = None, where: str = "", fix: str = ""
) -> None:
    """Refuse probabilities more than :data:`RANGE_TOLERANCE` outside [0, 1], naming ``name``.

    NaN is nodata and left out, as are the pixels ``valid`` marks False; an infinity is out of
    range. Values from 0 to 255 are taken for an unscaled uint8 map (above 1.5, none negative) and
    the message says how to scale it. The values are not copied (one boolean mask at most).

    Args:
        values: the probabilities (any shape) to check.
        name: what holds them, for the message (a path, ``prob``).
        valid: pixels to check, the shape of ``values``; None: all.
        where: where in ``name`` they come from, written after the range (`` (in the chunk ...)``).
        fix: what to do, appended to the message (``; ...``).
    """
    values = np.asarray(values)
    values = values.view(np.uint8) if values.dtype == bool else values
    keep = None if valid is None else np.asarray(valid, dtype=bool)
    floating = np.issubdtype(values.dtype, np.floating)
    if floating:
        keep = ~np.isnan(values) if keep is None else keep & ~np.isnan(values)
    if keep is not None and not keep.any() or not values.size:
        return
    if keep is None:
        low, high = float(values.min()), float(values.max())
    else:
        top, bottom = (np.inf, -np.inf) if floating else (np.iinfo(values.dtype).max, np.iinfo(values.dtype).min)
        low, high = float(np.min(values, where=keep, initial=top)), float(np.max(values, where=keep, initial=bottom))
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = "; scale a uint8 map (0-255) by 1/255" if 1.5 < high < np.inf and low >= -RANGE_TOLERANCE else ""
        raise GeoccsegError(f"{name} holds values from {low:g} to {high:g}{where}, not probabilities in [0, 1]{hint}{fix}")


def band_classes(src: rasterio.DatasetReader) -> list[str]:
    """Class name of each band: its description, or ``class_<band number>`` where missing."""
    names = [desc or f"class_{i}" for i, desc in enumerate(src.descriptions, start=1)]
    if len(set(names)) != len(names):
        raise GeoccsegError(f"{src.name} has repeated band descriptions {names}; give each class band its own name")
    return names


def _blocks(
    height_px: int, width_px: int, block_px: int, halo_px: int
) -> Iterator[tuple[Window, tuple[slice, slice], tuple[bool, bool, bool, bool]]]:
    """Windows with halo, the core inside each (window pixels), and which window edges are open."""
    for row0 in range(0, height_px, block_px):
        for col0 in range(0, width_px, block_px):
            row1, col1 = min(row0 + block_px, height_px), min(col0 + block_px, width_px)
            top, left = max(row0 - halo_px, 0), max(col0 - halo_px, 0)
            bottom, right = min(row1 + halo_px, height_px), min(col1 + halo_px, width_px)
            window = Window(left, top, right - left, bottom - top)
            core = (slice(row0 - top, row1 - top), slice(col0 - left, col1 - left))
            yield window, core, (top > 0, bottom < height_px, left > 0, right < width_px)
