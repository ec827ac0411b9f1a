"""Training data from photo folders (``images/`` + ``masks/``), e.g. crack datasets.

Images and masks are matched by file stem. A fixed share of the images (``labeled_fraction``,
chosen with a seed) carries labels; the others are offered as unlabeled images, and their masks are
never opened. A validation part can be held apart first (``val_fraction``), or given as its own
folders. Photos have no georeferencing; their pixel size may be declared (e.g. 1 m for the
Massachusetts aerial crops) so that prediction on scenes can resample to it.

The photos of ``geoccseg predict`` come from here too: :func:`find_photos` (files, folders, glob
patterns) and :func:`read_photo` (the one photo reader; one-line errors for unreadable files,
EXIF orientation on request).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from geoccseg.data.base import LazyItems, TrainingData
from geoccseg.errors import GeoccsegError
from geoccseg.io.formats import GEOTIFF_SUFFIXES, PHOTO_SUFFIXES, UNREAD_PHOTO_SUFFIXES, is_lossy
from geoccseg.io.normalize import NormStats, stats_from_uint8
from geoccseg.io.orientation import SHOWN, TURNS, UNREADABLE, read_orientation, shown_size, turned_for_display
from geoccseg.label_values import COLOUR_TOLERANCE, IGNORE_INDEX, held_values, label_mode, marks_unlabeled_255
from geoccseg.models.config import check_tile_px

log = logging.getLogger(__name__)


def is_photo_file(path: Path) -> bool:
    """Whether a directory entry is a photo file: a photo suffix (:data:`PHOTO_SUFFIXES`), not a
    hidden file (``._x.jpg``: macOS metadata beside each photo copied from a Mac) and not a folder."""
    return path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith(".") and path.is_file()


def warn_unread(folder: Path) -> None:
    """Say how many photos of ``folder`` are of a format this tool cannot read (HEIC): a folder of
    an iPhone's photos, half of them edited into JPEGs, was half predicted without a word."""
    unread = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in UNREAD_PHOTO_SUFFIXES and not p.name.startswith(".")]
    if unread:
        log.warning("geoccseg: warning: %d photo(s) in %s are left out: %s is not read (e.g. %s); convert them to JPEG "
                    "(e.g. heif-convert, or export as JPEG from the phone or Photos)", len(unread), folder,
                    unread[0].suffix.lower(), unread[0].name)


def list_images(folder: str | os.PathLike, what: str = "images", *, allow_empty: bool = False) -> dict[str, Path]:
    """Image files of a folder by stem, sorted; an empty folder is refused unless ``allow_empty``, and
    so is one with two images of one name (``a.jpg`` and ``a.png``: photos and masks pair by name,
    and the later name silently replaced the other)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeoccsegError(f"{what} folder {folder} is a file, not a folder; give the folder that holds the {what}" if folder.exists()
                            else f"{what} folder {folder} does not exist")
    warn_unread(folder)
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_photo_file(path):
            continue
        if path.stem in files:
            raise GeoccsegError(f"{what} folder {folder} holds both {files[path.stem].name} and {path.name}: images pair with "
                                "masks by name; keep one file per name (move or rename the other)")
        files[path.stem] = path
    if not files and not allow_empty:
        raise GeoccsegError(f"{what} folder {folder} holds no image ({', '.join(sorted(PHOTO_SUFFIXES))})")
    return files


def reason(exc: BaseException) -> str:
    """One line saying why Pillow could not read a file."""
    return " ".join(str(exc).split()) or type(exc).__name__


#: Pillow modes read as colour (3 bands); every other mode is read as grey.
_COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK")

#: Pillow modes of grey photos with more than 8 bits (16-bit PNG and TIFF): scaled to 8 by :func:`to_8_bits`.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_photo(path: Path, *, bands: int | None = None, exif_orientation: bool = False) -> np.ndarray:
    """A photo as uint8 (C, H, W): 1 band for grayscale, 3 for colour (alpha dropped; prediction
    reads it too, :func:`read_photo_valid`).

    Grey photos of 16 bits are scaled to 8 by their bit depth (:func:`to_8_bits`), not clipped.

    Args:
        path: the photo (JPEG, PNG, TIFF, BMP: anything Pillow reads).
        bands: 1 or 3 to convert the photo to grayscale or colour; None: as stored.
        exif_orientation: turn the pixels as the photo's EXIF orientation tag says (as photo
            viewers show it); training leaves it off, since dataset masks follow the stored pixels.

    Raises:
        GeoccsegError: a file Pillow cannot read (corrupt, truncated, not an image, too large) or
            a photo of floating-point pixels.
    """
    return read_photo_valid(path, bands=bands, exif_orientation=exif_orientation)[0]


WIDE_BITS = (8, 10, 12, 16)
"""The bit depths a 16-bit photo's values may be stored in (industrial and thermal cameras write
10 or 12 bits into 16-bit PNGs and TIFFs; an 8-bit image saved as uint16 keeps 8). Not 14: a dark
full-range photo (largest value under 16384) would be read 4 times brighter than its siblings."""


def to_8_bits(wide: np.ndarray) -> np.ndarray:
    """A 16-bit grey photo's pixels as uint8: scaled by the fewest :data:`WIDE_BITS` that hold its
    largest value, so that 12-bit data (0..4095) spans 0..255 as a viewer set to 12 bits shows it
    (its high byte alone read 0..15: a near-black photo, no crack and no word), and data beyond
    12 bits keeps its high byte. The depth is the photo's own: a 12-bit camera's frame whose
    largest value is under 1024 reads 4 times brighter than its siblings. 32-bit integer values are
    taken as 16 bits."""
    wide = wide.clip(0, 65535).astype(np.uint16) if wide.dtype.itemsize > 2 else wide
    top = int(wide.max(initial=0))
    bits = next(b for b in WIDE_BITS if top < 1 << b)
    return (wide >> (bits - 8)).astype(np.uint8)


def read_photo_valid(path: Path, *, bands: int | None = None,
                     exif_orientation: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """A photo (:func:`read_photo`) and its valid pixels: (H, W) bool, False where it is fully
    transparent (alpha 0, or its transparent colour), None where no pixel is.

    A cut-out photo's transparent area holds whatever colour was stored there (often black): read
    as pixels, its edge is a dark line against the pavement.
    """
    try:
        with Image.open(path) as im:
            if im.mode == "F":
                raise GeoccsegError(f"photo {Path(path).name} has 32-bit floating-point pixels; save it as an 8- or 16-bit image")
            im.load()  # decoded here, where a damaged file is an error: reading the EXIF of a PNG decodes it, and a
            # decoding error swallowed there left Pillow handing back the rows decoded so far, the rest black
            turn = TURNS.get(read_orientation(im)) if exif_orientation else None
            alpha = None
            if _transparent(im):
                alpha = np.asarray(im.convert("RGBA").getchannel("A"))
            if im.mode in _WIDE_MODES:
                im = Image.fromarray(to_8_bits(np.asarray(im)))
            stored = "RGB" if im.mode in _COLOUR_MODES else "L"
            mode = {1: "L", 3: "RGB"}.get(bands, stored)
            picture = im if im.mode == mode else im.convert(mode)
            arr = np.asarray(picture if turn is None else picture.transpose(turn))
    except UNREADABLE as exc:
        raise GeoccsegError(f"cannot read photo {Path(path).name}: {reason(exc)}") from None
    valid = None
    if alpha is not None and not alpha.all():
        valid = alpha > 0 if turn is None else np.asarray(Image.fromarray(alpha > 0).transpose(turn))
    return (arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)), valid


def _transparent(im: Image.Image) -> bool:
    """Whether an opened photo may have transparent pixels: an alpha channel or a transparent colour."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def opaque_pixels(path: Path) -> np.ndarray | None:
    """The valid pixels of a photo as stored (:func:`read_photo_valid`), None where it has no
    transparency (read from its header alone)."""
    try:
        with Image.open(path) as im:
            if not _transparent(im):
                return None
    except UNREADABLE as exc:
        raise GeoccsegError(f"cannot read photo {Path(path).name}: {reason(exc)}") from None
    return read_photo_valid(path)[1]


def photo_bands(path: Path) -> int:
    """Bands :func:`read_photo` gives a photo as stored (from its header): 3 for colour, 1 for grey.

    Raises:
        GeoccsegError: a file Pillow cannot read.
    """
    try:
        with Image.open(path) as im:
            return 3 if im.mode in _COLOUR_MODES else 1
    except UNREADABLE as exc:
        raise GeoccsegError(f"cannot read photo {Path(path).name}: {reason(exc)}") from None


def _file_id(path: Path) -> tuple[int, int] | str:
    """(device, inode) of a file, which links and other spellings of its path share."""
    try:
        st = os.stat(path)
    except OSError:
        return str(Path(path).resolve())
    return st.st_dev, st.st_ino


def photo_size(path: Path, *, exif_orientation: bool = False) -> tuple[int, int] | None:
    """(width, height) of a photo in pixels, from its header (after EXIF orientation,
    :func:`turned_for_display`: a PNG is not decoded for it); None when unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except UNREADABLE:
        return None
    return shown_size((width, height), turned_for_display(path)) if exif_orientation else (width, height)


def tiff_read_as_photo(files: Sequence[Path]) -> Path | None:
    """The first TIFF among photo ``files``, or None: a TIFF is read as a photo only without a CRS,
    most likely a scene that lost its CRS, where a scene's option or output was asked for."""
    return next((f for f in files if Path(f).suffix.lower() in GEOTIFF_SUFFIXES), None)


def assign_crs_hint(path: str | os.PathLike) -> str:
    """How to give a scene without CRS its CRS, for the messages that meet one read as a photo."""
    return f"assign its CRS first (for UTM zone 11N: `rio edit-info --crs EPSG:32611 {path}`)"


def find_photos(inputs: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The photos named by files, folders and glob patterns, in the order given (each folder and
    pattern sorted by name); folders and patterns leave out the photos inside the folders
    ``exclude`` (a run's own outputs), photos named one by one are kept.

    A folder gives its photo files (:data:`PHOTO_SUFFIXES`, hidden files left out, not recursive);
    a pattern (``photos/*.jpg``, ``site-*/**/*.png``) gives the photo files it matches.

    Raises:
        GeoccsegError: a path that does not exist, a pattern or folder with no photo, a file that
            is not a photo (a TIFF with a CRS is a georeferenced scene), no photo at all, or two
            photos with the same file stem (their outputs would share a name).
    """
    found: list[Path] = []
    excluded = [Path(folder).resolve() for folder in exclude]
    listed = lambda files: [p for p in files if not excluded or not any(f in p.resolve().parents for f in excluded)]  # noqa: E731
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = listed(p for p in sorted(path.iterdir()) if is_photo_file(p))
            warn_unread(path)
            if not files:
                raise GeoccsegError(f"folder {path} holds no photo ({', '.join(sorted(PHOTO_SUFFIXES))})")
        elif path.is_file():
            if path.suffix.lower() not in PHOTO_SUFFIXES:
                raise GeoccsegError(f"{path} is not a photo; give {', '.join(sorted(PHOTO_SUFFIXES))} files, a folder of them or a pattern "
                                    f"(a georeferenced raster of another format is read as a scene once it is a GeoTIFF: "
                                    f"gdal_translate {path.name} {path.stem}.tif)")
            files = [path]
        elif glob.has_magic(text):
            files = listed(p for p in map(Path, sorted(glob.glob(text, recursive=True))) if is_photo_file(p))
            if not files:
                raise GeoccsegError(f"pattern {text} matches no photo ({', '.join(sorted(PHOTO_SUFFIXES))}); quote it so that the shell leaves it to geoccseg")
        else:
            raise GeoccsegError(f"{path} does not exist; give a photo, a folder of photos or a pattern such as 'photos/*.jpg'")
        found += files
    photos, seen = [], set()
    for photo in found:  # a photo named twice (a folder and a pattern) is predicted once
        if photo.resolve() not in seen:
            seen.add(photo.resolve())
            photos.append(photo)
    for photo in photos:
        if georeferenced(photo):
            raise GeoccsegError(f"{photo} has a CRS: it is a georeferenced scene, not a photo; give scenes as files on their own "
                                "(geoccseg predict SCENE -o LINES.gpkg, one at a time; geoccseg suggest SCENE [SCENE ...] -o "
                                "AREAS.gpkg, e.g. tiles/*.tif)")
    stems: dict[str, Path] = {}
    for photo in photos:
        if photo.stem in stems:
            raise GeoccsegError(f"{stems[photo.stem]} and {photo} share the name {photo.stem}; their outputs would collide, predict them in separate runs")
        stems[photo.stem] = photo
    if not photos:
        raise GeoccsegError("no photo given; give a photo, a folder of photos or a pattern such as 'photos/*.jpg'")
    return photos


def georeferenced(path: Path) -> bool:
    """True for a TIFF with a CRS (a scene, not a photo); JPEG and PNG photos are never opened here."""
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        return False
    import rasterio.errors  # only where a TIFF is given

    from geoccseg.io.scene import open_raster  # without rasterio's warning for a TIFF photo without a CRS

    try:
        with open_raster(path) as src:
            return src.crs is not None
    except rasterio.errors.RasterioIOError:
        return False  # the photo reader says what is wrong with it


def read_mask(path: Path, num_classes: int = 2, unlabeled_255: bool | None = None) -> np.ndarray:
    """A mask as class indices (H, W) uint8: 0/255 masks (grey, any value from 128 up is the
    class) and 0/1 masks become 0/1; class-index masks (values below ``num_classes``, background
    included) and palette images (their indices) stay as they are, 255 beside them marking
    unlabeled pixels (:data:`IGNORE_INDEX`), as in label rasters (:func:`geoccseg.label_values.label_mode`).
    A lossy mask (JPEG, lossy WebP: compression adds values near 0 and 255) is a 0/255 mask wherever it holds a
    value from 128 up.

    Args:
        unlabeled_255: whether 255 marks unlabeled pixels in a mask of only 0 and 255, decided over
            a folder (:func:`masks_mark_unlabeled_255`: such a mask is a crack-free photo of a
            folder of 0/1/255 masks); None: it is a 0/255 mask.

    Raises:
        GeoccsegError: an unreadable file, a colour image (red on black would read as background),
            or values that are neither a 0/255 mask nor classes the model has.
    """
    arr = _mask_pixels(path)
    return mask_classes(path, held_values(arr)[0], num_classes, unlabeled_255)[arr]


def _mask_pixels(path: Path) -> np.ndarray:
    """A mask file's stored values (H, W) uint8: a palette image's indices, any other image as grey.

    Raises:
        GeoccsegError: an unreadable file, or a colour image (red on black would read as background).
    """
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16) if im.mode not in ("1", "L", "I", "I;16", "F") else None
            if rgb is not None and int((rgb.max(axis=-1) - rgb.min(axis=-1)).max(initial=0)) > COLOUR_TOLERANCE:
                raise GeoccsegError(f"mask {Path(path).name} is a colour image; give single-band masks "
                                    "(0 background, 255 or 1 the class, or class indices)")
            return np.asarray(im.convert("L"))
    except UNREADABLE as exc:
        raise GeoccsegError(f"cannot read mask {Path(path).name}: {reason(exc)}") from None


def mask_classes(path: Path, held: np.ndarray, num_classes: int = 2, unlabeled_255: bool | None = None) -> np.ndarray:
    """The class index (or :data:`IGNORE_INDEX`) of each stored value 0..255 of the mask ``path``
    holding the values ``held`` ((256,) bool): the rule of :func:`read_mask` as a lookup table.

    Raises:
        GeoccsegError: values that are neither a 0/255 mask nor classes the model has.
    """
    values = np.arange(256, dtype=np.uint8)
    if is_lossy(path) and held[128:].any():
        return (values >= 128).astype(np.uint8)  # noise near 0 and 255 (read as classes and 255, it was refused or misread)
    if unlabeled_255 and held[255] and not held[1:255].any():
        return values  # 0 background, 255 unlabeled (IGNORE_INDEX)
    mask, _ = label_mode(f"mask {Path(path).name}", held, None, max(num_classes, 2) - 1)
    return (values >= 128).astype(np.uint8) if mask else values  # 255 beside classes: IGNORE_INDEX


def masks_mark_unlabeled_255(held: Sequence[tuple[Path, np.ndarray]], k: int = 1) -> list[Path]:
    """The masks of a folder that mark unlabeled pixels with 255 (255 beside class indices 1..``k``,
    :func:`geoccseg.label_values.marks_unlabeled_255`): where there is one, a mask of only 0 and
    255 there is a photo without the class, its 255 unlabeled, as ``evaluate`` reads such a folder.

    Args:
        held: each mask's path and the values it holds ((256,) bool, :func:`held_values` of its
            stored values); lossy masks (JPEG, lossy WebP: compression noise) are left out.
        k: the number of foreground classes.
    """
    return [Path(path) for path, values in held if not is_lossy(path) and marks_unlabeled_255(values, k)]


def mask_files_mark_unlabeled_255(paths: Iterable[Path]) -> bool:
    """Whether some of these mask files mark unlabeled pixels with 255 (:func:`masks_mark_unlabeled_255`,
    one class), each read once (the ``unlabeled_255`` of :func:`read_mask` for masks read one by one after)."""
    return bool(masks_mark_unlabeled_255([(Path(path), held_values(_mask_pixels(Path(path)))[0]) for path in paths]))


def _tensors(item: dict, norm: NormStats) -> dict:
    """An image (file units) normalised and its mask as tensors; pixels outside the item's ``valid``
    (a photo's transparent part; every pixel without it) are 0 and unlabeled, as a scene's nodata."""
    image = torch.from_numpy(norm.apply(item["image"]))
    valid = torch.from_numpy(np.ascontiguousarray(item["valid"])) if item.get("valid") is not None \
        else torch.ones(image.shape[1:], dtype=torch.bool)
    image[:, ~valid] = 0.0
    out = {"image": image, "valid": valid}
    if "mask" in item:
        mask = torch.from_numpy(item["mask"].astype(np.int64))
        mask[~valid] = IGNORE_INDEX
        out["mask"] = mask
    return out


def _nearest(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask or valid plane (H, W) resampled to ``size`` by nearest, centre-aligned as the image's
    bilinear resampling (PyTorch's legacy nearest sampled up to 1.7 source px off at 0.3 m -> 1 m)."""
    out = F.interpolate(torch.from_numpy(plane.astype(np.uint8))[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return out.numpy().astype(plane.dtype)


def split_labeled(names: list[str], labeled_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Choose ``floor(len(names) * labeled_fraction)`` labeled names with a seed; the rest are unlabeled.

    Raises:
        GeoccsegError: if the fraction is outside (0, 1] or leaves no labeled image.
    """
    if not 0 < labeled_fraction <= 1:
        raise GeoccsegError(f"labeled fraction {labeled_fraction} must be in (0, 1], e.g. 0.035 for 3.5 %")
    n = int(len(names) * labeled_fraction + 1e-9)
    if n == 0:
        raise GeoccsegError(f"labeled fraction {labeled_fraction} of {len(names)} images leaves no labeled image; raise it to at least {1 / len(names):.4f}")
    order = np.random.default_rng(seed).permutation(len(names))
    labeled = sorted(names[i] for i in order[:n])
    chosen = set(labeled)
    return labeled, [n_ for n_ in names if n_ not in chosen]


def _sources(images, masks, pixel_sizes_m: Sequence[float] | None, pixel_size_m: float | None) -> tuple[dict[str, Path], dict[str, Path], dict[Path, float]]:
    """Image and mask files by stem over one or several (images, masks) folders, and the resampling
    factor of each image whose folder's pixel size differs from ``pixel_size_m``."""
    image_dirs = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    mask_dirs = [masks] if isinstance(masks, (str, os.PathLike)) else list(masks)
    if len(image_dirs) != len(mask_dirs) or not image_dirs:
        raise GeoccsegError(f"{len(image_dirs)} images folder(s) need as many masks folders, in the same order (got {len(mask_dirs)})")
    sizes = list(pixel_sizes_m or [])
    if sizes and (len(sizes) != len(image_dirs) or pixel_size_m is None):
        raise GeoccsegError(f"give one pixel size per images folder ({len(image_dirs)}) and the training pixel size to resample them to")
    image_files: dict[str, Path] = {}
    mask_files: dict[str, Path] = {}
    zoom: dict[Path, float] = {}
    for index, (image_dir, mask_dir) in enumerate(zip(image_dirs, mask_dirs)):
        found = list_images(image_dir)
        shared = sorted(set(found) & set(image_files))
        if shared:
            raise GeoccsegError(f"photo {shared[0]} is in {image_files[shared[0]].parent} and in {image_dir}; the folders of several sources need different file names")
        image_files.update(found)
        mask_files.update({stem: path for stem, path in list_images(mask_dir, "masks").items() if stem in found})
        if sizes and sizes[index] != pixel_size_m:
            zoom.update({path: sizes[index] / pixel_size_m for path in found.values()})
    return image_files, mask_files, zoom


class PhotoTrainingData(TrainingData):
    """Chips cropped from photos.

    Args:
        images: folder of photos, or several folders (sources; stems must differ between them).
        masks: folder of masks matched by stem (only the labeled ones are read); one per images
            folder, in the same order.
        labeled_fraction: share of the (non-validation) images that carry labels.
        seed: seed of the labeled / validation choice.
        val_fraction: share of the images held apart for validation (chosen with the seed, before
            the labeled choice); ignored when ``val_images`` is given.
        val_images: folder of validation photos (with ``val_masks``).
        val_masks: folder of validation masks.
        resumed: the data of a resumed run: a validation set without a pixel of a class, refused
            since runs may have begun without the check, is not refused (the run resumes as it trained).
        unlabeled_dirs: extra folders of unlabeled photos.
        classes: foreground class names (default ``["crack"]``).
        tile_px: crop edge in pixels.
        pixel_size_m: declared pixel size in metres (None when unknown).
        labeled_names: use exactly these stems as the labeled set (overrides ``labeled_fraction``).
        norm: reuse these statistics instead of computing them.
        source_pixel_sizes_m: pixel size of each images folder, in metres; photos of a folder whose
            size differs from ``pixel_size_m`` are resampled to it when read (bilinear images,
            nearest masks, both centre-aligned). None: every folder is at ``pixel_size_m``.
    """

    def __init__(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        masks: str | os.PathLike | Sequence[str | os.PathLike],
        labeled_fraction: float = 1.0,
        seed: int = 0,
        val_fraction: float = 0.0,
        val_images: str | os.PathLike | None = None,
        val_masks: str | os.PathLike | None = None,
        resumed: bool = False,
        unlabeled_dirs: list[str | os.PathLike] | None = None,
        classes: list[str] | None = None,
        tile_px: int = 256,
        pixel_size_m: float | None = None,
        labeled_names: list[str] | None = None,
        norm: NormStats | None = None,
        source_pixel_sizes_m: Sequence[float] | None = None,
    ) -> None:
        self.classes = list(classes or ["crack"])
        self.tile_px = check_tile_px(tile_px)
        self.pixel_size_m = pixel_size_m
        image_files, mask_files, self._zoom = _sources(images, masks, source_pixel_sizes_m, pixel_size_m)
        self._unreadable: set[Path] = set()  # unlabeled photos found damaged when drawn (unlabeled_chip)
        missing = sorted(set(image_files) - set(mask_files))
        if missing:
            raise GeoccsegError(f"{len(missing)} image(s) have no mask in {masks} (e.g. {', '.join(missing[:3])}); masks are matched by file name stem")
        names = sorted(image_files)
        if val_images is not None:
            val_image_files = list_images(val_images, "validation images")
            val_mask_files = list_images(val_masks, "validation masks") if val_masks else {}
            val_names = sorted(val_image_files)
            missing = sorted(set(val_names) - set(val_mask_files))
            if missing:
                raise GeoccsegError(
                    f"{len(missing)} validation image(s) have no mask (first: {missing[0]}); "
                    "pass --val-masks with a mask for every validation image"
                )
            self.val_pairs = [(val_image_files[n], val_mask_files[n]) for n in val_names]
            validating = {_file_id(image) for image, _ in self.val_pairs}  # never trained on (--val-images inside --images)
            names = [n for n in names if _file_id(image_files[n]) not in validating]
            if not names:
                folders = ", ".join(str(f) for f in ([images] if isinstance(images, (str, os.PathLike)) else images))
                raise GeoccsegError(f"every photo of {folders} is a --val-images photo, so none is left to train on; "
                                    "give --val-images a folder of other photos")
        else:
            if not 0 <= val_fraction < 1:
                raise GeoccsegError(f"validation fraction {val_fraction} must be in [0, 1)")
            n_val = int(len(names) * val_fraction)
            if val_fraction > 0 and n_val == 0:  # the run went on without validation, and its bundle without a threshold, unsaid
                enough = f"--val-fraction {math.ceil(100 / len(names)) / 100:g} or more, or --val-images" if len(names) > 1 \
                    else "--val-images (one labeled photo cannot be split)"
                log.warning("geoccseg: warning: --val-fraction %g of %d labeled photo(s) holds out none, so there is no validation "
                            "(no kept best step, no calibrated threshold: predict uses 0.5); give %s", val_fraction, len(names), enough)
            order = np.random.default_rng(seed + 1_000_003).permutation(len(names))
            held = sorted(names[i] for i in order[:n_val])
            self.val_pairs = [(image_files[n], mask_files[n]) for n in held]
            names = [n for n in names if n not in set(held)]
        if labeled_names is not None:
            unknown = sorted(set(labeled_names) - set(names))
            if unknown:
                raise GeoccsegError(f"labeled names not among the training images: {', '.join(unknown[:5])}")
            labeled = sorted(labeled_names)
            unlabeled = [n for n in names if n not in set(labeled)]
        else:
            labeled, unlabeled = split_labeled(names, labeled_fraction, seed)
        self.labeled_names = labeled
        self.labeled_pairs = [(image_files[n], mask_files[n]) for n in labeled]
        self.unlabeled_paths = [image_files[n] for n in unlabeled]
        held_apart = {_file_id(image) for image, _ in self.val_pairs}
        for folder in unlabeled_dirs or []:  # never a validation photo (--unlabeled pointed at the images folder)
            self.unlabeled_paths += [p for p in list_images(folder, "unlabeled images").values() if _file_id(p) not in held_apart]
        self._check_sizes()
        val_advice = None if resumed else ("give --val-images photos that show it" if val_images is not None else
                                           "choose another --seed or a larger --val-fraction, or give --val-images photos that show it")
        self._counts, self.unlabeled_255, self._with_foreground = self._count_labels(
            ", ".join(str(m) for m in ([masks] if isinstance(masks, (str, os.PathLike)) else masks)), val_advice)
        # colour when any labeled photo is; every photo is read with these bands (as prediction reads
        # a photo with its model's), so a folder mixing grey and colour photos trains as one
        self.bands = list(range(1, max(photo_bands(p) for p, _ in self.labeled_pairs) + 1))
        if norm is None:
            # the same photos whichever of them carry labels: runs that label other photos (active
            # labeling's strategies) normalise alike
            # by name, not path: a run resumed with its folders linked elsewhere (benchmarks) samples the same photos
            sample = sorted([p for p, _ in self.labeled_pairs] + self.unlabeled_paths, key=lambda p: (Path(p).name, str(p)))
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(sample), size=min(64, len(sample)), replace=False)
            norm = stats_from_uint8(self._readable(sample[i] for i in sorted(pick)))  # one photo in memory at a time
        self.norm = norm

    def _count_labels(self, masks: str | os.PathLike, val_advice: str | None) -> tuple[np.ndarray, bool, list[int]]:
        """Pixels per class (background first) of the labeled masks, unlabeled and transparent pixels
        left out as training leaves them (and of the validation masks, :attr:`validation_pixels`);
        refuse a foreground class without any, in the labeled masks or (but for a resumed run,
        ``val_advice`` None) in the validation masks (``val_advice``: what to do then; the F1 of a class the
        validation does not show is 1 for a model that never predicts it and 0 for any other, so it
        cannot choose the kept step). Every mask is read
        once, here, which also decides how the masks of only 0 and 255 read (returned second: whether
        their 255 is unlabeled, as the folder shows, the way ``evaluate`` reads a folder of truth).
        Third: the indices of the labeled pairs with a foreground pixel (:meth:`labeled_chip`)."""
        held, histograms = [], []
        for image, mask in self.labeled_pairs + self.val_pairs:
            stored = _mask_pixels(mask)
            held.append((mask, held_values(stored)[0]))
            opaque = opaque_pixels(image)
            histograms.append(np.bincount((stored if opaque is None else stored[opaque]).ravel(), minlength=256))
        marking = masks_mark_unlabeled_255(held, len(self.classes))
        unlabeled_255 = bool(marking)
        reread = [path for path, values in held if values[255] and not values[1:255].any()]
        if marking and reread:  # e.g. one 0/255 mask re-saved from a JPEG holds 0, 1 and 255: said, since it changes the others
            log.warning("geoccseg: warning: masks %s: %s hold%s class indices with 255 for unlabeled pixels, so the %d mask(s) of only "
                        "0 and 255 (e.g. %s) are read as photos without %s, their 255 unlabeled; if they are 0/255 masks, make "
                        "%s 0/255 too", masks, ", ".join(p.name for p in marking[:3]), "s" if len(marking) == 1 else "",
                        len(reread), reread[0].name, self.classes[0], "it" if len(marking) == 1 else "those")
        counts = np.zeros(len(self.classes) + 1, dtype=np.float64)
        validation = np.zeros(len(self.classes) + 1, dtype=np.int64)
        with_foreground = []
        for index, ((mask, values), histogram) in enumerate(zip(held, histograms)):
            labels = mask_classes(mask, values, len(counts), unlabeled_255)
            kept = (labels != IGNORE_INDEX) & (histogram > 0)  # the values it holds, unlabeled left out
            own = np.bincount(labels[kept], weights=histogram[kept], minlength=len(counts))
            if index >= len(self.labeled_pairs):
                validation += own.astype(np.int64)
                continue
            counts += own
            if own[1:].any():
                with_foreground.append(index)
        self.validation_pixels = validation if self.val_pairs else None
        for i, name in enumerate(self.classes, start=1):
            if counts[i] == 0:
                names = ", ".join(m.name for _, m in self.labeled_pairs[:3]) + (", ..." if len(self.labeled_pairs) > 3 else "")
                raise GeoccsegError(
                    f"masks {masks}: 0 {name} pixels in the {len(self.labeled_pairs)} labeled mask(s) ({names}); "
                    "label images that show it: raise --labeled-fraction, choose another --seed or --labeled-names"
                )
        for i, name in enumerate(self.classes, start=1):
            if self.val_pairs and validation[i] == 0 and val_advice is not None:  # None: a resumed run, which began without the check
                names = ", ".join(m.name for _, m in self.val_pairs[:3]) + (", ..." if len(self.val_pairs) > 3 else "")
                raise GeoccsegError(f"the {len(self.val_pairs)} validation mask(s) ({names}) hold no {name} pixel, so validation cannot "
                                    f"tell a model that finds {name} from one that finds nothing; {val_advice}")
        return counts, unlabeled_255, with_foreground

    def _check_sizes(self) -> None:
        """Every photo's header readable (the unlabeled ones too: not a failure at a random step),
        every mask of the size of its photo, and every labeled and validation photo decoded whole
        (training and validation cannot go without them; an unlabeled photo whose body is damaged
        is left out when drawn, :meth:`unlabeled_chip`)."""
        for image, mask in self.labeled_pairs + self.val_pairs + [(path, None) for path in self.unlabeled_paths]:
            a, b = photo_size(image), None if mask is None else photo_size(mask)
            for path, size, kind in ((image, a, "photo"), (mask, b, "mask")):
                if path is not None and size is None:
                    raise GeoccsegError(f"cannot read {kind} {path.name} in {path.parent}: not an image Pillow can open (corrupt, truncated or too large)")
            if mask is None or a == b:
                continue
            if photo_size(image, exif_orientation=True) == b:  # drawn on the photo as a viewer shows it
                raise GeoccsegError(f"mask {mask.name} is {b[0]}x{b[1]}, the size of photo {image.name} turned by its EXIF "
                                    f"orientation, but training reads photos as stored ({a[0]}x{a[1]}); save the photo turned "
                                    "(e.g. mogrify -auto-orient) so that its pixels and its mask agree")
            raise GeoccsegError(f"mask {mask.name} is {b[0]}x{b[1]} but image {image.name} is {a[0]}x{a[1]}; masks must match their images")
        for image, _ in self.labeled_pairs + self.val_pairs:
            try:
                read_photo(image)
            except GeoccsegError as exc:
                raise GeoccsegError(f"{exc} (in {image.parent}); replace the photo, or leave it and its mask out") from None
        turned = [(image, turn) for image, _ in self.labeled_pairs + self.val_pairs if (turn := turned_for_display(image))]
        if turned:  # a mask of the photo's size may follow the stored pixels or the turned view: the size cannot tell
            image, turn = turned[0]
            log.warning("geoccseg: warning: %d labeled photo(s) carry an EXIF orientation (e.g. %s: %d, which viewers and annotation "
                        "tools show %s); training reads photos and masks as stored: a mask drawn on the photo as shown no longer "
                        "covers its cracks there; save such photos turned (e.g. mogrify -auto-orient) with masks drawn on them",
                        len(turned), image.name, turn, SHOWN[turn])

    # -- interface ----------------------------------------------------------------------------
    def _load(self, image_path: Path, mask_path: Path | None) -> tuple[dict, NormStats]:
        """A photo as read (file units; resampled to the training pixel size when its source has
        another), its mask, and the statistics that normalise it: callers cut a chip first and
        normalise the chip alone (a chip of 256 px is a third of a DeepCrack photo). A photo's
        transparent part is held as ``valid`` (:func:`read_photo_valid`): nodata, as prediction reads it."""
        image, valid = read_photo_valid(image_path, bands=self.num_bands)
        norm = self.norm.for_image(image, valid)
        mask = read_mask(mask_path, len(self.classes) + 1, self.unlabeled_255) if mask_path is not None else None
        zoom = self._zoom.get(image_path, 1.0)
        if zoom != 1.0:  # a source of another pixel size: resample to the training pixel size
            size = (max(1, round(image.shape[1] * zoom)), max(1, round(image.shape[2] * zoom)))
            if valid is not None and valid.any():  # the transparent part's stored colour (black) would bleed into the edge
                image = np.where(valid, image, image[:, valid].mean(axis=1)[:, None, None].astype(image.dtype))
            image = F.interpolate(torch.from_numpy(image.astype(np.float32))[None], size=size, mode="bilinear", antialias=zoom < 1,
                                  align_corners=False)[0].numpy()
            mask, valid = (None if a is None else _nearest(a, size) for a in (mask, valid))
        item = {"image": image, "valid": valid, **({"mask": mask} if mask is not None else {})}
        return item, norm

    def _item(self, image_path: Path, mask_path: Path | None) -> dict:
        """A whole photo, normalised, as validation sees it."""
        item, norm = self._load(image_path, mask_path)
        return _tensors(item, norm)

    def _chip(self, image_path: Path, mask_path: Path | None, generator: torch.Generator, foreground: bool = False) -> dict:
        """A random ``tile_px`` chip of a photo, normalised; a photo smaller than a chip is padded
        on the bottom and right (invalid pixels, ignored labels). ``foreground``: the chip holds a
        foreground pixel of the mask drawn at random, at a random place in the chip."""
        item, norm = self._load(image_path, mask_path)
        t = self.tile_px
        _, h, w = item["image"].shape
        pixels = []
        if foreground and "mask" in item:  # a labeled foreground pixel in the photo's opaque part (the rest is ignored)
            pixels = np.flatnonzero((item["mask"] > 0) & (item["mask"] != IGNORE_INDEX) & (True if item["valid"] is None else item["valid"]))
        if len(pixels):  # none: a zoomed photo whose few foreground pixels the resampling lost
            row, col = divmod(int(pixels[int(torch.randint(len(pixels), (1,), generator=generator))]), w)
            top = min(max(row - int(torch.randint(t, (1,), generator=generator)), 0), max(h - t, 0))
            left = min(max(col - int(torch.randint(t, (1,), generator=generator)), 0), max(w - t, 0))
        else:
            top = int(torch.randint(max(h, t) - t + 1, (1,), generator=generator))
            left = int(torch.randint(max(w, t) - t + 1, (1,), generator=generator))
        chip = _tensors({k: None if v is None else v[..., top:top + t, left:left + t] for k, v in item.items()}, norm)
        pad_h, pad_w = t - chip["image"].shape[1], t - chip["image"].shape[2]
        if pad_h or pad_w:
            chip = {
                "image": F.pad(chip["image"], (0, pad_w, 0, pad_h)),
                "valid": F.pad(chip["valid"], (0, pad_w, 0, pad_h), value=False),
                **({"mask": F.pad(chip["mask"], (0, pad_w, 0, pad_h), value=IGNORE_INDEX)} if "mask" in chip else {}),
            }
        return chip

    def labeled_chip(self, generator: torch.Generator, foreground: bool = False) -> dict:
        if foreground and self._with_foreground:
            pick = self._with_foreground[int(torch.randint(len(self._with_foreground), (1,), generator=generator))]
        else:
            pick = int(torch.randint(len(self.labeled_pairs), (1,), generator=generator))
        image, mask = self.labeled_pairs[pick]
        return self._chip(image, mask, generator, foreground)

    def unlabeled_chip(self, generator: torch.Generator) -> dict:
        """A chip of a random unlabeled photo; a photo whose body turns out damaged (its header read
        before training) is named once (by each loader process) and left out, and another is drawn.

        Raises:
            GeoccsegError: no unlabeled photo can be read.
        """
        if not self.unlabeled_paths:
            return {k: v for k, v in self.labeled_chip(generator).items() if k != "mask"}
        while True:
            path = self.unlabeled_paths[int(torch.randint(len(self.unlabeled_paths), (1,), generator=generator))]
            if path in self._unreadable:
                if self._unreadable.issuperset(self.unlabeled_paths):  # checked on a known-bad draw only, not for every chip
                    break
                continue
            try:
                return self._chip(path, None, generator)
            except GeoccsegError as exc:
                self._left_out(path, exc)
        raise GeoccsegError(f"none of the {len(self.unlabeled_paths)} unlabeled photos can be read (e.g. {self.unlabeled_paths[0]}); "
                            "check them (an interrupted copy?) and resume")

    def _left_out(self, path: Path, exc: GeoccsegError, *, sampled: bool = False) -> None:
        """Leave out an unlabeled photo that cannot be read, and say so. ``sampled``: it was one of
        the photos the normalisation statistics are computed from, which a resume compares: mended,
        it would change them, so it can be used by a new run only."""
        self._unreadable.add(path)
        use = ("it is one of the photos the normalisation statistics come from: mended, a new run can use it, a resume of "
               "this one cannot" if sampled else "replace the file and resume to use it")
        log.warning("%s (in %s); training goes on without it (%s)", exc, path.parent, use)

    def _readable(self, paths: Iterable[Path]) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """:func:`read_photo_valid` of each photo, one at a time; unlabeled ones that cannot be read
        left out (:meth:`_left_out`)."""
        unlabeled = set(self.unlabeled_paths)
        for path in paths:
            try:
                yield read_photo_valid(path, bands=self.num_bands)
            except GeoccsegError as exc:
                if path not in unlabeled:
                    raise
                self._left_out(path, exc, sampled=True)

    def validation_items(self) -> LazyItems:
        return LazyItems(len(self.val_pairs), lambda i: self._item(*self.val_pairs[i]))

    def class_counts(self) -> np.ndarray:
        return self._counts.copy()

    def summary(self) -> dict:
        return {
            "source": "photos",
            "labeled": self.labeled_names,
            "num_labeled": len(self.labeled_pairs),
            "num_unlabeled": len(self.unlabeled_paths),
            "unlabeled_sha256": hashlib.sha256("\n".join(sorted(Path(p).name for p in self.unlabeled_paths)).encode()).hexdigest(),
            "num_validation": len(self.val_pairs),
            "validation": sorted(Path(image).stem for image, _ in self.val_pairs),
            "tile_px": self.tile_px,
            "pixel_size_m": self.pixel_size_m,
        }
