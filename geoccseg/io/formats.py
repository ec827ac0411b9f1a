"""The file extensions the project reads and writes, in one place.

Every check of an input's or an output's extension uses these tables (compared lower-case), so
that a file accepted by one command is accepted by every command that reads that kind of file.
Where two tables differ, it is on purpose, and said here:

- **Rasters read through GDAL** (:data:`RASTER_SUFFIXES`): scenes, raster labels and
  evaluation rasters; GeoTIFF and GDAL's virtual rasters (``.vrt``: a mosaic or a band subset,
  which GDAL reads as one raster). Written GeoTIFFs (the probability and confidence COGs) take
  the GeoTIFF extensions only (:data:`GEOTIFF_SUFFIXES`): the COG driver writes GeoTIFF.
- **Plain images** (:data:`IMAGE_SUFFIXES`): read with Pillow, never georeferenced: photos,
  their masks, and the PNG/JPEG/BMP rasters of evaluation. Photos and their masks
  (:data:`PHOTO_SUFFIXES`) may also be TIFFs: a TIFF without a CRS is a photo, one with a CRS a
  scene (:func:`geoccseg.inference.pipeline.is_scene`).
- **Vectors read** (:data:`VECTOR_SUFFIXES`): labels, areas of interest and evaluation vectors,
  ``.json`` included (GDAL reads it as GeoJSON). Only when evaluation pairs the files of two
  folders is ``.json`` left out (:data:`FOLDER_VECTOR_SUFFIXES`): beside predictions a ``.json``
  is more often metadata (a STAC item, ``summary.json``) than lines.
- **Vectors written** (:data:`VECTOR_DRIVERS`): one extension per format, the one its driver is
  chosen by; ``.json`` is read but never written, since it names many files that are not GeoJSON.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

GEOTIFF_SUFFIXES = (".tif", ".tiff")
"""GeoTIFF files: the names of the probability and confidence COGs written."""

RASTER_SUFFIXES = (*GEOTIFF_SUFFIXES, ".vrt")
"""Georeferenced rasters read through GDAL: scenes, raster labels and evaluation rasters."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp")
"""Plain images read with Pillow (no georeferencing): photos, photo masks, evaluation images."""

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
"""JPEG images, whose compression blurs a mask's edges (a mask of them is thresholded at 128). A
WebP may be either: :func:`is_lossy` reads which."""

UNREAD_PHOTO_SUFFIXES = (".heic", ".heif")
"""Photos Pillow cannot read without a plug-in (an iPhone's default): named when a folder holds
them, not left out silently."""

PHOTO_SUFFIXES = (*IMAGE_SUFFIXES, *GEOTIFF_SUFFIXES)
"""Photos and their masks: plain images, or TIFFs without a CRS."""

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb", ".shp")
"""Vector files read: labels, areas of interest and evaluation vectors."""

FOLDER_VECTOR_SUFFIXES = tuple(suffix for suffix in VECTOR_SUFFIXES if suffix != ".json")
"""Vector files that evaluation pairs by name between two folders (``.json`` there is metadata)."""

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf", ".shp": "ESRI Shapefile"}
"""Vector files written, by extension, with the OGR driver that writes each."""


def is_lossy(path: str | os.PathLike) -> bool:
    """Whether the image ``path`` is lossily compressed, so that a mask in it holds noise near 0 and
    255 and is thresholded at 128: a JPEG (:data:`LOSSY_SUFFIXES`), or a WebP whose image is VP8
    (lossy) rather than VP8L (lossless, which may hold 0/1/255 class indices that 128 would invert).
    A lossy 0/255 mask can decode to exactly 0, 1 and 255, which read as indices would make its
    cracks unlabeled and its 1s cracks. A WebP that cannot be read is not lossy here: its reader
    says why."""
    suffix = Path(path).suffix.lower()
    if suffix in LOSSY_SUFFIXES:
        return True
    return suffix == ".webp" and _webp_image_chunk(path) == b"VP8 "


def _webp_image_chunk(path: str | os.PathLike) -> bytes | None:
    """The FourCC of a WebP file's image chunk (``VP8 `` lossy, ``VP8L`` lossless), walking the
    RIFF chunks of an extended (``VP8X``) file; None where the file is not a readable WebP."""
    try:
        with open(path, "rb") as f:
            header = f.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WEBP":
                return None
            while len(chunk := f.read(8)) == 8:
                fourcc, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if fourcc in (b"VP8 ", b"VP8L"):
                    return fourcc
                f.seek(size + size % 2, os.SEEK_CUR)
    except OSError:
        return None
    return None
