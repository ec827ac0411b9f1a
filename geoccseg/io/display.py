"""A scene read for drawing: decimated, its first three bands (or its one band, grey), stretched.

The demo's preview and the benchmark plots draw scenes of any band count and data type: uint8
RGB, a four-band RGB+alpha, a one-band uint16 panchromatic image. Drawn as they are, a uint16
scene comes out black or white (matplotlib clips floats to 0..1 and scales integers by their
type) and a one-band one cannot be read as three bands at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from rasterio.crs import CRS

from geoccseg.io.scene import open_raster


@dataclass(frozen=True)
class DisplayImage:
    """``image``: H x W x 3 (or H x W for one band) floats in 0..1; ``extent``: (left, right,
    bottom, top) in the scene's CRS, as ``imshow`` takes it; ``aspect``: the axes' aspect ratio
    that keeps ground distances square (degrees of longitude shrink with latitude)."""

    image: np.ndarray
    extent: tuple[float, float, float, float]
    crs: CRS | None
    aspect: float

    @property
    def cmap(self) -> str | None:
        """The colour map for ``imshow``: grey for one band (matplotlib ignores it for RGB)."""
        return "gray" if self.image.ndim == 2 else None


def read_display(scene: str | os.PathLike, max_px: int = 900, percentiles: tuple[float, float] = (1.0, 99.0)) -> DisplayImage:
    """Read ``scene`` decimated so that its longer side is at most about ``max_px`` pixels, its
    bands 1-3 (band 1 alone when it has fewer than three), stretched linearly between the
    ``percentiles`` of its valid values to 0..1; nodata (and NaN) pixels are drawn black."""
    with open_raster(scene) as ds:
        scale = max(1, int(np.ceil(max(ds.width, ds.height) / max_px)))
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        shape = (len(bands), max(1, ds.height // scale), max(1, ds.width // scale))
        image = ds.read(bands, out_shape=shape).astype(np.float32)
        valid = (ds.read_masks(bands, out_shape=shape) > 0) & np.isfinite(image)
        extent = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)
        crs = ds.crs
    geographic = crs is not None and crs.is_geographic
    aspect = 1 / np.cos(np.radians((extent[2] + extent[3]) / 2)) if geographic else 1.0
    lo, hi = np.percentile(image[valid], percentiles) if valid.any() else (0.0, 1.0)  # a -9999 collar is no brightness
    image = np.where(valid, np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1), 0.0).astype(np.float32)
    return DisplayImage(np.moveaxis(image, 0, -1) if len(bands) == 3 else image[0], extent, crs, float(aspect))
