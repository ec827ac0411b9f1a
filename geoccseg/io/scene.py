"""Open a GeoTIFF scene: band selection, CRS checks, valid-data mask and windowed reads.

A :class:`Scene` is the one reader of imagery in the project: training chips, whole-scene
statistics and block-wise prediction all read pixels through it, so they see the same bands, the
same valid-data mask and the same resampling.

Valid data comes from GDAL's mask bands, which cover the three ways a GeoTIFF marks missing pixels:
a nodata value, an alpha band, or an internal (``.msk``-style) mask. Non-finite floats are invalid
too. An alpha band is never used as an input band.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from geoccseg.errors import GeoccsegError
from geoccseg.quiet import ignored_warnings
from geoccseg.io.units import mean_pixel_size_m, pixel_size_m

log = logging.getLogger(__name__)

try:
    import resource  # imported now: at the open-file limit, importing it would need a file too
except ImportError:  # Windows
    resource = None

SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}


@dataclass
class Scene:
    """A georeferenced raster scene, opened lazily.

    Attributes:
        path: file path.
        bands: selected 1-based band indices, the model's input channels in this order.
        crs: coordinate reference system of the scene.
        transform: affine transform (pixel -> CRS units) of the native grid.
        width: width in pixels.
        height: height in pixels.
        dtype: data type of the selected bands.
        mask_kind: how invalid pixels are marked: ``"nodata"``, ``"alpha"``, ``"internal"`` or ``"none"``.
        band_count: number of bands in the file.
        nodata: the file's nodata value (its first band's).
        shared_nodata: the selected bands are one image's (one band, or a colour image's) with
            the same nodata value: a pixel is then nodata where every band holds it
            (:func:`valid_pixels`), not where one does.
        source: the name GDAL opens: a URL exactly as given (it keeps its ``//``, which ``path`` as a
            Path folds), a file as its absolute path (a Dask worker started in another folder
            opens the same file); empty: ``path``.
    """

    path: Path
    bands: tuple[int, ...]
    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    dtype: str
    mask_kind: str
    band_count: int
    nodata: float | None = None
    shared_nodata: bool = False
    source: str = ""
    _threads: threading.local | None = field(default=None, repr=False, compare=False)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in CRS units."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    @property
    def footprint(self) -> Polygon:
        """The scene's bounding box as a polygon in its CRS."""
        return box(*self.bounds)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of the scene in CRS units."""
        xmin, ymin, xmax, ymax = self.bounds
        return (xmin + xmax) / 2, (ymin + ymax) / 2

    @property
    def res(self) -> tuple[float, float]:
        """(x, y) pixel size in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def pixel_size_m(self) -> float:
        """Mean pixel size in metres, measured at the scene centre."""
        return mean_pixel_size_m(self.crs, self.transform, self.centre)

    @property
    def pixel_size_xy_m(self) -> tuple[float, float]:
        """(x, y) pixel size in metres at the scene centre."""
        return pixel_size_m(self.crs, self.transform, self.centre)

    # -- pixels -----------------------------------------------------------------------------
    @property
    def dataset(self) -> rasterio.io.DatasetReader:
        """The open rasterio dataset of the calling thread in this process.

        GDAL handles must not be shared between threads, so each thread (Dask workers, DataLoader
        workers after pickling) opens its own; nor between processes: a forked process (a
        DataLoader worker on Linux) inherits the parent's handle, whose file offset it would share
        with its siblings, and their reads would interleave (measured: TIFF strips that fail to
        decode). It opens its own too.
        """
        local = self._local
        ds = getattr(local, "dataset", None)
        if ds is None or ds.closed or getattr(local, "pid", None) != os.getpid():
            ds = self._set_dataset(open_raster(self.source or self.path))
        return ds

    def _set_dataset(self, ds: rasterio.io.DatasetReader) -> rasterio.io.DatasetReader:
        local = self._local
        local.dataset, local.pid = ds, os.getpid()
        return ds

    @property
    def _local(self) -> threading.local:
        if self._threads is None:
            self._threads = threading.local()
        return self._threads

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_threads"] = None
        return state

    def window_for_bounds(self, bounds: tuple[float, float, float, float]) -> Window:
        """Pixel window of the native grid covering ``bounds`` (CRS units), snapped to whole pixels."""
        win = rasterio.windows.from_bounds(*bounds, transform=self.transform)
        return Window(round(win.col_off), round(win.row_off), round(win.width), round(win.height))

    def read(
        self,
        window: Window | None = None,
        out_shape: tuple[int, int] | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read the selected bands and the valid-data mask.

        Pixels of ``window`` outside the scene read as invalid, so chips at the scene border keep
        their size. Output pixels are cells of one grid (``window`` cut into ``out_shape``), each
        read from the scene pixels under it, so a pixel reads the same in any window that holds it:
        a window across the scene's edge is read as its parts inside the scene (GDAL's boundless
        reads resample through a VRT, whose fractional placement GDAL 3.12 rounds differently
        from plain reads). A cell across the edge is read from its part inside the scene and is
        valid when its centre is.

        Args:
            window: native-grid window (pixels); the whole scene when None.
            out_shape: (height, width) in pixels to resample to; the window's size when None.
            resampling: resampling of the image bands (the mask always uses nearest).

        Returns:
            ``image`` float32 array (C, H, W) in the file's units, 0 where invalid, and ``valid``
            bool array (H, W).
        """
        image, valid = self._read(window, out_shape, resampling)
        image[:, ~valid] = 0
        return image, valid

    def read_valid(self, window: Window | None = None, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """The valid-data mask of :meth:`read`: a cheap look at how much of a window holds data,
        from the file's masks alone, and the bands of a float scene (NaN is missing data there,
        declared or not: chips and label counts took it for data that training then left out).

        Returns:
            bool array (H, W).
        """
        return self._read(window, out_shape, None)[1]

    def _read(self, window: Window | None, out_shape: tuple[int, int] | None,
              resampling: Resampling | None) -> tuple[np.ndarray | None, np.ndarray]:
        """:meth:`read` run by run (the image too unless ``resampling`` is None), invalid pixels not zeroed."""
        window = window or Window(0, 0, self.width, self.height)
        shape = out_shape or (int(window.height), int(window.width))
        image = np.zeros((len(self.bands), *shape), dtype=np.float32) if resampling is not None else None
        valid = np.zeros(shape, dtype=bool)
        rows = _cells_inside(window.row_off, window.height, shape[0], self.height)
        cols = _cells_inside(window.col_off, window.width, shape[1], self.width)
        for (r0, r1), (top, bottom), centre_rows in rows:
            for (c0, c1), (left, right), centre_cols in cols:
                part, ok = self._read_inside(Window(left, top, right - left, bottom - top), (r1 - r0, c1 - c0), resampling)
                if image is not None:
                    image[:, r0:r1, c0:c1] = part
                valid[r0:r1, c0:c1] = ok & centre_rows[:, None] & centre_cols[None, :]
        return image, valid

    def _read_inside(self, window: Window, shape: tuple[int, int],
                     resampling: Resampling | None) -> tuple[np.ndarray | None, np.ndarray]:
        """Plain read of a window inside the scene: image float32 (C, H, W), or None without
        ``resampling``, and valid bool (H, W)."""
        with readable(self.source or self.path):  # the open too: a thread's first read opens its own handle
            ds = self.dataset
            valid = valid_pixels(ds.read_masks(list(self.bands), window=window, out_shape=(len(self.bands), *shape),
                                               resampling=Resampling.nearest), self.shared_nodata)
            if resampling is None and np.dtype(self.dtype).kind != "f":  # no NaN to look for
                return None, valid
            image = ds.read(list(self.bands), window=window, out_shape=(len(self.bands), *shape),
                            resampling=resampling or Resampling.nearest, out_dtype="float32")
        return image if resampling is not None else None, valid & np.all(np.isfinite(image), axis=0)

    def close(self) -> None:
        """Close the calling thread's file handle (one this process opened)."""
        ds = getattr(self._local, "dataset", None)
        if ds is not None and getattr(self._local, "pid", None) == os.getpid():
            ds.close()


def _cells_inside(
    offset: float, length: float, cells: int, size: int,
) -> list[tuple[tuple[int, int], tuple[float, float], np.ndarray]]:
    """Along one axis, the runs of output cells that lie over the scene, and where to read them.

    Cell ``i`` spans ``offset + [i, i + 1) * length / cells`` scene pixels. The cells wholly
    inside ``[0, size)`` form one run; a cell across either edge is a run of its own, read from
    its part inside the scene.

    Args:
        offset: start of the window in scene pixels (may be negative or fractional).
        length: length of the window in scene pixels.
        cells: number of output cells along the axis.
        size: scene size along the axis in pixels.

    Returns:
        ``((first, stop), (start_px, stop_px), centre_inside)`` per run: output cells
        ``first:stop``, the scene pixels they read, and whether each cell's centre is inside.
    """
    step = length / cells
    first = max(0, math.floor(-offset / step))
    stop = min(cells, math.ceil((size - offset) / step))
    inner_first = min(max(first, math.ceil(-offset / step)), stop)
    inner_stop = max(min(stop, math.floor((size - offset) / step)), inner_first)
    runs = [(first, inner_first), (inner_first, inner_stop), (inner_stop, stop)]
    out = []
    for a, b in runs:
        if a >= b:
            continue
        start_px, stop_px = max(0.0, offset + a * step), min(float(size), offset + b * step)
        if stop_px <= start_px:
            continue
        centres = offset + (np.arange(a, b) + 0.5) * step
        out.append(((a, b), (start_px, stop_px), (centres >= 0) & (centres < size)))
    return out


def resampling_for(scale: float) -> Resampling:
    """How a scene is resampled to a model's grid of ``scale`` scene pixels per model pixel, in
    training and in prediction alike: the mean of the pixels under each cell when shrinking (a
    bilinear read of 0.3 m pixels at 1 m takes 4 of the 11 under a cell and aliases thin roads and
    cracks), bilinear when enlarging."""
    return Resampling.average if scale > 1 else Resampling.bilinear


def valid_pixels(masks: np.ndarray, shared_nodata: bool) -> np.ndarray:
    """The valid pixels (H, W) of a scene's band masks (C, H, W; ``read_masks``).

    An alpha band or internal mask is the same on every band. A nodata value is tested band by
    band: where the bands share one (``shared_nodata``, :attr:`Scene.shared_nodata`), a pixel is
    valid where any band is, as GDAL's dataset mask reads it: a real pixel may hold it in one band
    (a shadow of (0, 14, 31) or yellow paint of (255, 221, 0) in an RGB scene with nodata 0, which
    were dropped from training and left without prediction). Bands with nodata values of their own,
    or a stack of grey bands (which may cover different footprints), need every band valid.
    """
    return np.any(masks > 0, axis=0) if shared_nodata else np.all(masks > 0, axis=0)


COLOUR_BANDS = {ColorInterp.red, ColorInterp.green, ColorInterp.blue}
"""The colour interpretations of a colour image's bands, captured together (RGB, RGBA, RGB+NIR)."""


def _shares_nodata(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> bool:
    """Whether the bands ``bands`` of ``ds`` are one image's, with one nodata value: one band, or
    bands holding red, green and blue (a colour image, its bands captured together), all with the
    same nodata value. A stack of grey bands (``gdalbuildvrt -separate -vrtnodata 0``, Sentinel-2
    bands, RGB and NIR of two flights) may cover other footprints with that one value."""
    values = {"nan" if v is not None and v != v else v for v in (ds.nodatavals[b - 1] for b in bands)}  # NaN != NaN
    one_image = len(bands) == 1 or COLOUR_BANDS <= {ds.colorinterp[b - 1] for b in bands}
    return one_image and len(values) == 1 and None not in values


def _note_untagged_stack(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> None:
    """Say how bands with one nodata value and no colour tags are read: GDAL tags only 8-bit RGB
    as colour, so a 16-bit or float RGB(N) GeoTIFF reads as a stack of grey bands, and its dark
    pixels holding the value in one band (a shadow of (0, 140, 310)) as missing. Not for a copy in
    GDAL's memory (a DataArray's), whose tags the user cannot edit."""
    values = {ds.nodatavals[b - 1] for b in bands}
    if (len(bands) > 1 and len(values) == 1 and None not in values and not ds.name.startswith("/vsimem/")
            and not {ds.colorinterp[b - 1] for b in bands} & COLOUR_BANDS):
        _say_untagged_stack(ds.name, tuple(ci.name for ci in ds.colorinterp), len(bands), values.pop())


_NOTED_STACKS: set[str] = set()
"""Files whose untagged stack was noted in this process (training and prediction open a scene many times)."""


def _say_untagged_stack(name: str, colorinterp: tuple[str, ...], bands: int, value: float) -> None:
    """Once per file and process. The command tags every band of the file (rasterio sets them
    all): red, green and blue on its first three that are not alpha."""
    if name in _NOTED_STACKS:
        return
    _NOTED_STACKS.add(name)
    tags, colours = [], iter(("red", "green", "blue"))
    for ci in colorinterp:
        tags.append("alpha" if ci == "alpha" else next(colours, "undefined"))
    advice = (f"; if they are one colour image, tag them (rio edit-info --colorinterp {','.join(tags)} {name}) and a pixel is "
              f"missing only where every band holds it" if "blue" in tags else "")
    log.warning("geoccseg: note: the %d bands read from %s hold nodata %g and no colour tags, so they are read as a stack of grey "
                "bands: a pixel is missing where any band holds %g%s", bands, name, value, value, advice)


def _mask_kind(ds: rasterio.io.DatasetReader) -> str:
    flags = set(ds.mask_flag_enums[0]) if ds.count else set()
    if any(ci == ColorInterp.alpha for ci in ds.colorinterp):
        return "alpha"
    if MaskFlags.nodata in flags:
        return "nodata"
    if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
        return "internal"
    return "none"


def parse_bands(text: str | None) -> list[int] | None:
    """Parse a comma-separated list of 1-based band numbers (``"1,2,3"``); None or ``""`` for the default.

    Raises:
        GeoccsegError: an item that is not a whole number.
    """
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise GeoccsegError(f"bands must be comma-separated 1-based band numbers, e.g. 1,2,3; got {text!r}") from None


def is_gdal_path(path: str | os.PathLike) -> bool:
    """A path of one of GDAL's virtual file systems (``/vsimem/``, ``/vsicurl/``, ``/vsis3/``, ...) or
    a URL rasterio opens (``https://``, ``s3://``, ``gs://``, ...), which only GDAL can tell exists.
    Give URLs as strings: a :class:`~pathlib.Path` folds their ``//``."""
    text = os.fspath(path)
    return text.startswith("/vsi") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def shown_name(path: str | os.PathLike, whole: bool = False) -> str:
    """A scene's name in the files written about it: its file name (``whole``: its path); of a URL
    without its query and fragment, where a presigned URL carries its signature, a credential."""
    text = os.fspath(path)
    if is_gdal_path(text):
        text = urllib.parse.urlsplit(text)._replace(query="", fragment="").geturl()
    return text if whole else text.rstrip("/").rsplit("/", 1)[-1]


@contextlib.contextmanager
def readable(path: str | os.PathLike) -> Iterator[None]:
    """Turn GDAL's failure to read pixels of an opened raster inside into one line naming it: a
    file cut short (a download or copy that stopped, its header whole) opens, then fails on the
    first block past the cut, possibly hours into a run."""
    try:
        yield
    except rasterio.errors.RasterioIOError as exc:
        gdal = exc.__cause__ or exc  # "Read failed. See previous exception": GDAL's own words are the cause's
        detail = str(gdal).splitlines()[0] if str(gdal) else type(exc).__name__
        if TOO_MANY_FILES in str(gdal):
            raise GeoccsegError(too_many_files(path)) from None
        raise GeoccsegError(f"cannot read the pixels of {path} ({detail}): the file may be truncated or damaged, "
                            "or its server stopped answering; copy or download it again") from None


TOO_MANY_FILES = "Too many open files"
"""What the C library says (EMFILE) when a process holds as many files as its limit allows."""


def too_many_files(path: str | os.PathLike) -> str:
    """The one line for a raster that cannot be opened because the process is at its limit of open
    files: each thread reading a scene holds its own handle, so threads x scenes files are open."""
    try:
        limit = f", now {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
    except (AttributeError, OSError, ValueError):  # Windows has no resource module
        limit = ""
    return (f"cannot open {path}: this process has as many files open as its limit allows (ulimit -n{limit}; each reading "
            "thread holds each scene open); raise it (e.g. ulimit -n 10240 in the shell that runs it) or give the tiles as one mosaic (gdalbuildvrt tiles.vrt tiles/*.tif)")


def open_raster(path: str | os.PathLike) -> rasterio.io.DatasetReader:
    """Open a user's raster for reading: ``rasterio.open`` without its ``NotGeoreferencedWarning``.

    The one opener of the rasters the commands read (scenes, probability rasters, raster labels,
    evaluation rasters): each reader checks the georeferencing it needs itself and says what is
    missing in one line, or needs none (photos, evaluation images), so rasterio's two-line warning
    would only precede that line.

    Args:
        path: a file, or a URL or GDAL virtual file (:func:`is_gdal_path`), given as a string.

    Raises:
        rasterio.errors.RasterioIOError: GDAL cannot open it (each caller words its own message).
    """
    with ignored_warnings(rasterio.errors.NotGeoreferencedWarning):  # run from several threads at once
        return rasterio.open(path)


def open_scene(path: str | os.PathLike, bands: list[int] | tuple[int, ...] | None = None, require_crs: bool = True,
               north_up: bool = False) -> Scene:
    """Open a GeoTIFF (or any GDAL raster) as a :class:`Scene`.

    Args:
        path: the raster file.
        bands: 1-based band indices to use as input channels; by default every band except an
            alpha band.
        require_crs: refuse rasters without a CRS or georeferencing (the default for scenes).
        north_up: refuse grids stored south-up or east to west (training draws chips by map
            bounds, which such grids turn into empty windows).

    Raises:
        GeoccsegError: missing or unreadable file, no CRS, band index out of range or the alpha band,
            unsupported dtype.
    """
    remote = is_gdal_path(path)
    path = os.fspath(path) if remote else Path(path)  # messages show a URL as given
    if not remote and not path.exists():
        raise GeoccsegError(f"scene {path} does not exist")
    if not remote and path.is_dir():
        raise GeoccsegError(f"scene {path} is a folder; give a GeoTIFF file")
    try:
        ds = open_raster(path)
    except rasterio.errors.RasterioIOError as exc:
        if TOO_MANY_FILES in str(exc):
            raise GeoccsegError(too_many_files(path)) from None
        if remote:
            raise GeoccsegError(f"scene {path} cannot be opened ({exc}); check the address and that its server answers range requests") from None
        raise GeoccsegError(f"{path} is not a readable raster; give a GeoTIFF (or another GDAL raster) file") from None
    if require_crs and ds.transform == Affine.identity() and (ds.gcps[0] or ds.rpcs):  # a scanned map, an unrectified L1 product
        kind, option = (f"{len(ds.gcps[0])} ground control points", "-tps") if ds.gcps[0] else ("rational polynomial coefficients (RPC)", "-rpc")
        ds.close()
        raise GeoccsegError(f"scene {path} is georeferenced by {kind}, not by a grid; warp it onto one first, e.g. "
                            f"gdalwarp {option} -t_srs EPSG:32611 {path} warped.tif with the right EPSG code")
    if require_crs and ds.crs is None:
        ds.close()
        raise GeoccsegError(
            f"scene {path} has no CRS; assign one first, e.g. `rio edit-info --crs EPSG:32611 {path}` "
            f"or `gdal_edit.py -a_srs EPSG:32611 {path}` with the right EPSG code"
        )
    if require_crs and ds.transform == Affine.identity():
        ds.close()
        raise GeoccsegError(f"scene {path} has no georeferencing (identity transform); georeference it first, e.g. with gdal_translate -a_ullr")
    if ds.transform.b != 0 or ds.transform.d != 0:
        ds.close()
        raise GeoccsegError(f"scene {path} has a rotated grid; warp it to a north-up grid first (gdalwarp)")
    if north_up and ds.transform != Affine.identity() and (ds.transform.e > 0 or ds.transform.a < 0):
        ds.close()
        raise GeoccsegError(f"scene {path} is stored {'south-up' if ds.transform.e > 0 else 'east to west'}; warp it to a "
                            f"north-up grid first, e.g. gdalwarp {path} north_up.tif")
    alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
    if bands is None:
        bands = tuple(b for b in range(1, ds.count + 1) if b not in alpha)
    bands = tuple(int(b) for b in bands)
    if not bands:
        ds.close()
        raise GeoccsegError(f"scene {path} has no band to read")
    for b in bands:
        if not 1 <= b <= ds.count:
            count = ds.count
            ds.close()
            raise GeoccsegError(f"band {b} is out of range: {path} has {count} band(s), numbered 1 to {count}")
        if b in alpha:
            ds.close()
            others = [i for i in range(1, ds.count + 1) if i not in alpha]
            raise GeoccsegError(
                f"band {b} of {path} is its alpha band, the valid-data mask, not an input; "
                f"choose input bands among {', '.join(map(str, others)) or 'none'}"
            )
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if not dtypes <= SUPPORTED_DTYPES:
        ds.close()
        raise GeoccsegError(f"scene {path} has unsupported data type(s) {sorted(dtypes)}; convert to uint8, uint16 or float32")
    dtype = ds.dtypes[bands[0] - 1] if len(dtypes) == 1 else "float32"
    scene = Scene(
        path=Path(path), source=os.fspath(path) if remote else str(Path(path).resolve()), bands=bands, crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height,
        dtype=dtype, mask_kind=_mask_kind(ds), band_count=ds.count, nodata=ds.nodata,
        shared_nodata=_shares_nodata(ds, bands),
    )
    if scene.mask_kind == "nodata":
        _note_untagged_stack(ds, bands)
    scene._set_dataset(ds)
    if require_crs and not (math.isfinite(scene.pixel_size_m) and scene.pixel_size_m > 0):
        ds.close()
        left, bottom, right, top = scene.bounds
        raise GeoccsegError(f"scene {path}'s coordinates (x {left:.6g} to {right:.6g}, y {bottom:.6g} to {top:.6g}) are not in its "
                            f"CRS ({scene.crs.to_string()}): no pixel size follows from them; assign the CRS they are in, e.g. "
                            f"`rio edit-info --crs EPSG:32611 {path}` for UTM zone 11N")
    return scene


def describe_scene(path: str | os.PathLike, bands: list[int] | None = None) -> dict:
    """Facts about a scene for ``geoccseg info``: size, bands, dtypes, CRS, pixel size, nodata share."""
    scene = open_scene(path, bands, north_up=True)
    ds = scene.dataset
    valid_probe = scene.read_valid(out_shape=(min(scene.height, 2048), min(scene.width, 2048)))  # NaN of float bands too
    return {
        "path": str(path),
        "width": scene.width,
        "height": scene.height,
        "band_count": scene.band_count,
        "dtypes": list(ds.dtypes),
        "input_bands": list(scene.bands),
        "crs": scene.crs.to_string(),
        "pixel_size_m": scene.pixel_size_xy_m,
        "mask": scene.mask_kind,
        "nodata_share": float(1 - valid_probe.mean()),  # as training and prediction read it
        # a nodata value of several bands: a pixel is missing where any band holds it, or only where every one does
        "nodata_in": ("every band" if scene.shared_nodata else "any band") if scene.mask_kind == "nodata" and len(scene.bands) > 1 else None,
    }
