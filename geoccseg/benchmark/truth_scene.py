"""A scene with true centrelines, made from a photo and its road mask, for benchmarks that need a
larger scene than the shipped sample.

The shipped SpaceNet sample is 390 m across: outside a labeled strip it holds only a few disjoint
squares of 96 m, so strategies that choose where to label next end up labeling the same ground
(``pipelines/benchmark_suggest.py``). The road datasets with larger images (Dubai: up to
2149 x 2061 pixels at about 1 m) come as plain photos with masks of the paved surface.
:func:`photo_scene` makes such a pair into what the scene tools read: a GeoTIFF on a nominal grid
(pixel size as given, north up, in a UTM zone) and the mask's centrelines, vectorised with the
road vectoriser (:func:`geoccseg.vectorize.vectorize_array`) on the same grid.

The georeferencing is nominal: the scene is placed, not located. Distances are right up to the
dataset's uncertain pixel size, which is all the scene benchmarks need.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geoccseg.benchmark.score import read_truth_mask
from geoccseg.data.photos import read_photo
from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.io.vector_write import write_vectors
from geoccseg.vectorize import VectorizeParams, vectorize_array

NOMINAL_CRS = "EPSG:32640"
"""CRS of the nominal grid: UTM zone 40 N (the Dubai data's zone; any metric CRS would do)."""

NOMINAL_ORIGIN = (300_000.0, 2_780_000.0)
"""Top-left corner (easting, northing) of the nominal grid, metres."""


def photo_scene(
    image: str | os.PathLike, mask: str | os.PathLike, out: str | os.PathLike, *, pixel_size_m: float = 1.0,
    params: VectorizeParams | None = None,
) -> tuple[Path, Path]:
    """Write ``out/scene.tif`` (the photo, georeferenced) and ``out/truth.gpkg`` (its mask's centrelines).

    Files already there are kept when they were made from the same photo, mask, pixel size and
    vectoriser settings (recorded in ``out/source.json``, written before them); for others the folder
    is refused (it was read back as the new photo's scene). Files without a record (an older
    folder, or a run stopped before it) are made again.

    Args:
        image: the photo (RGB or grayscale, anything Pillow reads).
        mask: its road mask, same size (0/255 or 0/1).
        out: folder of the two files (created).
        pixel_size_m: ground size of a pixel, metres.
        params: vectoriser settings of the centrelines; None: the road defaults.

    Returns:
        The scene's and the truth's paths.

    Raises:
        GeoccsegError: unreadable files, sizes that differ, a mask without road, a bad pixel size.
    """
    if not pixel_size_m > 0:
        raise GeoccsegError(f"pixel_size_m must be positive metres, got {pixel_size_m}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene, truth, record = out / "scene.tif", out / "truth.gpkg", out / "source.json"
    source = {"image": str(Path(image).resolve()), "mask": str(Path(mask).resolve()), "pixel_size_m": pixel_size_m,
              "params": dataclasses.asdict((params or VectorizeParams()).resolved(None))}
    made = json.loads(record.read_text()) if record.is_file() else None
    if made is not None and made != source:
        raise GeoccsegError(f"{out} holds the scene of another photo, mask or setting ({made['image']}); "
                            "choose another folder (--runs) or remove it")
    if made is not None and scene.is_file() and truth.is_file():
        return scene, truth
    pixels = read_photo(Path(image), bands=3)
    road = read_truth_mask(Path(mask))[0]  # unlabeled pixels (255 beside class indices): no road
    if road.shape != pixels.shape[1:]:
        raise GeoccsegError(f"mask {Path(mask).name} is {road.shape[1]}x{road.shape[0]} pixels, photo {Path(image).name} "
                            f"{pixels.shape[2]}x{pixels.shape[1]}; they must match")
    if not road.any():
        raise GeoccsegError(f"mask {Path(mask).name} holds no road pixel; choose an image with roads")
    transform = Affine(pixel_size_m, 0.0, NOMINAL_ORIGIN[0], 0.0, -pixel_size_m, NOMINAL_ORIGIN[1])
    lines = vectorize_array(road.astype(np.float32), transform=transform, crs=NOMINAL_CRS, params=params)
    with atomic_path(record, overwrite=True) as tmp:  # before the scene: a run stopped on the way is made again
        tmp.write_text(json.dumps(source, indent=1))
    profile = dict(driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3, dtype="uint8", crs=NOMINAL_CRS,
                   transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate", photometric="RGB")
    with atomic_path(scene, overwrite=True) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(pixels)
    write_vectors({"road": lines}, truth, overwrite=True, crs=NOMINAL_CRS)
    return scene, truth
