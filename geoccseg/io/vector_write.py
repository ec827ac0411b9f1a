"""Write vectorised lines to GIS files: GeoPackage, GeoJSON, FlatGeobuf or Shapefile.

The format follows the extension. A GeoPackage gets one layer per class, named after it; the
single-layer formats get all classes in one layer, told apart by the ``class`` column. The CRS
is always written. Files are written under a temporary name and renamed when complete
(:func:`geoccseg.io.atomic.atomic_path`); a Shapefile and its sidecar files are written into a
temporary folder and moved into place together. A folder where a file is expected is refused,
never removed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS

from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path, check_writable, move_into_place, scratch_dir

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf", ".shp": "ESRI Shapefile"}
_SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")


def vector_driver(path: str | os.PathLike) -> str:
    """The OGR driver for an output path, from its extension.

    Raises:
        GeoccsegError: if the extension is not one of :data:`DRIVERS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        raise GeoccsegError(f"cannot write {path}: unknown extension '{suffix}'; use one of {', '.join(DRIVERS)}")
    return DRIVERS[suffix]


def write_vectors(
    layers: dict[str, gpd.GeoDataFrame],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    crs: CRS | str | None = None,
    pixel_coordinates: bool = False,
) -> Path:
    """Write lines of one or more classes to one file.

    Args:
        layers: one GeoDataFrame per class, keyed by class name (e.g. from
            :func:`geoccseg.vectorize.vectorize_raster`); empty frames give empty layers.
        path: output file; ``.gpkg``, ``.geojson``, ``.fgb`` or ``.shp``.
        overwrite: replace an existing file.
        crs: CRS to write in: frames in another CRS are reprojected, frames without one are
            taken to be in it. None: the CRS the frames share.
        pixel_coordinates: the lines are in the pixel coordinates of an image without
            georeferencing (photos): written without a CRS, which GIS then shows as unknown.

    Returns:
        The path written.

    Raises:
        GeoccsegError: unknown extension, existing output without ``overwrite``, no layers,
            unknown or conflicting CRS.
    """
    path = Path(path)
    driver = vector_driver(path)
    check_writable(path, overwrite, example=f"lines{path.suffix}")
    if not layers:
        raise GeoccsegError(f"nothing to write to {path}: no layers given; pass one GeoDataFrame per class")
    if pixel_coordinates:
        target, frames = None, {name: frame.set_crs(None, allow_override=True) for name, frame in layers.items()}
    else:
        target = _target_crs(layers, crs)
        frames = {name: _in_crs(frame, target) for name, frame in layers.items()}
    if driver == "GPKG":
        with atomic_path(path, overwrite) as tmp:
            for name, frame in frames.items():
                _write(frame, tmp, name, driver)
        return path
    merged = gpd.GeoDataFrame(pd.concat(list(frames.values()), ignore_index=True), geometry="geometry", crs=target)
    if driver == "ESRI Shapefile":
        _write_shapefile(merged, path, overwrite)
    else:
        with atomic_path(path, overwrite) as tmp:
            _write(merged, tmp, path.stem, driver)
    return path


def _target_crs(layers: dict[str, gpd.GeoDataFrame], crs: CRS | str | None) -> CRS:
    """The one CRS to write in."""
    if crs is not None:
        return CRS.from_user_input(crs)
    found = {CRS.from_user_input(frame.crs) for frame in layers.values() if frame.crs is not None}
    if not found:
        raise GeoccsegError("the CRS of the lines is unknown; set it on the GeoDataFrames or pass crs=")
    if len(found) > 1:
        names = ", ".join(sorted(c.to_string() for c in found))
        raise GeoccsegError(f"the layers are in different CRSs ({names}); pass crs= to write them all in one")
    return found.pop()


def _in_crs(frame: gpd.GeoDataFrame, crs: CRS) -> gpd.GeoDataFrame:
    """The frame in ``crs``: reprojected, or labelled when it has no CRS."""
    if frame.crs is None:
        return frame.set_crs(crs)
    return frame if CRS.from_user_input(frame.crs) == crs else frame.to_crs(crs)


def _write(frame: gpd.GeoDataFrame, path: Path, layer: str, driver: str) -> None:
    """Write one layer with pyogrio; LineString layers are typed as such even when empty, and an empty
    frame whose ``attrs["geometry_type"]`` names another type (the Points of graph nodes) as that."""
    lines_only = bool(frame.geom_type.eq("LineString").all())
    kind = frame.attrs.get("geometry_type") if len(frame) == 0 else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # pixel coordinates, on purpose
        pyogrio.write_dataframe(frame, path, layer=layer, driver=driver, geometry_type=kind or ("LineString" if lines_only else None))


def _write_shapefile(frame: gpd.GeoDataFrame, path: Path, overwrite: bool) -> None:
    """Write a Shapefile and its sidecars in a work folder, then move them all into place.

    With ``overwrite`` the sidecars of the old Shapefile are removed (an old ``.qix`` index would
    not match the new file); without it none may exist. A folder in place of any part is refused.
    """
    for ext in _SHAPEFILE_PARTS:
        check_writable(path.with_suffix(ext), overwrite, example=f"roads{ext}")
    taken = [path.with_suffix(ext) for ext in _SHAPEFILE_PARTS if path.with_suffix(ext).is_file()]
    # DBF field names hold 10 characters: cut them here rather than let GDAL warn about it.
    frame = frame.rename(columns={c: c[:10] for c in frame.columns if c != frame.geometry.name and len(c) > 10})
    moved: list[Path] = []
    with scratch_dir(path) as staging:
        try:
            _write(frame, staging / path.name, path.stem, "ESRI Shapefile")
            with atomic_path(path, overwrite) as tmp:
                for old in taken:
                    old.unlink(missing_ok=True)
                for part in sorted(staging.iterdir()):
                    if part.name != path.name:
                        dest = path.with_suffix(part.suffix)
                        move_into_place(part, dest, overwrite)
                        moved.append(dest)
                os.replace(staging / path.name, tmp)
        except BaseException:
            for dest in moved:
                dest.unlink(missing_ok=True)
            raise
