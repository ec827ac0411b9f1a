"""A scene as a lazy, chunked xarray: Dask graphs over the one scene reader.

``rioxarray.open_rasterio`` only knows nodata values; it misses alpha bands and internal masks.
So the lazy array is built from :meth:`Scene.read` block by block (one Dask task per chunk) and
carries its CRS and transform through rioxarray, which keeps a single definition of "valid pixel"
across training, statistics and prediction.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.windows import Window

from geoccseg.io.scene import Scene


def _read_block(scene: Scene, row: int, col: int, height: int, width: int) -> np.ndarray:
    image, valid = scene.read(Window(col, row, width, height))
    return np.concatenate([image, valid[None].astype(np.float32)], axis=0)


def chunk_windows(height: int, width: int, chunk_px: int) -> list[list[Window]]:
    """Row-major grid of windows of at most ``chunk_px`` pixels covering a raster."""
    return [
        [Window(c, r, min(chunk_px, width - c), min(chunk_px, height - r)) for c in range(0, width, chunk_px)]
        for r in range(0, height, chunk_px)
    ]


def open_lazy(scene: Scene, chunk_px: int = 1024) -> xr.Dataset:
    """Open a scene as a Dask-backed :class:`xarray.Dataset`.

    Args:
        scene: the opened scene.
        chunk_px: chunk edge in pixels.

    Returns:
        Dataset with ``image`` (band, y, x) float32 in file units and ``valid`` (y, x) bool, with
        x/y coordinates of pixel centres and the scene CRS written through rioxarray.
    """
    rows = []
    for row in chunk_windows(scene.height, scene.width, chunk_px):
        blocks = []
        for w in row:
            task = dask.delayed(_read_block)(scene, int(w.row_off), int(w.col_off), int(w.height), int(w.width))
            blocks.append(da.from_delayed(task, shape=(len(scene.bands) + 1, int(w.height), int(w.width)), dtype=np.float32))
        rows.append(da.concatenate(blocks, axis=2))
    stack = da.concatenate(rows, axis=1)
    t = scene.transform
    xs = t.c + (np.arange(scene.width) + 0.5) * t.a
    ys = t.f + (np.arange(scene.height) + 0.5) * t.e
    ds = xr.Dataset(
        {
            "image": (("band", "y", "x"), stack[:-1]),
            "valid": (("y", "x"), stack[-1] > 0),
        },
        coords={"band": list(scene.bands), "y": ys, "x": xs},
    )
    return ds.rio.write_crs(scene.crs).rio.write_transform(scene.transform)
