"""Vectorise one in-memory probability array (the whole scene is a single block)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from affine import Affine
from pyproj import CRS

from geoccseg.errors import GeoccsegError
from geoccseg.vectorize.blocks import check_probability_range
from geoccseg.vectorize.lines import lines_from_skeleton, scene_pixel_size_m
from geoccseg.vectorize.params import VectorizeParams
from geoccseg.vectorize.skeleton import skeleton_pixels


def vectorize_array(
    prob: np.ndarray,
    *,
    transform: Affine,
    crs: CRS | str,
    valid: np.ndarray | None = None,
    class_name: str = "road",
    params: VectorizeParams | None = None,
) -> gpd.GeoDataFrame:
    """Turn a probability map of one class into polylines.

    Runs the same code as :func:`geoccseg.vectorize.vectorize_raster` with a single block.

    Args:
        prob: (H, W) probabilities in [0, 1]; NaN is nodata.
        transform: affine transform of the array (pixel → CRS units).
        crs: CRS of the array.
        valid: (H, W) bool, False where there is no data; None for all valid.
        class_name: value of the ``class`` column.
        params: vectoriser settings (lengths in metres); None for the defaults (a threshold of
            None: 0.5, an array records no model; :func:`geoccseg.vectorize` gives the model's).

    Returns:
        One LineString per branch between junctions/ends, in ``crs``, with columns ``class``,
        ``length_m``, ``width_m``, ``probability`` and ``geometry``.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise GeoccsegError(f"prob must be a 2-D (H, W) array, got shape {prob.shape}")
    if valid is not None and np.shape(valid) != prob.shape:
        raise GeoccsegError(f"valid has shape {np.shape(valid)}, prob has {prob.shape}; they must match")
    check_probability_range(prob, "prob", valid=valid)  # as a probability GeoTIFF is read (cubic resampling overshoots a little)
    if crs is None:
        raise GeoccsegError("crs is missing; pass the CRS of the probability array")
    params = (params or VectorizeParams()).resolved(None)
    pixel_size_m = scene_pixel_size_m(crs, transform, *prob.shape)
    pixels = skeleton_pixels(prob, valid, params, pixel_size_m)
    return lines_from_skeleton(
        pixels, transform=transform, crs=crs, pixel_size_m=pixel_size_m, class_name=class_name, params=params
    )
