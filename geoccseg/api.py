"""The in-memory API for notebooks: probabilities as a lazy xarray, lines as GeoDataFrames.

``geoccseg.predict(scene)`` returns a Dask-backed :class:`xarray.DataArray` of class
probabilities (dims ``class``, ``y``, ``x``; CRS and transform through rioxarray's ``.rio``;
NaN where the scene has no data); no prediction runs until it is read (``.compute()``,
``.plot()``, ``.values``; an input DataArray itself is read at once, into memory), and no output
is written to disk (the onnx engine keeps its export of the model in the user cache,
``geoccseg cache``). ``geoccseg.vectorize(prob)`` turns
such an array (or a probability GeoTIFF) into one GeoDataFrame of lines per class.
``geoccseg.train`` and ``geoccseg.evaluate`` call the functions of the CLI's ``train`` and
``evaluate`` (:func:`geoccseg.train.train`, :func:`geoccseg.evaluate.evaluate`; see :mod:`geoccseg`).

These run the engine of ``geoccseg predict`` and ``geoccseg vectorize``: the same chip grid,
blocks (:func:`geoccseg.inference.predict.predict_block`), blending, valid-data mask
(:class:`geoccseg.io.scene.Scene`) and vectoriser; only the accumulation differs: one Dask task
per block, and one per output chunk adding up the blocks that overlap it, instead of an on-disk
accumulator.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import tempfile
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import dask.array as da
import dask.local
import dask.threaded
from dask.system import CPU_COUNT
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geoccseg.errors import GeoccsegError
from geoccseg.inference.array import predict_array
from geoccseg.inference.blend import ChipGrid
from geoccseg.inference.choices import DEFAULT_OVERLAP_PX
from geoccseg.inference.cog import provenance
from geoccseg.inference.engine import engine_label, settle_engine
from geoccseg.inference.pipeline import is_scene
from geoccseg.inference.predict import (
    BlockJob,
    BlockResult,
    PredictOptions,
    model_ref,
    model_scale,
    open_scene_for,
    predict_block,
    resolve_device,
    scene_norm,
    share_bundle,
)
from geoccseg.io.bundle import resolve_model
from geoccseg.io.probability import STATE_TAG, THRESHOLD_TAG, WEIGHTS_TAG
from geoccseg.models import Bundle, load_bundle
from geoccseg.vectorize import VectorizeParams, vectorize_raster
from geoccseg.vectorize.blocks import BLOCK_PX, check_probability_range

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["predict", "vectorize"]

PHOTO_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
"""Pixel coordinates of a photo as QGIS shows it (x = col + 0.5, y = -(row + 0.5) at pixel centres),
the convention of the crack lines of ``geoccseg predict`` on photos."""


def predict(
    scene: str | os.PathLike | xr.DataArray,
    model: str | os.PathLike | Bundle | None = None,
    *,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "fp32",
    tile_px: int | None = None,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    block_px: int = 2048,
    batch_size: int | None = None,
) -> xr.DataArray:
    """Class probabilities of a scene or photo, as a lazy, Dask-backed DataArray.

    Args:
        scene: a georeferenced GeoTIFF or VRT (a path, a URL or a GDAL virtual file such as
            ``/vsicurl/...``; convert other formats with ``gdal_translate``), an opened rioxarray
            DataArray (dims ``band, y, x`` or ``y, x``, with a CRS; its nodata value or NaN is
            nodata), or a photo (JPEG, PNG, BMP, a TIFF without CRS; its EXIF orientation is
            honoured); any other file is refused.
        model: a shipped model name (``road``, ``crack``), a bundle folder or a loaded bundle;
            None: ``road`` for scenes, ``crack`` for photos.
        device: ``auto``, ``cpu`` or ``cuda`` (mixed precision on CUDA).
        engine: ``auto``, ``torch``, ``onnx`` or ``openvino`` (:func:`geoccseg.inference.engine.settle_engine`;
            ``auto``: torch on CUDA, the faster one on the CPU, torch where the network cannot be exported).
        precision: ``fp32``, ``bf16`` (openvino or torch engine) or ``int8`` (onnx engine), on the CPU (experimental).
        tile_px: chip edge in model pixels; None: the bundle's training tile, at least 512
            (:meth:`geoccseg.inference.predict.PredictOptions.tile_for`).
        overlap_px: overlap of neighbouring chips in pixels.
        block_px: edge of a block in model pixels (one Dask task, one chunk of the result).
        batch_size: chips per forward pass; None: on the CPU 4 chips of 256 px, 1 of 512 px or
            more; on CUDA 8 of 512 px (:meth:`geoccseg.inference.predict.PredictOptions.batch_for`).

    Returns:
        float32 DataArray named ``probability`` with dims ``class`` (the model's foreground
        classes), ``y``, ``x`` (pixel centres), NaN where the input has no data. A scene's array
        carries its CRS and transform (``.rio.crs``, ``.rio.transform()``); when the model's pixel
        size differs from the scene's by more than 5 %, the grid is the model's (the scene's
        extent at the model's pixel size; ``geoccseg predict`` resamples it back to the scene's
        grid when it writes the COG). A photo's array is in pixel coordinates without a CRS.
        ``attrs`` hold the provenance (:func:`geoccseg.inference.cog.provenance`): ``model``,
        ``weights_sha256``, ``state_sha256``, ``geoccseg_version``, ``engine``, and the model's
        ``threshold`` when it has one (:func:`vectorize` draws lines at it).

        The array computes with the scheduler active when it is computed, with the model as it
        was when ``predict`` was called (a loaded bundle is copied: training it on afterwards
        does not change the array). This process holds one model at a time for its threads
        (Dask's default scheduler); the processes of a ``distributed`` cluster, and this one
        once another model has predicted here, load it from the bundle's folder, and refuse a
        folder rewritten since or holding other weights (a model changed in memory must be
        saved first, :func:`geoccseg.io.bundle.save_bundle`): compute an array before
        predicting with another model, or save the model. A DataArray input is copied into this
        process's GDAL memory, so its array computes only on threads or synchronously (under a
        ``distributed`` client, ``dask.config.set(scheduler="threads")`` around both calls).

    Raises:
        GeoccsegError: a missing or unreadable input, a scene without CRS or with bands the model
            does not have, bad tiling options, device or engine, a DataArray where the active
            scheduler runs tasks in other processes, before any computation; when
            computed, a bundle folder that has to be loaded again and was rewritten or holds
            other weights.
    """
    options = PredictOptions(tile_px=tile_px, overlap_px=overlap_px, block_px=block_px, batch_size=batch_size, device=device,
                             engine=engine, precision=precision)
    options.check()
    if isinstance(scene, xr.DataArray):
        return _predict_scene(_InMemoryRaster(scene), _bundle(model, "road"), options)
    if is_scene(scene) or not Path(scene).is_file():  # a missing file gets the scene reader's message
        return _predict_scene(str(scene), _bundle(model, "road"), options)
    from geoccseg.data.photos import find_photos

    (photo,) = find_photos([scene])  # the command line's rule: a .jp2 or .img is neither a scene nor a photo
    return _predict_photo(photo.resolve(), _bundle(model, "crack"), options)  # a Dask worker may run in another folder


def vectorize(
    prob: xr.DataArray | str | os.PathLike,
    *,
    params: VectorizeParams | None = None,
    classes: list[str] | None = None,
    block_px: int = BLOCK_PX,
    progress: bool = False,
) -> dict[str, gpd.GeoDataFrame]:
    """Lines of each class from probabilities: a DataArray of :func:`predict` or a probability GeoTIFF.

    Args:
        prob: a DataArray with dims ``class, y, x`` (or ``y, x``, one class named by its
            ``name``) holding probabilities in [0, 1], NaN as nodata, with a CRS and transform
            (``.rio``); or the path of a probability GeoTIFF (``geoccseg predict --prob-out``).
            Both are vectorised block by block as ``geoccseg vectorize`` does, in bounded memory:
            an array is first computed chunk by chunk in one Dask graph (each task of a lazy
            :func:`predict` array once, with Dask's threads) into a temporary float32 GeoTIFF (4
            bytes per pixel and class, in the system's temporary folder, ``TMPDIR``).
        params: vectoriser settings (lengths in metres); None for the defaults. A threshold of
            None (the default) is the model's own where the input records it
            (``attrs["threshold"]`` of :func:`predict`, the ``GEOCCSEG_THRESHOLD`` tag of a
            probability GeoTIFF), else 0.5, as ``geoccseg vectorize`` does.
        classes: the classes to vectorise; None for all.
        block_px: block edge in pixels of the vectoriser (and of the chunks an in-memory array
            is written in).
        progress: show a progress bar over the vectoriser's blocks.

    Returns:
        One GeoDataFrame of LineStrings per class, in the CRS of the input, with columns
        ``class``, ``length_m``, ``width_m``, ``probability``.

    Raises:
        GeoccsegError: an array without CRS or not in [0, 1], an unknown class, or any problem
            with the GeoTIFF (see :func:`geoccseg.vectorize.vectorize_raster`).
    """
    if not isinstance(prob, xr.DataArray):
        return vectorize_raster(prob, params=params, block_px=block_px, classes=classes, progress=progress)
    params = (params or VectorizeParams()).resolved(prob.attrs.get("threshold"))  # the model's, as predict() recorded it
    if prob.ndim == 2:  # one class: named by its scalar class coordinate (prob.sel(class=...)), else by the array's name
        named = "class" in prob.coords and prob["class"].ndim == 0
        name = str(prob["class"].item()) if named else str(prob.name or "road")
        prob = prob.drop_vars("class", errors="ignore").expand_dims({"class": [name]})
    if prob.dims != ("class", "y", "x"):
        raise GeoccsegError(f"prob must have dims ('class', 'y', 'x') or ('y', 'x'), got {prob.dims}")
    crs = prob.rio.crs
    if crs is None:
        raise GeoccsegError("prob has no CRS, so lengths in metres are unknown: set one with prob.rio.write_crs(...) for a "
                            "georeferenced array; a photo's crack lines come from geoccseg.inference.predict_photos "
                            "(`geoccseg predict PHOTO -o OUT_DIR`: cracks.gpkg in pixel coordinates)")
    names = [str(name) for name in prob["class"].values]
    wanted = names if classes is None else list(classes)
    missing = [name for name in wanted if name not in names]
    if missing:
        raise GeoccsegError(f"prob has no class {', '.join(missing)}; its classes are {', '.join(names)}")
    if isinstance(block_px, bool) or not isinstance(block_px, int) or block_px < 1:
        raise GeoccsegError(f"block_px must be a positive number of pixels, got {block_px!r}")
    with tempfile.TemporaryDirectory(prefix="geoccseg-vectorize-") as tmp:
        path = _write_float_raster(prob.sel({"class": wanted}), Path(tmp) / "probability.tif", block_px)
        return vectorize_raster(path, params=params, block_px=block_px, classes=wanted, progress=progress)


def _write_float_raster(prob: xr.DataArray, path: Path, block_px: int) -> Path:
    """Write a (class, y, x) probability DataArray as a float32 GeoTIFF (NaN nodata, bands named by
    class) chunk by chunk, from one Dask graph: a whole scene is never held, and every task of a
    lazy array (a :func:`predict` block feeds the chunks of two block rows) is computed once. An
    array that is not Dask-backed (in memory, or read lazily from a file) is cut into chunks of
    ``block_px``. Dask's threads compute it: the file is written from this process.

    Raises:
        GeoccsegError: values outside [0, 1] (found chunk by chunk, before the rest is computed),
            or the temporary folder cannot take the raster.
    """
    data = prob.data if isinstance(prob.data, da.Array) else prob.chunk({"y": block_px, "x": block_px}).data
    profile = {"driver": "GTiff", "width": prob.sizes["x"], "height": prob.sizes["y"], "count": prob.sizes["class"],
               "dtype": "float32", "crs": prob.rio.crs, "transform": prob.rio.transform(recalc=True), "nodata": float("nan"),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER"}
    try:
        with rasterio.open(path, "w", **profile) as dst:
            dst.descriptions = tuple(str(name) for name in prob["class"].values)
            writer = _ProbabilityWriter(dst)
            pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or CPU_COUNT, thread_name_prefix="geoccseg-store")  # Dask's count
            try:
                da.store(data, writer, lock=False, scheduler="threads", pool=pool)
            finally:
                # a failed chunk ends store() while the other threads still compute theirs (Dask does
                # not wait for them): they end before anything is closed, and none writes after
                pool.shutdown(wait=True, cancel_futures=True)
                writer.close()
    except (OSError, rasterio.errors.RasterioIOError) as exc:
        raise GeoccsegError(f"cannot write the temporary probability raster in {path.parent.parent} ({exc}); free space "
                            "there or point TMPDIR to a folder with room for 4 bytes per pixel and class") from None
    return path


class _ProbabilityWriter:
    """A :func:`dask.array.store` target writing (class, y, x) chunks into an open float32 raster,
    refusing values outside [0, 1] (NaN is nodata) as a probability GeoTIFF is refused.

    One chunk is written at a time, and none after :meth:`close`: when a chunk fails, Dask's threaded
    scheduler raises at once while other threads are still computing theirs, and a write into the
    raster closed meanwhile crashed the process (a segmentation fault in GDAL).
    """

    def __init__(self, dst: rasterio.io.DatasetWriter) -> None:
        self.dst = dst
        self.lock = threading.Lock()
        self.closed = False

    def __setitem__(self, key: tuple[slice, slice, slice], value: np.ndarray) -> None:
        _, rows, cols = key
        value = np.asarray(value, dtype=np.float32)
        check_probability_range(value, "prob", where=f" (in the chunk at row {rows.start}, column {cols.start})")
        with self.lock:
            if not self.closed:
                self.dst.write(value, window=Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))

    def close(self) -> None:
        """Take no more chunks (waits for the one being written)."""
        with self.lock:
            self.closed = True


# -- models and inputs -------------------------------------------------------------------------
def _bundle(model: str | os.PathLike | Bundle | None, default: str) -> Bundle:
    """A loaded bundle from a name, a folder or a bundle."""
    if isinstance(model, Bundle):  # the array stands for the model as it is now, not as a notebook trains it on
        return copy.deepcopy(model)
    return load_bundle(resolve_model(default if model is None else model))


def _provenance(bundle: Bundle, engine: str, state: str | None = None) -> dict[str, str | float]:
    """``attrs`` telling where probabilities come from: the probability COG's provenance tags
    (``state``: the weights' digest when the caller has it, :class:`~geoccseg.inference.predict.ModelRef`)."""
    tags = provenance(bundle, bundle.meta.threshold, engine=engine, state=state)
    names = {"GEOCCSEG_MODEL": "model", WEIGHTS_TAG: "weights_sha256", STATE_TAG: "state_sha256", "GEOCCSEG_VERSION": "geoccseg_version",
             "GEOCCSEG_ENGINE": "engine", THRESHOLD_TAG: "threshold"}
    attrs: dict[str, str | float] = {names[key]: value for key, value in tags.items() if key in names}
    if "threshold" in attrs:  # a number, as users compare probabilities with it
        attrs["threshold"] = float(attrs["threshold"])
    return attrs


class _InMemoryRaster:
    """A DataArray written as a GeoTIFF in GDAL's memory (``/vsimem/``) when :func:`predict` is
    called (a Dask-backed input is computed then), so that it is read by the one scene reader
    (bands, nodata, valid-data mask); freed when the last task that reads it, and the result's
    graph, are gone."""

    def __init__(self, array: xr.DataArray) -> None:
        _check_tasks_run_here()
        if array.rio.crs is None:
            raise GeoccsegError("the DataArray has no CRS; set one with array.rio.write_crs(...) (or predict a file)")
        if array.ndim == 2:
            array = array.expand_dims("band")
        if array.ndim != 3:
            raise GeoccsegError(f"the DataArray must have dims (band, y, x) or (y, x), got {array.dims}")
        self._file = MemoryFile()
        weakref.finalize(self, self._file.close)  # GDAL frees the copy only when it is closed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. rioxarray's note on a missing nodata value
            array.rio.to_raster(self._file.name, driver="GTiff", tiled=True, blockxsize=256, blockysize=256,  # not the source
                                compress="DEFLATE", **_photometric(array))  # file's blocks or lossy JPEG (its band colours, alpha included, stay)
        self.path = self._file.name

    def __str__(self) -> str:
        return self.path

    def __fspath__(self) -> str:
        return self.path

    def __reduce__(self):
        raise GeoccsegError(IN_MEMORY_ONLY)  # a cluster started after predict(): its tasks are sent to other processes


IN_MEMORY_ONLY = ("a DataArray is predicted from this process's memory, which the tasks of a Dask cluster or of the processes "
                  "scheduler cannot read; write it to a GeoTIFF (array.rio.to_raster('scene.tif')) and predict the file, or "
                  "predict and compute it under `with dask.config.set(scheduler='threads'):`")


def _check_tasks_run_here() -> None:
    """Refuse a DataArray input where the active Dask scheduler runs tasks in other processes (a
    ``distributed`` client, even with in-process workers, serialises them; the processes
    scheduler; a process pool): they cannot reach the ``/vsimem/`` copy, and computing failed in a
    serialisation traceback. Dask's threads, the synchronous scheduler and a thread pool given as
    the scheduler run them here."""
    try:
        get = dask.base.get_scheduler()
    except RuntimeError:  # an asynchronous distributed client: its tasks run elsewhere too
        raise GeoccsegError(IN_MEMORY_ONLY) from None
    if get is None or get in (dask.threaded.get, dask.local.get_sync):
        return
    pool = getattr(get.args[0], "__self__", None) if isinstance(get, functools.partial) and get.func is dask.local.get_async and get.args else None
    if not isinstance(pool, ThreadPoolExecutor):  # dask.config.set(scheduler=ThreadPoolExecutor(4))
        raise GeoccsegError(IN_MEMORY_ONLY)


def _photometric(array: xr.DataArray) -> dict[str, str]:
    """``photometric="RGB"`` for an array read from a YCbCr file (JPEG's storage of colour, which
    rioxarray carries into a copy's profile and GDAL allows only with JPEG), else nothing."""
    source = array.encoding.get("source")
    if not source or array.sizes.get("band") != 3:  # a band taken out of the file: not a colour image any more
        return {}
    try:
        with rasterio.open(source) as src:
            ycbcr = str(src.profile.get("photometric", "")).lower() == "ycbcr"
    except rasterio.errors.RasterioError:
        return {}
    return {"photometric": "RGB"} if ycbcr else {}


# -- scenes ------------------------------------------------------------------------------------
def _predict_scene(source: str | _InMemoryRaster, bundle: Bundle, options: PredictOptions) -> xr.DataArray:
    """The lazy probability array of a scene: one task per block, one per output chunk."""
    device = resolve_device(options.device)
    scene = open_scene_for(str(source), bundle.meta)
    scale = model_scale(scene, bundle.meta.pixel_size_m)
    tile_px = options.tile_for(bundle.meta)
    height, width = math.ceil(scene.height / scale), math.ceil(scene.width / scale)
    grid = ChipGrid.create(height, width, tile_px, options.overlap_px, options.block_px)
    ref = model_ref(bundle)
    share_bundle(bundle, device, ref)  # the lazy array computes with this model in memory, whatever its folder holds meanwhile
    engine = settle_engine(options.engine, device, bundle.model, bundle.meta, options.precision)  # exported now (onnx)
    n_classes = len(bundle.meta.classes)
    norm = scene_norm(scene, bundle.meta)
    results = {
        (block.row, block.col): dask.delayed(_block_task)(
            BlockJob(scene, ref, device, grid, block, scale, options.batch_for(tile_px), engine, options.precision, norm), source,
        )
        for block in grid.blocks()
    }
    rows, cols = grid.block_shape
    step = grid.block_px
    chunks = []
    for r in range(rows):
        row = []
        for c in range(cols):
            # the core of a block: its stride cells; the last row and column reach the grid's edge
            core = Window(c * step, r * step, step if c < cols - 1 else width - c * step, step if r < rows - 1 else height - r * step)
            parts = [results[(i, j)] for i in (r - 1, r) for j in (c - 1, c) if (i, j) in results]
            task = dask.delayed(_chunk_probabilities)(core, n_classes, *parts)
            row.append(da.from_delayed(task, shape=(n_classes, int(core.height), int(core.width)), dtype=np.float32))
        chunks.append(row)
    transform = scene.transform @ Affine.scale(scale)
    xs = transform.c + (np.arange(width) + 0.5) * transform.a
    ys = transform.f + (np.arange(height) + 0.5) * transform.e
    out = xr.DataArray(
        da.block(chunks), dims=("class", "y", "x"), coords={"class": list(bundle.meta.classes), "y": ys, "x": xs},
        name="probability", attrs=_provenance(bundle, engine_label(engine, options.precision), ref.state),
    )
    return out.rio.write_crs(scene.crs).rio.write_transform(transform).rio.write_nodata(np.nan, encoded=False)


def _block_task(job: BlockJob, source: str | _InMemoryRaster) -> BlockResult:
    """:func:`predict_block` (which runs as many blocks at a time as ``geoccseg predict`` does,
    :func:`~geoccseg.inference.predict.block_slot`, whatever number of threads Dask runs tasks on);
    ``source`` keeps an in-memory raster alive while tasks read it."""
    del source
    return predict_block(job)


def _chunk_probabilities(core: Window, n_classes: int, *parts: BlockResult) -> np.ndarray:
    """Probabilities over ``core`` (model-grid window) from the block results that overlap it."""
    top, left, h, w = int(core.row_off), int(core.col_off), int(core.height), int(core.width)
    weighted = np.zeros((n_classes, h, w), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)
    for part in parts:
        r0, c0 = max(top, part.row_px), max(left, part.col_px)
        r1 = min(top + h, part.row_px + part.weight.shape[0])
        c1 = min(left + w, part.col_px + part.weight.shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        src = (slice(r0 - part.row_px, r1 - part.row_px), slice(c0 - part.col_px, c1 - part.col_px))
        dst = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
        weighted[(slice(None), *dst)] += part.weighted[(slice(None), *src)]
        weight[dst] += part.weight[src]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = weighted / weight
    prob[:, weight <= 0] = np.nan
    return prob


# -- photos ------------------------------------------------------------------------------------
def _predict_photo(path: Path, bundle: Bundle, options: PredictOptions) -> xr.DataArray:
    """The lazy probability array of a photo, in pixel coordinates (one task)."""
    from geoccseg.data.photos import photo_size

    size = photo_size(path, exif_orientation=True)
    if size is None:
        raise GeoccsegError(f"cannot read photo {path.name}: not an image Pillow can open")
    width, height = size
    device = resolve_device(options.device)
    engine = settle_engine(options.engine, device, bundle.model, bundle.meta, options.precision)  # exported now (onnx)
    tile_px = options.tile_for(bundle.meta)
    task = dask.delayed(_photo_probabilities)(path, bundle, device, engine, options.precision, tile_px, options.overlap_px,
                                              options.batch_for(tile_px))
    n_classes = len(bundle.meta.classes)
    xs = PHOTO_TRANSFORM.c + (np.arange(width) + 0.5) * PHOTO_TRANSFORM.a
    ys = PHOTO_TRANSFORM.f + (np.arange(height) + 0.5) * PHOTO_TRANSFORM.e
    return xr.DataArray(
        da.from_delayed(task, shape=(n_classes, height, width), dtype=np.float32), dims=("class", "y", "x"),
        coords={"class": list(bundle.meta.classes), "y": ys, "x": xs}, name="probability",
        attrs=_provenance(bundle, engine_label(engine, options.precision)),
    )


def _photo_probabilities(
    path: Path, bundle: Bundle, device: str, engine: str, precision: str, tile_px: int, overlap_px: int, batch_size: int,
) -> np.ndarray:
    """Foreground probabilities of one photo, float32 (K, H, W)."""
    from geoccseg.data.photos import read_photo_valid

    image, valid = read_photo_valid(path, bands=len(bundle.meta.bands), exif_orientation=True)  # transparent: NaN
    prob = predict_array(bundle, image, valid, device=device, tile_px=tile_px, overlap_px=overlap_px, batch_size=batch_size, engine=engine,
                         precision=precision)
    return prob[1:]
