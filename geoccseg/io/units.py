"""Pixel sizes and lengths in metres, whatever the CRS.

Projected CRSs give metres (or feet, converted) directly. Geographic CRSs (degrees) are converted
at a given latitude with the WGS84 ellipsoid, so that a pixel of a 0.3 m SpaceNet chip in
EPSG:4326 is reported as about 0.3 m by 0.3 m.
"""

from __future__ import annotations

import math

import geopandas as gpd
from affine import Affine
from pyproj import CRS, Geod

from geoccseg.errors import GeoccsegError

_GEOD = Geod(ellps="WGS84")


def pixel_size_m(crs: CRS | str, transform: Affine, at_lonlat_or_xy: tuple[float, float] | None = None) -> tuple[float, float]:
    """Return the (x, y) size of one pixel in metres.

    Args:
        crs: CRS of the raster.
        transform: affine transform of the raster (pixel -> CRS units); rotation terms are allowed.
        at_lonlat_or_xy: for geographic CRSs, the point (in CRS units) where the size is measured,
            usually the scene centre. Ignored for projected CRSs.
    """
    crs = CRS.from_user_input(crs)
    dx = math.hypot(transform.a, transform.d)
    dy = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lon, lat = at_lonlat_or_xy if at_lonlat_or_xy is not None else (transform.c, transform.f)
        _, _, x_m = _GEOD.inv(lon - dx / 2, lat, lon + dx / 2, lat)
        _, _, y_m = _GEOD.inv(lon, lat - dy / 2, lon, lat + dy / 2)
        return float(x_m), float(y_m)
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(dx * unit), float(dy * unit)


def mean_pixel_size_m(crs: CRS | str, transform: Affine, at_lonlat_or_xy: tuple[float, float] | None = None) -> float:
    """Geometric mean of :func:`pixel_size_m`, the single figure used for resampling decisions."""
    x_m, y_m = pixel_size_m(crs, transform, at_lonlat_or_xy)
    return math.sqrt(x_m * y_m)


def metric_crs(geometries: gpd.GeoSeries) -> CRS:
    """A CRS in metres for ``geometries``: their own when projected in metres, else their local UTM zone.

    Raises:
        GeoccsegError: if ``geometries`` have no CRS.
    """
    if geometries.crs is None:
        raise GeoccsegError("lines have no CRS, so lengths in metres are unknown; set a CRS on the vector file")
    crs = CRS.from_user_input(geometries.crs)
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        return crs
    return geometries.estimate_utm_crs()
