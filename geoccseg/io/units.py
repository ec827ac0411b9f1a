"""Pixel sizes and lengths in metres, whatever the CRS.

Projected CRSs made for measuring (UTM, state planes, national grids: scale within 1 % of true)
give metres (or feet, converted) directly. Others are divided by their scale at the point: Web
Mercator (EPSG:3857, the CRS of web map tiles) draws 1 m of ground as 1/cos(latitude) of its
metres, 1.24 at Las Vegas, 1.41 at 45 degrees. Geographic CRSs (degrees) are converted at a given
latitude with the WGS84 ellipsoid, so that a pixel of a 0.3 m SpaceNet chip in EPSG:4326 is
reported as about 0.3 m by 0.3 m.
"""

from __future__ import annotations

import functools
import math

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Proj, Transformer
from pyproj.exceptions import ProjError

from geoccseg.errors import GeoccsegError

_GEOD = Geod(ellps="WGS84")

TRUE_SCALE_TOLERANCE = 0.01
"""A projected CRS whose scale is within this of 1 at a point measures ground metres there."""


@functools.lru_cache(maxsize=64)
def point_scale(crs: CRS, x: float, y: float) -> tuple[float, float]:
    """(x, y) scale of a projected CRS at the point ``(x, y)`` (its units): its metres per metre of
    ground along the parallel and the meridian, (1, 1) where both are within
    :data:`TRUE_SCALE_TOLERANCE` of 1 or cannot be computed."""
    try:
        lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
        factors = Proj(crs).get_factors(lon, lat)
        scale = float(factors.parallel_scale), float(factors.meridional_scale)
    except (ProjError, AttributeError, TypeError):
        return 1.0, 1.0
    if not all(math.isfinite(k) and k > 0 for k in scale) or all(abs(k - 1) <= TRUE_SCALE_TOLERANCE for k in scale):
        return 1.0, 1.0
    return scale


def pixel_size_m(crs: CRS | str, transform: Affine, at_lonlat_or_xy: tuple[float, float] | None = None) -> tuple[float, float]:
    """Return the (x, y) size of one pixel in metres.

    Args:
        crs: CRS of the raster.
        transform: affine transform of the raster (pixel -> CRS units); rotation terms are allowed.
        at_lonlat_or_xy: the point (in CRS units) where the size is measured, usually the scene
            centre; None: the transform's origin. Projected CRSs use it only where their scale is
            not true (:func:`point_scale`).
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
    x, y = at_lonlat_or_xy if at_lonlat_or_xy is not None else (transform.c, transform.f)
    kx, ky = point_scale(crs, float(x), float(y))
    return float(dx * unit / kx), float(dy * unit / ky)


def mean_pixel_size_m(crs: CRS | str, transform: Affine, at_lonlat_or_xy: tuple[float, float] | None = None) -> float:
    """Geometric mean of :func:`pixel_size_m`, the single figure used for resampling decisions."""
    x_m, y_m = pixel_size_m(crs, transform, at_lonlat_or_xy)
    return math.sqrt(x_m * y_m)


def metric_crs(geometries: gpd.GeoSeries) -> CRS:
    """A CRS in metres for ``geometries``: their own when projected in metres at true scale where
    they are (:func:`point_scale`; not Web Mercator) or a local grid in metres with no place on the
    earth (an engineering CRS: a site grid is drawn at true scale, and no transformation leads
    elsewhere), else their local UTM zone.

    Raises:
        GeoccsegError: if ``geometries`` have no CRS, or a local one not in metres.
    """
    if geometries.crs is None:
        raise GeoccsegError("lines have no CRS, so lengths in metres are unknown; set a CRS on the vector file")
    crs = CRS.from_user_input(geometries.crs)
    if crs.geodetic_crs is None:
        if crs.axis_info and all(axis.unit_name in ("metre", "meter") for axis in crs.axis_info):
            return crs
        unit = crs.axis_info[0].unit_name if crs.axis_info else "no unit"
        raise GeoccsegError(f"lines are in a local CRS ({crs.name}) in {unit}, with no place on the earth, so lengths in metres "
                            "are unknown; georeference the scene, or export it in a local grid in metres")
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        xmin, ymin, xmax, ymax = geometries.total_bounds if len(geometries) else (0.0, 0.0, 0.0, 0.0)
        if point_scale(crs, float(xmin + xmax) / 2, float(ymin + ymax) / 2) == (1.0, 1.0):
            return crs
    return geometries.estimate_utm_crs()


EDGE_PARTS = 64
"""Polygon edges are cut into pieces of at most 1/this of their geometry's extent before a
reprojection (:func:`reprojected`); :func:`geoccseg.io.labels.raster_footprint` does the same."""


def reprojected(shapes: gpd.GeoSeries | gpd.GeoDataFrame, crs, what: str = "shapes") -> gpd.GeoSeries | gpd.GeoDataFrame:
    """``shapes`` in ``crs``, their edges densified first (each into pieces of at most 1/:data:`EDGE_PARTS`
    of its geometry's extent) so that they stay where they are: a reprojection moves vertices
    only, and the straight edge between two vertices in one CRS is a curve in another (a 20 km AOI
    drawn in degrees on a UTM scene sat about 6 m off at mid-edge, a strip trained as labeled
    background or left out).

    Raises:
        GeoccsegError: one of the two CRSs is a local grid (an engineering CRS: a drone
            orthomosaic's "local coordinates") that has no place in the other; ``what`` names the
            shapes in the message.
    """
    if shapes.crs is None:
        return shapes
    if CRS.from_user_input(crs) == CRS.from_user_input(shapes.crs):
        return shapes.to_crs(crs)
    try:
        return (_densified(shapes) if len(shapes) else shapes).to_crs(crs)  # none: a transformation all the same
    except ProjError:
        raise GeoccsegError(
            f"{what} in {CRS.from_user_input(shapes.crs).name} cannot be placed in {CRS.from_user_input(crs).name}: a local grid "
            "(local coordinates) has no place on the earth; give the scenes, AOI and labels in one CRS") from None


def _densified(shapes: gpd.GeoSeries | gpd.GeoDataFrame) -> gpd.GeoSeries | gpd.GeoDataFrame:
    """``shapes`` with their edges cut into pieces of at most 1/:data:`EDGE_PARTS` of each geometry's extent."""
    bounds = shapes.geometry.bounds
    extent = (bounds[["maxx", "maxy"]].to_numpy() - bounds[["minx", "miny"]].to_numpy()).max(axis=1) / EDGE_PARTS
    geometry = shapes.geometry.values
    extent = np.where(np.isfinite(extent) & (extent > 0), extent, 1e300)  # empty or a point: nothing to cut
    dense = shapely.segmentize(geometry, max_segment_length=extent)
    moved = shapes.copy()
    moved = moved.set_geometry(gpd.GeoSeries(dense, index=shapes.index, crs=shapes.crs)) if isinstance(moved, gpd.GeoDataFrame) \
        else gpd.GeoSeries(dense, index=shapes.index, crs=shapes.crs)
    return moved
