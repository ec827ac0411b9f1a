"""Probability rasters: the on-disk blend accumulator and the final Cloud-Optimised GeoTIFF.

The accumulator is a temporary, uncompressed, tiled (sparse) GeoTIFF on the model grid with one
float32 band of ``sum(w * p)`` per foreground class and a last band of ``sum(w)``. One writer
process adds block results into it (read-modify-write of the block's window), in any order.

The final pass streams over the scene grid window by window: divide, mark nodata where no valid
pixel contributed, resample back to the scene grid when the model ran at another pixel size
(bilinear), quantise, and write a tiled GeoTIFF; then overviews are built and the file is copied
with GDAL's COG driver to the destination through :func:`geoccseg.io.atomic.atomic_path`. A
temporary probability raster that only the vectoriser reads (``as_cog=False``) is that tiled
GeoTIFF itself: uncompressed, without overviews, the same values, mask and tags.

Output format (what the vectoriser reads): one band per foreground class, named by the class;
``uint8`` = ``round(p * 255)`` with nodata in an internal dataset mask, or ``float32`` with NaN
nodata; tiled, compressed (ZSTD, or DEFLATE where GDAL lacks ZSTD), with overviews, in the
scene's CRS and transform; marked with the dataset tag
:data:`geoccseg.io.probability.PROBABILITY_TAG` (its value is the sample type), by which the
vectoriser tells it from an image. ``float16`` is accepted as another name of ``float32``: GDAL
reads and writes GeoTIFF Float16 only from 3.11 on (earlier versions store half floats that every
reader sees as Float32), so a 32-bit float raster is what is written, and what readers see.

So that GIS shows probabilities and where they come from, ``uint8`` bands carry scale 1/255 and
offset 0 (QGIS and GDAL then read p in [0, 1]; the project's own readers decode the raw values, as
before), and the dataset carries the provenance tags of :func:`provenance`: model name, SHA-256 of
its weights, geoccseg version, the inference engine and, when lines were drawn from it, the
vectoriser's threshold.
"""

from __future__ import annotations

import functools
import math
import os
import uuid
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoccseg import __version__
from geoccseg.errors import GeoccsegError
from geoccseg.inference.choices import PROB_DTYPE_ALIASES, PROB_DTYPES
from geoccseg.io.atomic import atomic_path
from geoccseg.io.formats import GEOTIFF_SUFFIXES
from geoccseg.io.lazy import chunk_windows
from geoccseg.io.probability import PROBABILITY_TAG, STATE_TAG, THRESHOLD_TAG, UINT8_SCALE, WEIGHTS_TAG, encode_mask, encode_uint8
from geoccseg.io.scene import Scene
from geoccseg.models import Bundle
from geoccseg.models.bundle import state_sha256


def provenance(bundle: Bundle, threshold: float | None = None, engine: str | None = None, state: str | None = None) -> dict[str, str]:
    """Tags telling where probabilities (or lines drawn from them) come from.

    Args:
        bundle: the model that predicted them.
        threshold: the vectoriser's probability threshold (0-1) when lines were drawn; None: not given.
        engine: the inference engine that ran the model (``torch``, ``onnx``); None: not given.
        state: :func:`~geoccseg.models.bundle.state_sha256` of the weights that ran, taken when
            the run began (:class:`~geoccseg.inference.predict.ModelRef`); None: of ``bundle.model`` now.

    Returns:
        ``GEOCCSEG_MODEL`` (the bundle's folder name: ``road``, ``crack`` or the user's),
        ``GEOCCSEG_WEIGHTS_SHA256`` (the SHA-256 of the bundle's weights file, as ``geoccseg models``
        shows it, when the model that ran holds exactly those weights: left out for a model built
        or changed in memory), ``GEOCCSEG_STATE_SHA256`` (the weights that ran, as in memory:
        :func:`~geoccseg.models.bundle.state_sha256`), ``GEOCCSEG_VERSION``, with ``threshold``
        ``GEOCCSEG_THRESHOLD`` and with ``engine`` ``GEOCCSEG_ENGINE``.
    """
    tags = {"GEOCCSEG_MODEL": bundle.path.name, "GEOCCSEG_VERSION": __version__, STATE_TAG: state or state_sha256(bundle.model)}
    if bundle.weights_sha256 and tags[STATE_TAG] == bundle.loaded_state_sha256:
        tags[WEIGHTS_TAG] = bundle.weights_sha256
    if threshold is not None:
        tags[THRESHOLD_TAG] = f"{threshold:g}"
    if engine is not None:
        tags["GEOCCSEG_ENGINE"] = engine
    return tags


def prob_dtype_name(name: str) -> str:
    """The sample type written for ``name`` (one of :data:`PROB_DTYPES` or an alias).

    Raises:
        GeoccsegError: an unknown type.
    """
    if name in PROB_DTYPES:
        return name
    if name in PROB_DTYPE_ALIASES:
        return PROB_DTYPE_ALIASES[name]
    raise GeoccsegError(f"probability type {name!r} is not supported; use one of {', '.join(PROB_DTYPES)}")


def check_prob_suffix(path: str | os.PathLike) -> None:
    """Refuse a probability COG path whose extension is not a GeoTIFF's (:data:`~geoccseg.io.formats.GEOTIFF_SUFFIXES`).

    Raises:
        GeoccsegError: another extension (the file is a GeoTIFF whatever its name).
    """
    path = Path(path)
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise GeoccsegError(f"the probability raster {path} is a GeoTIFF: name it .tif or .tiff, e.g. {path.with_suffix('.tif')}")

COG_BLOCK_PX = 512
"""Tile edge of the probability COG (and of its staging file) in pixels."""

ACC_BLOCK_PX = 256
"""Tile edge of the accumulator in pixels."""


@functools.cache
def compression() -> str:
    """``"ZSTD"`` when this GDAL build has the codec, else ``"DEFLATE"``."""
    probe = f"/vsimem/geoccseg-zstd-probe-{uuid.uuid4().hex}.tif"  # two threads' first COGs probe at once
    try:
        with rasterio.open(
            probe, "w", driver="GTiff", width=1, height=1, count=1, dtype="uint8", compress="zstd",
            crs="EPSG:4326", transform=Affine.translation(0, 1) @ Affine.scale(1, -1),
        ):
            pass
        return "ZSTD"
    except Exception:  # GDAL reports a missing codec as an error of varying type
        return "DEFLATE"
    finally:
        if rasterio.shutil.exists(probe):
            rasterio.shutil.delete(probe)


class Accumulator:
    """Blend sums on disk: ``sum(w * p)`` per class and ``sum(w)`` over a raster grid.

    Args:
        path: the temporary GeoTIFF to create.
        num_classes: number of foreground classes C.
        height_px: grid height in pixels.
        width_px: grid width in pixels.
        crs: CRS of the grid.
        transform: affine transform of the grid (pixel -> CRS units).
    """

    def __init__(self, path: str | os.PathLike, num_classes: int, height_px: int, width_px: int, crs: CRS, transform: Affine) -> None:
        self._ds = rasterio.open(
            path, "w+", driver="GTiff", width=width_px, height=height_px, count=num_classes + 1, dtype="float32",
            crs=crs, transform=transform, tiled=True, blockxsize=ACC_BLOCK_PX, blockysize=ACC_BLOCK_PX,
            BIGTIFF="YES", SPARSE_OK=True,
        )

    def add(self, window: Window, weighted: np.ndarray, weight: np.ndarray) -> None:
        """Add ``weighted`` (C, h, w) and ``weight`` (h, w) into ``window`` (pixels, inside the grid)."""
        current = self._ds.read(window=window)
        current[:-1] += weighted
        current[-1] += weight
        self._ds.write(current, window=window)

    def probabilities(self, window: Window) -> np.ndarray:
        """Blended probabilities (C, h, w) float32 of a window; NaN where no weight (nodata)."""
        sums = self._ds.read(window=window)
        weight = sums[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = sums[:-1] / weight
        prob[:, weight <= 0] = np.nan
        return prob

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the grid in pixels."""
        return self._ds.height, self._ds.width

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> Accumulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lerp_axis(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at fractional indices ``coords`` (edges clamped)."""
    size = a.shape[axis]
    coords = np.clip(coords, 0, size - 1)
    lo = np.minimum(np.floor(coords).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = (coords - lo).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(coords)
    frac = frac.reshape(shape)
    return np.take(a, lo, axis=axis) * (1 - frac) + np.take(a, hi, axis=axis) * frac


def _lerp_valid(coarse: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of (C, h, w) ``coarse`` at fractional rows ``ys`` and columns ``xs``
    over its finite cells only: each output is the interpolation weights' average of the finite
    neighbours (NaN only where all four are NaN), so a valid scene pixel next to a model cell
    without prediction (the scene's edge, a nodata area) keeps the prediction of its other
    neighbours instead of turning into nodata."""
    finite = np.isfinite(coarse[:1]).astype(np.float32)
    sums = _lerp_axis(_lerp_axis(np.where(np.isfinite(coarse), coarse, 0), ys, axis=1), xs, axis=2)
    weight = _lerp_axis(_lerp_axis(finite, ys, axis=1), xs, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = sums / weight
    prob[:, weight[0] <= 1e-6] = np.nan
    return prob.astype(np.float32, copy=False)


def scene_probabilities(acc: Accumulator, scene: Scene, scale: float, window: Window) -> np.ndarray:
    """Blended probabilities on a window of the scene grid.

    Args:
        acc: the accumulator on the model grid.
        scene: the scene (for its valid mask when resampling).
        scale: scene pixels per model pixel (1.0: the model grid is the scene grid).
        window: scene-grid window (pixels).

    Returns:
        float32 (C, h, w), NaN where there is no prediction (nodata).
    """
    if scale == 1.0:
        return acc.probabilities(window)
    row0, col0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    # centre of scene pixel i lies at model-grid index (i + 0.5) / scale - 0.5
    ys = (np.arange(row0, row0 + h) + 0.5) / scale - 0.5
    xs = (np.arange(col0, col0 + w) + 0.5) / scale - 0.5
    height_m, width_m = acc.shape
    top, left = max(0, math.floor(ys[0])), max(0, math.floor(xs[0]))
    bottom, right = min(height_m, math.floor(ys[-1]) + 2), min(width_m, math.floor(xs[-1]) + 2)
    coarse = acc.probabilities(Window(left, top, right - left, bottom - top))
    prob = _lerp_valid(coarse, ys - top, xs - left)
    valid = scene.read(window)[1]
    prob[:, ~valid] = np.nan
    return prob


def overview_factors(height_px: int, width_px: int, block_px: int = COG_BLOCK_PX) -> list[int]:
    """Overview decimation factors 2, 4, ... until the coarsest level fits in one tile."""
    factors, factor = [], 2
    while max(height_px, width_px) / (factor // 2) > block_px:
        factors.append(factor)
        factor *= 2
    return factors


def write_probability_cog(
    acc: Accumulator,
    scene: Scene,
    scale: float,
    dest: str | os.PathLike,
    classes: list[str],
    workdir: str | os.PathLike,
    prob_dtype: str = "uint8",
    overwrite: bool = False,
    chunk_px: int = 2048,
    tags: dict[str, str] | None = None,
    as_cog: bool = True,
) -> Path:
    """Stream the accumulator into the probability COG on the scene grid.

    Args:
        acc: blend sums on the model grid.
        scene: the scene; the COG gets its CRS, transform and size.
        scale: scene pixels per model pixel (1.0: no resampling).
        dest: the COG to write (atomically).
        classes: foreground class names, one band each.
        workdir: folder for the staging GeoTIFF (removed by the caller).
        prob_dtype: ``"uint8"`` (internal mask nodata) or ``"float32"`` (NaN nodata); aliases in
            :data:`PROB_DTYPE_ALIASES`.
        overwrite: replace an existing ``dest``.
        chunk_px: edge of the windows streamed through memory, in pixels.
        tags: dataset tags to add, e.g. :func:`provenance`.
        as_cog: False: ``dest`` is the tiled GeoTIFF as written, without overviews or compression
            (a temporary raster that only the vectoriser reads: it skips the overviews and the
            compressed copy; measured a tie in time, 2026-12-06, and less written).

    Returns:
        ``dest`` as a Path.
    """
    prob_dtype = prob_dtype_name(prob_dtype)
    staging = Path(workdir) / "probability.tif"
    profile = dict(
        driver="GTiff", width=scene.width, height=scene.height, count=len(classes), crs=scene.crs,
        transform=scene.transform, tiled=True, blockxsize=COG_BLOCK_PX, blockysize=COG_BLOCK_PX, BIGTIFF="IF_SAFER",
    )
    if prob_dtype == "uint8":  # bands of classes, not colours: 3 or 4 byte bands were an RGB(A) image, the 4th class's alpha
        profile |= dict(dtype="uint8", photometric="MINISBLACK")
    else:
        profile |= dict(dtype="float32", nodata=float("nan"))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(staging, "w", **profile) as out:
            out.update_tags(**{PROBABILITY_TAG: prob_dtype}, **(tags or {}))
            for i, name in enumerate(classes, start=1):
                out.set_band_description(i, name)
            if prob_dtype == "uint8":
                out.scales = (UINT8_SCALE,) * len(classes)
                out.offsets = (0.0,) * len(classes)
            for row in chunk_windows(scene.height, scene.width, chunk_px):
                for window in row:
                    prob = scene_probabilities(acc, scene, scale, window)
                    valid = np.isfinite(prob).all(axis=0)
                    if prob_dtype == "uint8":
                        out.write(encode_uint8(prob), window=window)
                        out.write_mask(encode_mask(valid), window=window)
                    else:
                        prob[:, ~valid] = np.nan
                        out.write(prob, window=window)
            factors = overview_factors(scene.height, scene.width) if as_cog else []
            if factors:
                out.build_overviews(factors, Resampling.average)
    if not as_cog:
        with atomic_path(dest, overwrite=overwrite) as tmp:
            os.replace(staging, tmp)
        return Path(dest)
    return copy_as_cog(staging, dest, overwrite)


def copy_as_cog(staging: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy a finished tiled GeoTIFF with its overviews to ``dest`` as a Cloud-Optimised GeoTIFF,
    atomically: the compression (:func:`compression`), tiles and options of every COG of the project.

    Args:
        staging: tiled GeoTIFF (:data:`COG_BLOCK_PX` tiles) with its overviews built.
        dest: the COG to write.
        overwrite: replace an existing ``dest``.

    Returns:
        ``dest`` as a Path.
    """
    options = dict(COMPRESS=compression(), PREDICTOR="YES", BLOCKSIZE=COG_BLOCK_PX, OVERVIEWS="FORCE_USE_EXISTING", BIGTIFF="IF_SAFER",
                   NUM_THREADS="ALL_CPUS")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), atomic_path(dest, overwrite=overwrite) as tmp:
        rasterio.shutil.copy(staging, tmp, driver="COG", **options)
    return Path(dest)
