"""Reading PRED and TRUTH for evaluation: single files, or folders matched by file stem.

Rasters are GeoTIFFs or VRTs (rasterio; internal masks, alpha bands and nodata mark invalid pixels,
as do NaNs) or PNG/JPEG/BMP images (Pillow; an alpha channel marks invalid pixels). Only the first band is
read. Their values are interpreted as follows.

Binary evaluation (``classes=None``):
    - TRUTH: a 0/1 or 0/255 mask, read by the rule training reads masks with
      (:func:`geoccseg.label_values.label_mode`): a 0/255 mask resized smoothly (values between)
      and lossy masks (JPEG, lossy WebP: blurred by compression) are thresholded at 128, and an RGB mask whose
      channels differ by little (:data:`~geoccseg.label_values.COLOUR_TOLERANCE`) reads as its
      grey. Any other values mean a class map and need ``classes``.
    - PRED: float probabilities in [0, 1]; a 0/1 integer mask; or uint8 read as ``value / 255``
      (so 0/255 masks and 0-255 probabilities both work). A raster tagged as the probabilities of
      ``geoccseg predict`` (the COG's ``GEOCCSEG_PROBABILITY`` tag, or the same PNG text key of
      the probability images of photos) is always ``value / 255``, even when its values are only
      0 and 1 (a photo without cracks), which would otherwise read as a 0/1 mask.

Class-map evaluation (``classes=[k, ...]``): value ``k`` of PRED and TRUTH is class ``k``; a map
holding only 0 and 255 counts as a binary mask (255 is class 1).

A TRUTH class map holding 255 besides classes 1..127 (and nothing from 128 to 254) marks unlabeled
pixels with it, as training reads such labels: they are scored nowhere. In a folder where some
TRUTH tile holds 255 so, a tile holding only 0 and 255 reads as its neighbours do
(:class:`TruthReader`).

Vectors (.gpkg, .geojson or .json, .fgb, .shp) hold (multi)line strings with a CRS. They are burnt onto the
grid of the raster they are compared with: buffered by a line width in metres (flat ends, round where two lines
meet, as training labels them: :class:`geoccseg.io.labels.VectorLabels`) for pixel metrics, and one pixel wide for
skeleton centreline metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
from affine import Affine
from PIL import Image, UnidentifiedImageError
from pyproj import CRS
from rasterio.enums import ColorInterp, MaskFlags

from geoccseg.errors import GeoccsegError
from geoccseg.io.formats import FOLDER_VECTOR_SUFFIXES, IMAGE_SUFFIXES, RASTER_SUFFIXES, VECTOR_SUFFIXES, is_lossy
from geoccseg.io.labels import VectorLabels, read_vector
from geoccseg.io.memory import free_memory
from geoccseg.io.orientation import TURNS, shown_size, unturn
from geoccseg.io.probability import CLASS_MAP_MAX, PROBABILITY_TAG, THRESHOLD_TAG, TURN_TAG, decode_uint8, parse_threshold, refuse_confidence
from geoccseg.io.scene import open_raster
from geoccseg.label_values import COLOUR_TOLERANCE, held_values, label_mode, marks_unlabeled_255, unlabeled_is_255
from geoccseg.io.units import mean_pixel_size_m, pixel_size_m

log = logging.getLogger(__name__)



@dataclass
class Raster:
    """The first band of a prediction or truth raster, with its validity and grid.

    Attributes:
        path: file it was read from.
        values: (H, W) values as stored (any numeric dtype).
        valid: (H, W) bool, pixels to score.
        crs: CRS of the grid, None when not georeferenced (e.g. PNG).
        transform: pixel -> CRS affine transform, None when not georeferenced.
        probability: tagged as probabilities by ``geoccseg predict`` (uint8 is p x 255).
        turned: the EXIF orientation (2-8) by which ``geoccseg predict`` turned the photo before
            predicting it (:data:`~geoccseg.io.probability.TURN_TAG`); None: as stored.
    """

    path: Path
    values: np.ndarray
    valid: np.ndarray
    crs: CRS | None = None
    transform: Affine | None = None
    probability: bool = False
    turned: int | None = None

    @property
    def georeferenced(self) -> bool:
        """True when the raster has a CRS and a transform."""
        return self.crs is not None and self.transform is not None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.values.shape

    @property
    def lossy(self) -> bool:
        """True for JPEG and lossy WebP files (:func:`~geoccseg.io.formats.is_lossy`), whose masks hold compression noise."""
        return is_lossy(self.path)

    def pixel_m(self) -> float:
        """Mean pixel size in metres, measured at the raster centre (needs a georeferenced raster)."""
        height, width = self.shape
        return mean_pixel_size_m(self.crs, self.transform, self.transform * (width / 2, height / 2))

    def pixel_xy_m(self) -> tuple[float, float]:
        """(x, y) pixel size in metres at the raster centre: unequal for square pixels in degrees;
        a turned raster gets its mean size both ways (its columns are not east-west)."""
        height, width = self.shape
        if self.transform.b or self.transform.d:
            return (self.pixel_m(),) * 2
        return pixel_size_m(self.crs, self.transform, self.transform * (width / 2, height / 2))


def is_vector(path: Path) -> bool:
    """True when ``path`` has a vector extension."""
    return path.suffix.lower() in VECTOR_SUFFIXES


def match_files(pred: str | os.PathLike, truth: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair prediction and truth files: two files, or two folders matched by file stem.

    In folders, files with a raster or vector extension count (``pred/img-1.tif`` pairs with
    ``truth/img-1.png``; :mod:`geoccseg.io.formats`); other files (``.aux.xml``, ``.dbf``,
    ``.json``, ...) are ignored.

    Returns:
        (pred, truth) pairs sorted by stem.

    Raises:
        GeoccsegError: missing paths, a file against a folder, unsupported extensions, repeated
            stems in a folder, or names present on one side only.
    """
    pred, truth = Path(pred), Path(truth)
    for role, path in (("PRED", pred), ("TRUTH", truth)):
        if not path.exists():
            raise GeoccsegError(f"{role} {path} does not exist; give an existing file or folder")
    if pred.is_dir() != truth.is_dir():
        raise GeoccsegError(f"PRED {pred} and TRUTH {truth} must both be files or both be folders")
    if not pred.is_dir():
        for role, path in (("PRED", pred), ("TRUTH", truth)):
            _check_suffix(role, path)
        return [(pred, truth)]
    pred_files, truth_files = _index("PRED", pred), _index("TRUTH", truth)
    only_pred = sorted(set(pred_files) - set(truth_files))
    only_truth = sorted(set(truth_files) - set(pred_files))
    if only_pred or only_truth:
        parts = [
            f"{len(names)} {role} file(s) have no {other} of the same name (e.g. {', '.join(names[:3])})"
            for role, other, names in (("PRED", "TRUTH", only_pred), ("TRUTH", "PRED", only_truth))
            if names
        ]
        raise GeoccsegError(f"{'; '.join(parts)}; give folders whose file names match")
    return [(pred_files[stem], truth_files[stem]) for stem in sorted(pred_files)]


def _check_suffix(role: str, path: Path) -> None:
    if path.suffix.lower() not in (*RASTER_SUFFIXES, *IMAGE_SUFFIXES, *VECTOR_SUFFIXES):
        raise GeoccsegError(
            f"{role} {path} has an unsupported extension; use a raster ({', '.join((*RASTER_SUFFIXES, *IMAGE_SUFFIXES))}) "
            f"or a vector ({', '.join(VECTOR_SUFFIXES)})"
        )


def _index(role: str, folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in (*RASTER_SUFFIXES, *IMAGE_SUFFIXES, *FOLDER_VECTOR_SUFFIXES):
            continue
        if path.stem in files:
            raise GeoccsegError(f"{role} folder {folder} holds both {files[path.stem].name} and {path.name}; keep one file per name")
        files[path.stem] = path
    if not files:
        raise GeoccsegError(f"{role} folder {folder} holds no raster or vector file")
    return files


def read_raster(path: str | os.PathLike) -> Raster:
    """Read the first band of a GeoTIFF, VRT, PNG, JPEG or BMP, with its valid pixels and grid.

    Raises:
        GeoccsegError: unreadable file, several non-alpha bands, colour images.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path)
    try:
        with open_raster(path) as ds:
            refuse_confidence(ds.tags(), path)
            extra = [i for i, ci in enumerate(ds.colorinterp[1:], start=2) if ci != ColorInterp.alpha]
            if extra:
                raise GeoccsegError(f"{path} has {ds.count} bands; evaluation reads single-band masks or probabilities")
            check_memory(path, ds.width, ds.height)
            values = ds.read(1)
            # a nodata value of 0 is background (or probability 0) in a mask, not missing truth:
            # QGIS's Rasterize writes it by default
            zero_nodata = ds.nodata == 0 and MaskFlags.nodata in ds.mask_flag_enums[0]
            valid = np.ones(values.shape, bool) if zero_nodata else ds.read_masks(1) > 0
            probability = PROBABILITY_TAG in ds.tags()
            crs = CRS.from_user_input(ds.crs) if ds.crs is not None else None
            if crs is not None and ds.transform.is_identity:  # a CRS written without a geotransform
                raise GeoccsegError(f"{path} has a CRS but no georeferencing (identity transform); georeference it first, e.g. "
                                    "with gdal_translate -a_ullr, or drop its CRS to score it as a plain image (gdal_edit.py -unsetsrs)")
            transform = ds.transform if crs is not None else None
    except rasterio.errors.RasterioIOError as exc:
        raise GeoccsegError(f"cannot read raster {path}: {str(exc).splitlines()[0]}") from None
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values)
    return Raster(path=path, values=values, valid=valid, crs=crs, transform=transform, probability=probability)


def recorded_threshold(path: Path) -> float | None:
    """The decision threshold a probability raster of ``geoccseg predict`` records
    (``GEOCCSEG_THRESHOLD``: scene COGs the one their lines were drawn at, photos' PNGs the
    model's); None for vectors, masks and rasters of other tools. Reads the header only."""
    if is_vector(path):
        return None
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                value = image.info.get(THRESHOLD_TAG)
        else:
            with open_raster(path) as ds:
                value = ds.tags().get(THRESHOLD_TAG)
        return parse_threshold(value)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError, rasterio.errors.RasterioIOError):
        return None  # unreadable or too large: scoring says why


SCORING_BYTES_PER_PX = 52
"""Peak memory of scoring a pair of rasters whole, per pixel: each raster of a pair is read whole,
and the pixel metrics' arrays (distance transforms, the threshold sweep) peak at about 50 bytes per
pixel more than the imports (measured with a uint8 probability raster against a 0/255 mask, 8192
and 12288 px, road graphs included: ``pipelines/benchmark_evaluate.py``; 51.5 in all at 12288 px)."""


MEMORY_CHECK_ENV = "GEOCCSEG_NO_MEMORY_CHECK"
"""Set to 1 to score a raster whatever :func:`check_memory` estimates (a machine with swap)."""


def check_memory(path: Path, width: int, height: int) -> None:
    """Refuse a raster too large to score whole in the memory free (:func:`~geoccseg.io.memory.free_memory`),
    before reading it, rather than the process killed for memory once it has filled it (unless
    :data:`MEMORY_CHECK_ENV` is set).

    Raises:
        GeoccsegError: the estimated peak (:data:`SCORING_BYTES_PER_PX`) is above the free memory.
    """
    need, free = width * height * SCORING_BYTES_PER_PX, free_memory()
    if need > free and os.environ.get(MEMORY_CHECK_ENV) != "1":
        tile = max(256, int((free / SCORING_BYTES_PER_PX) ** 0.5) // 2 // 256 * 256)  # half the side: a quarter of the memory
        raise GeoccsegError(f"{path} is {width}x{height} px: scoring it whole takes about {need / 2**30:.1f} GiB, and "
                            f"{free / 2**30:.1f} GiB are free; give PRED and TRUTH the same file name (pred/scene.tif, "
                            f"truth/scene.tif), cut each into tiles of {tile} px (gdal_retile.py -ps {tile} {tile} -targetDir "
                            f"FOLDER, an existing folder for each) and evaluate the two folders, or set {MEMORY_CHECK_ENV}=1 "
                            "to try anyway (swap)")


def _read_image(path: Path) -> Raster:
    """An image's first band; a colour image whose channels differ by at most
    :data:`~geoccseg.label_values.COLOUR_TOLERANCE` (JPEG noise, off-grey strokes) as its grey
    (as training reads masks), a more colourful one refused."""
    try:
        with Image.open(path) as image:
            refuse_confidence(image.info, path)
            check_memory(path, *image.size)
            has_alpha = image.mode.endswith("A")
            probability = PROBABILITY_TAG in image.info
            turned = int(image.info[TURN_TAG]) if str(image.info.get(TURN_TAG)) in {str(value) for value in TURNS} else None
            array = np.array(image)
            grey = np.array(image.convert("L")) if array.ndim == 3 else None
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise GeoccsegError(f"cannot read image {path}: {exc}") from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    valid = np.ones(array.shape[:2], dtype=bool)
    if array.ndim == 3:
        if has_alpha:
            valid = array[..., -1] > 0
            array = array[..., :-1]
        colour = array.astype(np.int16)
        if int((colour.max(axis=-1) - colour.min(axis=-1)).max(initial=0)) > COLOUR_TOLERANCE:
            raise GeoccsegError(f"{path} is a colour image; masks and probabilities must be single-band (greyscale)")
        array = grey
    return Raster(path=path, values=array, valid=valid, probability=probability, turned=turned)


def as_stored(pred: Raster, truth: Raster) -> Raster:
    """PRED on the stored pixels of its photo: ``geoccseg predict`` turns a photo by its EXIF
    orientation (as viewers show it) while masks follow the stored pixels, as training reads them;
    scored as written, a prediction of a photo turned 180 degrees met its mask upside down (F1 near
    0, without a word). Left as it is where only the turned size is TRUTH's (a mask drawn on the
    photo as shown, turned 90 degrees)."""
    if pred.turned is None or truth.georeferenced:
        return pred
    stored = shown_size(pred.shape, pred.turned)  # a quarter turn back swaps the sides too
    if truth.shape == pred.shape != stored:
        return pred
    turn = unturn(pred.turned)
    values = np.asarray(Image.fromarray(pred.values).transpose(turn))
    valid = np.asarray(Image.fromarray(pred.valid).transpose(turn))
    return replace(pred, values=values, valid=valid, turned=None)


def read_lines(path: str | os.PathLike, role: str = "TRUTH") -> gpd.GeoSeries:
    """Read the (multi)line strings of a vector file, with their CRS: its one layer with geometries
    (a ``--graph`` GeoPackage's node and edge layers beside it aside, :func:`read_vector`).

    Raises:
        GeoccsegError: unreadable file, no CRS, several layers, geometries that are not lines.
    """
    lines = read_vector(path, role).geometry
    other = sorted(set(lines.geom_type) - {"LineString", "MultiLineString"})
    if other:
        raise GeoccsegError(f"{role} {path} holds {', '.join(other)} geometries; evaluation compares (multi)line strings: "
                            "burn polygons into a mask on the prediction raster's grid (gdal_rasterize -burn 255 -ot Byte with its "
                            "CRS, -te and -ts) and evaluate against it")
    return gpd.GeoSeries(lines.values, crs=lines.crs)


def burn_lines(path: Path, like: Raster, width_m: float | None, role: str = "TRUTH") -> np.ndarray:
    """Burn the lines of a vector file onto the grid of ``like``.

    Args:
        path: vector file of (multi)line strings.
        like: georeferenced raster whose grid (CRS, transform, shape) is used.
        width_m: line width in metres (buffered by half of it, flat ends); None burns lines one
            pixel wide (GDAL line rasterisation), as centrelines.
        role: "PRED" or "TRUTH", for messages.

    Returns:
        (H, W) bool mask on the grid of ``like``.
    """
    if not like.georeferenced:
        raise GeoccsegError(f"{like.path} has no CRS, so {role} lines {path} cannot be placed on it; compare it with a georeferenced raster")
    lines = read_lines(path, role)
    if len(lines) == 0:
        return np.zeros(like.shape, dtype=bool)
    if width_m is not None:  # buffered in metres on the ground, burnt through the raster's own transform (any orientation),
        labels = VectorLabels.open(path, like.crs, width_m=width_m)  # with their paths, as training burns line labels
        shapes = [*labels.shapes.geometry, *(labels.centrelines.geometry if labels.centrelines is not None else [])]
        if not shapes:
            return np.zeros(like.shape, dtype=bool)
        return rasterio.features.rasterize(shapes, out_shape=like.shape, transform=like.transform, dtype="uint8") > 0
    geoms = lines.to_crs(like.crs).values
    return rasterio.features.rasterize(geoms, out_shape=like.shape, transform=like.transform, dtype="uint8") > 0


def check_same_grid(pred: Raster, truth: Raster) -> None:
    """Raise :class:`GeoccsegError` unless PRED and TRUTH have the same size (and grid, when both are georeferenced)."""
    if pred.shape != truth.shape:
        raise GeoccsegError(
            f"PRED {pred.path} is {pred.shape[1]}x{pred.shape[0]} pixels but TRUTH {truth.path} is "
            f"{truth.shape[1]}x{truth.shape[0]}; predict on the truth's grid"
        )
    if pred.georeferenced and truth.georeferenced:
        height, width = pred.shape
        left, top = ~truth.transform * (pred.transform * (0, 0))
        right, bottom = ~truth.transform * (pred.transform * (width, height))
        offset_px = max(abs(left), abs(top), abs(right - width), abs(bottom - height))
        if pred.crs != truth.crs or offset_px > 0.01:
            raise GeoccsegError(f"PRED {pred.path} and TRUTH {truth.path} are on different grids (CRS or transform); predict on the truth's grid")


def _only(values: np.ndarray, allowed: tuple[int, ...]) -> bool:
    """True when every value is one of ``allowed``."""
    return bool(np.isin(values, allowed).all())


def _reads_as_mask(path: Path, seen: np.ndarray) -> bool:
    """Whether TRUTH values read as a 0/255 mask, possibly smoothed (values between, the class from
    128 up), by the rule training reads masks with (:func:`~geoccseg.label_values.label_mode`)."""
    try:
        return label_mode(f"TRUTH {path}", *held_values(seen), 1)[0]
    except GeoccsegError:
        return False


def _sample(values: np.ndarray) -> str:
    return ", ".join(str(v) for v in np.unique(values)[:6].tolist())


class TruthReader:
    """Reads TRUTH rasters (:func:`read_raster`); in a class-index raster whose 255 marks unlabeled
    pixels those pixels are not scored: with ``classes`` (class indices scored, ``--classes``) 255
    beside any indices 1..127 (:func:`geoccseg.label_values.unlabeled_is_255`), else 255 beside class
    1 (:func:`geoccseg.label_values.marks_unlabeled_255`, as training reads it).

    A tile holding only 0 and 255 cannot say which it is: a 0/255 mask, or a tile of such a folder
    without road. Reading the tiles of a folder (``folder``), :meth:`read` reads it as a 0/255
    mask and says it is provisional: the caller keeps its scores apart until every tile has been
    read, then keeps them (no tile held 255 beside classes 1..127, as in a folder of 0/255 masks)
    or, once :attr:`seen` is True, reads it again after :meth:`finish`, its 255 unlabeled. Each
    tile is so read once, but such tiles of a folder that marks unlabeled pixels with 255.
    """

    def __init__(self, folder: bool, classes: int | None = None) -> None:
        self.folder, self.finished, self.classes = folder, False, classes
        self.seen = False
        """Some tile read so far marks unlabeled pixels with 255."""

    def read(self, path: str | os.PathLike) -> tuple[Raster, bool]:
        """The TRUTH raster at ``path``, its unlabeled pixels invalid, and whether it is read
        provisionally (a tile holding only 0 and 255, before :meth:`finish`)."""
        raster = read_raster(path)
        held = _held(raster)
        # class indices scored (--classes): 255 beside any of them is unlabeled; one class of probabilities: 255 beside
        # class 1 only (0, 100 and 255 is a 0/255 mask)
        marks = unlabeled_is_255(held) if self.classes is not None else marks_unlabeled_255(held, 1)
        if marks:
            self.seen = True
        only_0_255 = bool(held[255] and not held[1:255].any())
        if marks or (only_0_255 and self.finished and self.seen):
            raster.valid = raster.valid & (raster.values != 255)
        return raster, only_0_255 and self.folder and not self.finished

    def finish(self) -> None:
        """Every tile has been read once: read those read provisionally as the folder shows."""
        self.finished = True


def _held(raster: Raster) -> np.ndarray:
    """(256,) bool: the whole values 0..255 a lossless raster holds on its valid pixels (none for a lossy one)."""
    if raster.lossy:
        return np.zeros(256, dtype=bool)
    values = raster.values[raster.valid]
    return held_values(values[np.isfinite(values)] if values.dtype.kind == "f" else values)[0]


def truth_masks(raster: Raster, classes: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """True pixels of each class; see the module docstring for how values are read.

    Args:
        raster: TRUTH raster.
        classes: class values of a class map; None for a binary mask (class 1).

    Returns:
        {class value: (H, W) bool mask}, False outside ``raster.valid``.
    """
    values, valid = raster.values, raster.valid
    seen = values[valid]
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(seen, np.round(seen)):
        raise GeoccsegError(f"TRUTH {raster.path} holds fractional values; truth must be a 0/1 or 0/255 mask or an integer class map")
    if classes is None:
        if seen.size == 0 or (seen.min() >= 0 and seen.max() <= 1):
            return {1: (values == 1) & valid}
        if raster.lossy or _reads_as_mask(raster.path, seen):
            return {1: (values >= 128) & valid}
        raise GeoccsegError(
            f"TRUTH {raster.path} holds class values {_sample(seen)}; pass the classes to score (--classes 1,2) "
            "or give a 0/1 or 0/255 mask"
        )
    if _only(seen, (0, 255)):
        values = (values == 255).astype(np.uint8)
    return {k: (values == k) & valid for k in classes}


def prediction_scores(raster: Raster, classes: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Scores of each class; see the module docstring for how values are read.

    Args:
        raster: PRED raster.
        classes: class values of a class map; None for binary probabilities or masks (class 1).

    Returns:
        {class value: (H, W) scores}: float32 probabilities in [0, 1] (binary evaluation) or bool
        masks (class maps); 0 outside ``raster.valid``.
    """
    values, valid = raster.values, raster.valid
    seen = values[valid]
    floating = np.issubdtype(values.dtype, np.floating)
    if classes is None:
        if seen.size and (seen.min() < 0 or (seen.max() > 1 and (floating or values.dtype != np.uint8))):
            raise GeoccsegError(
                f"PRED {raster.path} ({values.dtype}) holds values from {seen.min()} to {seen.max()}; binary evaluation "
                "needs probabilities (float 0-1 or uint8 0-255) or a 0/1 mask; pass --classes for a class map"
            )
        if not floating and not raster.probability and seen.size and 1 < seen.max() <= CLASS_MAP_MAX:
            # not refused: another tool's probabilities of an image without roads or cracks look the same
            log.warning("geoccseg: warning: PRED %s holds only the values %s, read as probabilities (uint8 / 255) of at most "
                        "%.2f; if it is a class map, pass the classes to score (--classes 1,2)", raster.path, _sample(seen),
                        seen.max() / 255)
        decode = not floating and (raster.probability or (seen.size and seen.max() > 1))
        score = decode_uint8(values) if decode else values.astype(np.float32)
        score[~valid] = 0
        return {1: score}
    if floating or raster.probability:
        raise GeoccsegError(f"PRED {raster.path} holds probabilities; a class-map evaluation (--classes) needs an integer class map "
                            "(drop --classes to score the probabilities)")
    if _only(seen, (0, 255)):
        values = (values == 255).astype(np.uint8)
    return {k: (values == k) & valid for k in classes}
