"""Write the outputs of photos: probability images, overlays and the run's summary.

Every file goes through :func:`geoccseg.io.atomic.atomic_path` (a temporary name beside it, moved
into place when complete). The crack lines themselves are written by
:func:`geoccseg.io.vector_write.write_vectors`.

- ``probability/<stem>.png``: 8-bit greyscale, ``round(p x 255)``, the photo's size, tagged with
  the PNG text key ``GEOCCSEG_PROBABILITY`` = ``uint8`` (as the probability COG of scenes), so
  ``geoccseg evaluate`` reads it as p x 255 even when a photo without cracks holds only 0 and 1;
- ``overlay/<stem>.jpg``: the photo with its crack branches drawn in red, for a quick look (at
  most :data:`OVERLAY_MAX_PX` pixels on its long side: a larger photo is shown every 2nd, 3rd, ...
  pixel, so the overlay costs little memory and disk);
- ``summary.csv`` and ``summary.json``: one row per photo (:data:`SUMMARY_COLUMNS`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image, ImageDraw, PngImagePlugin, UnidentifiedImageError

from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.io.probability import PROBABILITY_TAG

SUMMARY_COLUMNS = (
    "image", "width", "height", "crack_count", "branch_count", "total_length_px", "total_length_mm",
    "max_width_px", "max_width_mm", "cracked_area_share", "status",
)
"""Columns of ``summary.csv``: sizes in pixels, lengths and widths in pixels and millimetres."""

OVERLAY_COLOUR = (255, 0, 0)
"""Colour of the crack lines on an overlay (RGB)."""

OVERLAY_MAX_PX = 2048
"""Longest side of an overlay in pixels."""


def write_probability_png(prob: np.ndarray, dest: str | os.PathLike, *, overwrite: bool = False,
                          tags: dict[str, str] | None = None) -> Path:
    """Write one class's probabilities as a tagged 8-bit PNG.

    Args:
        prob: (H, W) uint8 probabilities, p x 255.
        dest: the PNG file.
        overwrite: replace an existing file.
        tags: more PNG text keys (what predicted it, read back by :func:`probability_png_info`).
    """
    info = PngImagePlugin.PngInfo()
    info.add_text(PROBABILITY_TAG, "uint8")
    for key, value in (tags or {}).items():
        info.add_text(key, value)
    with atomic_path(dest, overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(prob, dtype=np.uint8), mode="L").save(tmp, format="PNG", pnginfo=info)
    return Path(dest)


def probability_png_info(path: str | os.PathLike) -> tuple[tuple[int, int], dict[str, str]] | None:
    """(width, height) in pixels and the text keys of a PNG written by :func:`write_probability_png`,
    from its header; None when the file is missing, unreadable or not such a PNG."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.mode != "L" or im.info.get(PROBABILITY_TAG) != "uint8":
                return None
            return im.size, {k: v for k, v in im.info.items() if isinstance(v, str)}
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def read_probability_png(path: str | os.PathLike) -> np.ndarray:
    """The (H, W) uint8 probabilities (p x 255) of a PNG written by :func:`write_probability_png`.

    Raises:
        GeoccsegError: a file that cannot be read.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")).copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise GeoccsegError(f"cannot read probability image {path}: {exc}; rerun with --overwrite") from None


def write_overlay(image: np.ndarray, branches: gpd.GeoDataFrame, dest: str | os.PathLike, *, overwrite: bool = False,
                  drawn_with: str = "") -> Path:
    """Write a JPEG of the photo with its crack branches drawn over it.

    Args:
        image: (C, H, W) uint8 photo (1 or 3 bands).
        branches: crack branches in pixel coordinates (``x = column + 0.5``, ``y = -(row + 0.5)``).
        dest: the JPEG file.
        overwrite: replace an existing file.
        drawn_with: the settings the branches were measured with, kept in the JPEG's comment
            (:func:`overlay_drawn_with`): a resumed run redraws an overlay of other settings.
    """
    step = max(1, -(-max(image.shape[1:]) // OVERLAY_MAX_PX))  # every step-th pixel
    shown = image[:, ::step, ::step]
    picture = Image.fromarray(np.ascontiguousarray(shown[0] if shown.shape[0] == 1 else np.moveaxis(shown, 0, -1)))
    if picture.mode != "RGB":
        picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    line_px = max(1, round(min(picture.size) / 300))
    for geometry in branches.geometry:
        xy = shapely.get_coordinates(geometry) / step
        draw.line([(x, -y) for x, y in xy], fill=OVERLAY_COLOUR, width=line_px)
    with atomic_path(dest, overwrite) as tmp:
        picture.save(tmp, format="JPEG", quality=90, comment=drawn_with.encode())
    return Path(dest)


def overlay_drawn_with(path: str | os.PathLike) -> str | None:
    """The settings an overlay JPEG of :func:`write_overlay` was drawn with (its comment); None
    when it has none or cannot be read."""
    try:
        with Image.open(path) as im:
            comment = im.info.get("comment")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return comment.decode(errors="replace") if isinstance(comment, bytes) else None


def write_summary(
    rows: Sequence[dict],
    csv_path: str | os.PathLike,
    json_path: str | os.PathLike,
    *,
    run: dict,
    overwrite: bool = False,
) -> None:
    """Write the per-photo rows as CSV (empty cells for unknown values) and as JSON with the run's settings.

    Args:
        rows: one dict per photo with the keys of :data:`SUMMARY_COLUMNS` (None: unknown or skipped).
        csv_path: the CSV file.
        json_path: the JSON file: ``{"run": run, "photos": rows}``.
        run: what produced the rows (model, settings, counts).
        overwrite: replace existing files.

    Raises:
        GeoccsegError: a row with keys other than :data:`SUMMARY_COLUMNS`.
    """
    for row in rows:
        if set(row) != set(SUMMARY_COLUMNS):
            raise GeoccsegError(f"summary row of {row.get('image')} has columns {sorted(row)}, expected {list(SUMMARY_COLUMNS)}")
    with atomic_path(csv_path, overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if row[k] is None else row[k] for k in SUMMARY_COLUMNS} for row in rows)
    with atomic_path(json_path, overwrite) as tmp:
        tmp.write_text(json.dumps({"run": run, "photos": [{k: row[k] for k in SUMMARY_COLUMNS} for row in rows]}, indent=2) + "\n")
