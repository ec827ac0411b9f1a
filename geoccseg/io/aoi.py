"""Areas of interest: polygons that mark where labels are complete (or held apart for validation)."""

from __future__ import annotations

import os

import geopandas as gpd
import shapely
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.io.labels import exploded_collections, read_vector
from geoccseg.io.units import reprojected


def read_aoi(path: str | os.PathLike, crs, footprint: BaseGeometry | None = None, what: str = "AOI") -> BaseGeometry:
    """Read AOI polygons, reproject them to ``crs`` and dissolve them into one geometry.

    Args:
        path: vector file with polygons.
        crs: target (scene) CRS.
        footprint: the scene footprint in ``crs``; when given, the AOI is clipped to it and must overlap it.
        what: name used in error messages (``AOI``, ``validation AOI``).

    Raises:
        GeoccsegError: no polygon, empty after clipping, or no overlap with the scene.
    """
    geom = dissolved(read_polygons(path, what), crs, path, what)
    if footprint is not None:
        if not geom.intersects(footprint):
            raise GeoccsegError(f"{what} {path} does not overlap the scene; check its location and CRS")
        geom = areal(geom.intersection(footprint))
        if geom is None:
            raise GeoccsegError(f"{what} {path} only touches the scene's edge; it must overlap the scene")
    return geom


def read_polygons(path: str | os.PathLike, what: str = "AOI") -> gpd.GeoDataFrame:
    """The polygons of an AOI file, in its own CRS (read once where several rasters need them).

    Raises:
        GeoccsegError: an unreadable file, or one without polygons.
    """
    gdf = read_vector(path, what)
    gdf = exploded_collections(gdf)  # a collection's polygons are areas like any (they were dropped without a word)
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if len(gdf) == 0:
        raise GeoccsegError(f"{what} {path} holds no polygon; draw the area as polygons")
    return gdf


def dissolved(polygons: gpd.GeoDataFrame, crs, path: str | os.PathLike, what: str = "AOI") -> BaseGeometry:
    """AOI polygons (:func:`read_polygons`) reprojected to ``crs`` and dissolved into one geometry.

    Raises:
        GeoccsegError: their area is zero.
    """
    geom = areal(shapely.union_all(reprojected(polygons, crs, what=f"{what} {path}").geometry.make_valid().values))  # a repaired spike is a line
    if geom is None:
        raise GeoccsegError(f"{what} {path} is empty (zero area); draw the area as polygons")
    return geom


def areal(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The polygons of ``geom``, without the lines and points an overlay or a repair leaves where
    areas only touch (two adjacent tiles share an edge: their intersection is a line, which the
    chip samplers cannot clip to); None where no area is left."""
    if geom is None or geom.is_empty:
        return None
    polygons = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "GeometryCollection":
            part = areal(part)
        if part is not None and part.geom_type in ("Polygon", "MultiPolygon") and part.area > 0:
            polygons.append(part)
    return shapely.union_all(polygons) if polygons else None
