"""A photo's EXIF orientation: how viewers turn it, read from its header, and how to turn it back.

Photos are predicted as viewers show them (turned by their EXIF orientation) while masks follow the
stored pixels, as training reads them: ``predict`` records the turn in the probability PNG
(:data:`geoccseg.io.probability.TURN_TAG`) and ``evaluate`` turns it back (:func:`unturn`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

UNREADABLE = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)
"""What Pillow raises for a file it cannot read (corrupt, truncated, not an image, too large)."""

TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
"""Pillow's transposition for each EXIF orientation value (as :func:`PIL.ImageOps.exif_transpose`)."""


SHOWN = {2: "mirrored", 3: "turned 180 degrees", 4: "flipped upside down", 5: "mirrored and turned", 6: "turned 90 degrees clockwise",
          7: "mirrored and turned", 8: "turned 90 degrees anticlockwise"}
"""How viewers show a photo of each EXIF orientation, for messages."""


def read_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation tag of an open photo; None when it has none or its EXIF block is
    malformed (the photo itself is then read as stored, as most viewers do)."""
    try:
        return im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # Pillow raises many kinds on corrupt EXIF (struct.error, TypeError, ...)
        return None


def unturn(value: int) -> Image.Transpose:
    """The transposition that takes a photo turned by EXIF orientation ``value`` (2-8) back to its
    stored pixels: each turn undoes itself but the quarter turns, 6 and 8, which undo each other."""
    return TURNS[{6: 8, 8: 6}.get(value, value)]


def shown_size(size: tuple[int, int], value: int | None) -> tuple[int, int]:
    """(width, height) of a photo of stored ``size`` as viewers show it, turned by EXIF orientation
    ``value`` (None: as stored): the quarter turns and their mirrors, 5-8, swap the sides."""
    return (size[1], size[0]) if value in (5, 6, 7, 8) else size


def turned_for_display(path: Path) -> int | None:
    """The EXIF orientation (2-8) by which viewers turn or mirror a photo; None when they show it as
    stored. A PNG's EXIF is found among its chunks without decoding its pixels (Pillow decodes the
    whole image to reach an eXIf chunk stored after the pixels)."""
    try:
        with Image.open(path) as im:
            if im.format == "PNG":
                exif = _png_exif(Path(path))
                if exif is None:
                    return None
                if exif:
                    im.info["exif"] = exif  # as Pillow reads an eXIf chunk found before the pixels
                # else: text chunks that may hold it (XMP, ImageMagick's raw EXIF profile): read as the photo reader does
            orientation = read_orientation(im)
    except UNREADABLE:
        return None
    return orientation if orientation in TURNS else None


_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_ORIENTATION_TEXT = (b"XML:com.adobe.xmp\0", b"Raw profile type exif\0", b"Raw profile type APP1\0")
"""Keywords of the text chunks from which Pillow also reads a PNG's orientation (XMP; the EXIF
profile ImageMagick writes when it converts a phone's JPEG)."""


def _png_exif(path: Path) -> bytes | None:
    """The bytes of a PNG's eXIf chunk, walking its chunks' headers (the pixels are skipped, not
    decoded); ``b""`` when it has none but a text chunk that may hold the orientation
    (:data:`_PNG_ORIENTATION_TEXT`); None when it has neither."""
    texts = False
    with open(path, "rb") as f:
        f.seek(8)  # the PNG signature
        while len(header := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return f.read(length)
            if kind == b"IEND":
                break
            if kind in _PNG_TEXT:
                keyword = f.read(min(length, 32))
                texts = texts or keyword.startswith(_PNG_ORIENTATION_TEXT)
                length -= len(keyword)
            f.seek(length + 4, os.SEEK_CUR)  # the (rest of the) data and its CRC
    return b"" if texts else None
