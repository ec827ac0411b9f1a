"""Write vectorised lines to GIS files: GeoPackage, GeoJSON, FlatGeobuf or Shapefile.

The format follows the extension. A GeoPackage gets one layer per class, named after it; the
single-layer formats get all classes in one layer, told apart by the ``class`` column. The CRS
is always written. A file (a Shapefile with its sidecar files) is written into a work folder and
moved into place when complete, with any other outputs of the run given to it, as one set
(:func:`geoccseg.io.atomic.move_all_into_place`). A folder where a file is expected is refused,
never removed.

Each format is written as the widest range of GIS software reads it:

- GeoPackage: version 1.2 (:data:`GPKG_VERSION`), which GDAL >= 2.2 and QGIS LTR 3.22 read
  without warnings (GDAL 3.12 would write 1.4, which GDAL < 3.7 warns about); ``gpkg_version``
  asks for another.
- GeoJSON: RFC 7946, i.e. longitude/latitude in WGS 84 (EPSG:4326, reprojected from the lines'
  CRS), no ``crs`` member, coordinates to :data:`GEOJSON_DECIMALS` decimals (about 1 cm). Lines in
  the pixel coordinates of a photo cannot be reprojected and are written as they are, without CRS.
- Shapefile: DBF field names hold 10 characters, so longer columns are renamed in ``.shp`` output
  only (:data:`SHAPEFILE_FIELDS`, e.g. ``probability`` -> ``prob``); any other long column is cut
  to 10 characters, kept unique, with a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS

from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import check_writable, follow_umask, move_all_into_place, scratch_dir
from geoccseg.io.formats import VECTOR_DRIVERS

_SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")

#: GeoPackage version written unless asked otherwise: the widest read (GDAL >= 2.2, QGIS LTR 3.22).
GPKG_VERSION = "1.2"
#: GeoPackage versions GDAL can write.
GPKG_VERSIONS = ("1.2", "1.3", "1.4")
#: Decimals of GeoJSON coordinates in degrees (1e-7 degree is about 1 cm on the ground).
GEOJSON_DECIMALS = 7
#: Shapefile names of the output columns longer than a DBF field name (10 characters); ``.shp`` only.
SHAPEFILE_FIELDS = {
    "probability": "prob",  # lines and road-graph edges
    "mean_width_px": "mean_wd_px", "max_width_px": "max_wd_px", "orientation_deg": "orient_deg",  # crack branches
    "mean_width_mm": "mean_wd_mm", "max_width_mm": "max_wd_mm",
    "acquisition": "acquisit", "low_confidence": "low_conf", "disagreement": "disagree", "valid_share": "valid_shr",  # suggest
}
_DBF_NAME_CHARS = 10


def vector_driver(path: str | os.PathLike) -> str:
    """The OGR driver for an output path, from its extension.

    Raises:
        GeoccsegError: if the extension is not one of :data:`~geoccseg.io.formats.VECTOR_DRIVERS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_DRIVERS:
        raise GeoccsegError(f"cannot write {path}: unknown extension '{suffix}'; use one of {', '.join(VECTOR_DRIVERS)}")
    return VECTOR_DRIVERS[suffix]


def check_vector_output(path: str | os.PathLike, overwrite: bool = False, example: str = "roads.gpkg") -> Path:
    """Check a lines output before any work: a known extension (:func:`vector_driver`), a name
    that can be written (:func:`~geoccseg.io.atomic.check_writable`), and for a Shapefile each of
    its parts (without ``overwrite`` none may exist: a leftover ``roads.dbf`` was found only
    when the lines were written, after the prediction).

    Returns:
        The path, as :func:`~geoccseg.io.atomic.check_writable` gives it.

    Raises:
        GeoccsegError: what is in the way, and how to fix it.
    """
    path = check_writable(path, overwrite, example=example)
    vector_driver(path)
    if path.suffix.lower() == ".shp":
        for ext in _SHAPEFILE_PARTS:
            check_writable(path.with_suffix(ext), overwrite, example=f"{Path(example).stem}{ext}")
    return path


def check_vector_crs(path: str | os.PathLike, source: str | os.PathLike) -> None:
    """Refuse, before any work, a GeoJSON output of the lines of the raster ``source`` in a CRS with
    no place on the earth (a drone orthomosaic in "local coordinates", an engineering CRS): GeoJSON
    holds WGS 84 coordinates (RFC 7946), and no transformation leads there, so the run failed at its
    very end. Only a ``.geojson`` output opens ``source`` (its header); one that cannot be opened, or
    has no CRS, is left to the reader that says why.

    Raises:
        GeoccsegError: ``path`` is ``.geojson`` and ``source``'s CRS has no geodetic datum.
    """
    if Path(path).suffix.lower() != ".geojson":
        return
    import rasterio.errors

    from geoccseg.io.scene import open_raster  # rasterio: only for a GeoJSON output

    try:
        with open_raster(source) as ds:
            crs = ds.crs
    except rasterio.errors.RasterioIOError:
        return
    if crs is None:
        return
    crs = CRS.from_user_input(crs)
    if crs.geodetic_crs is None:
        raise GeoccsegError(f"cannot write {path}: GeoJSON holds WGS 84 coordinates, and {source} is in a local CRS ({crs.name}) "
                            "with no place on the earth; write .gpkg or .fgb, which keep its CRS")


def write_vectors(
    layers: dict[str, gpd.GeoDataFrame],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    crs: CRS | str | None = None,
    pixel_coordinates: bool = False,
    gpkg_version: str = GPKG_VERSION,
    metadata: dict[str, str] | None = None,
    together: Sequence[tuple[Path, Path]] = (),
) -> Path:
    """Write lines of one or more classes to one file.

    The file (a Shapefile: with its sidecar files) is written in a work folder beside ``path``,
    then moved into place with :func:`~geoccseg.io.atomic.move_all_into_place`: a set, the lines
    last, or nothing. With ``overwrite`` the old Shapefile parts the new one has not (an old
    ``.qix`` index would not match it) are removed once the new set is in place.

    Args:
        layers: one GeoDataFrame per class, keyed by class name (e.g. from
            :func:`geoccseg.vectorize.vectorize_raster`); empty frames give empty layers.
        path: output file; ``.gpkg``, ``.geojson``, ``.fgb`` or ``.shp``.
        overwrite: replace an existing file.
        crs: CRS to write in: frames in another CRS are reprojected, frames without one are
            taken to be in it. None: the CRS the frames share.
        pixel_coordinates: the lines are in the pixel coordinates of an image without
            georeferencing (photos): written without a CRS, which GIS then shows as unknown.
        gpkg_version: GeoPackage version of a ``.gpkg`` output, one of :data:`GPKG_VERSIONS`.
        metadata: metadata of each layer of a ``.gpkg`` output (its ``gpkg_metadata`` table), e.g.
            the provenance of the lines (:func:`geoccseg.inference.cog.provenance`); the other
            formats have nowhere standard to keep it. Layer, not dataset, metadata: GDAL writes a
            ``.aux.xml`` beside a GeoPackage with dataset metadata whenever it is read.
        together: ``(finished temporary, destination)`` of other outputs of the same run (e.g.
            predict's probability raster) moved into place in the same set, before the lines:
            a failure or an interruption on the way leaves every destination as it was.

    Returns:
        The path written.

    Raises:
        GeoccsegError: unknown extension, existing output without ``overwrite``, no layers,
            unknown or conflicting CRS, unknown GeoPackage version.
    """
    path = Path(path)
    driver = vector_driver(path)
    if str(gpkg_version) not in GPKG_VERSIONS:
        raise GeoccsegError(f"cannot write GeoPackage version {gpkg_version!r}; use one of {', '.join(GPKG_VERSIONS)}")
    path = check_vector_output(path, overwrite, example=f"lines{path.suffix}")
    if not layers:
        raise GeoccsegError(f"nothing to write to {path}: no layers given; pass one GeoDataFrame per class")
    if pixel_coordinates:
        target, frames = None, {name: frame.set_crs(None, allow_override=True) for name, frame in layers.items()}
    else:
        target = _target_crs(layers, crs)
        frames = {name: _in_crs(frame, target) for name, frame in layers.items()}
    taken = _shapefile_parts(path) if driver == "ESRI Shapefile" else []
    with scratch_dir(path) as staging:
        kept, new = staging / "replaced", staging / "new"  # the old files, until the new set is in place
        kept.mkdir()
        new.mkdir()
        _write_file(frames, new / path.name, driver, target, gpkg_version, metadata)
        parts = [p for p in new.iterdir() if p.is_file()] if driver == "ESRI Shapefile" else [new / path.name]  # every part GDAL wrote
        for part in parts:
            follow_umask(part)
        moves = [(part, path.with_name(part.name)) for part in sorted(parts, key=lambda p: (p.suffix.lower() == path.suffix.lower(), p.name))]
        move_all_into_place([*together, *moves], kept, overwrite)  # the lines (a Shapefile's .shp) last
    written = {dest for _, dest in moves}
    for old in taken:
        if old not in written:
            old.unlink(missing_ok=True)
    return path


def _shapefile_parts(path: Path) -> list[Path]:
    """The files of the Shapefile ``path`` that exist: the ``.shp`` and its sidecars."""
    return [path.with_suffix(ext) for ext in (".shp", *_SHAPEFILE_PARTS) if path.with_suffix(ext).is_file()]


def _write_file(frames: dict[str, gpd.GeoDataFrame], path: Path, driver: str, target: CRS | None, gpkg_version: str,
                metadata: dict[str, str] | None) -> None:
    """Write the frames to the new file ``path`` (in a work folder) in the format of ``driver``: a
    GeoPackage layer per class, else one layer of all classes."""
    if driver == "GPKG":
        for i, (name, frame) in enumerate(frames.items()):
            _write(frame, path, name, driver, dataset_options={"VERSION": str(gpkg_version)} if i == 0 else None, layer_metadata=metadata)
        return
    merged = gpd.GeoDataFrame(pd.concat(list(frames.values()), ignore_index=True), geometry="geometry", crs=target)
    if driver == "ESRI Shapefile":
        merged = merged.rename(columns=shapefile_fields([c for c in merged.columns if c != merged.geometry.name]))
        _write(merged, path, path.stem, driver)
    elif driver == "GeoJSON" and target is not None:
        _write(merged.to_crs("EPSG:4326"), path, path.stem, driver,
               layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": str(GEOJSON_DECIMALS)})
    else:
        _write(merged, path, path.stem, driver)


def shapefile_fields(columns: list[str]) -> dict[str, str]:
    """Shapefile names of the attribute columns longer than a DBF field name (10 characters).

    Known columns get their name from :data:`SHAPEFILE_FIELDS`; any other is cut to 10 characters
    (made unique with a number) and named in a warning.

    Args:
        columns: attribute column names (not the geometry).

    Returns:
        ``{column: shapefile name}`` for the columns that need another name.
    """
    renamed = {c: SHAPEFILE_FIELDS[c] for c in columns if len(c) > _DBF_NAME_CHARS and c in SHAPEFILE_FIELDS}
    taken = {c.lower() for c in columns if len(c) <= _DBF_NAME_CHARS} | {n.lower() for n in renamed.values()}
    cut = {}
    for column in columns:
        if len(column) <= _DBF_NAME_CHARS or column in renamed:
            continue
        name, n = column[:_DBF_NAME_CHARS], 1
        while name.lower() in taken:
            suffix = str(n)
            name, n = column[:_DBF_NAME_CHARS - len(suffix)] + suffix, n + 1
        taken.add(name.lower())
        cut[column] = name
    if cut:
        names = ", ".join(f"{a} -> {b}" for a, b in cut.items())
        warnings.warn(f"Shapefile field names hold 10 characters: columns renamed {names}; use .gpkg to keep them", UserWarning, stacklevel=3)
    return renamed | cut


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


def _write(frame: gpd.GeoDataFrame, path: Path, layer: str, driver: str, **options: dict[str, str] | None) -> None:
    """Write one layer with pyogrio; LineString layers are typed as such even when empty, and an empty
    frame whose ``attrs["geometry_type"]`` names another type (the Points of graph nodes) as that.
    ``options``: ``dataset_options`` / ``layer_options`` of the GDAL driver."""
    lines_only = bool(frame.geom_type.eq("LineString").all())
    kind = frame.attrs.get("geometry_type") if len(frame) == 0 else None
    options = {key: value for key, value in options.items() if value}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # pixel coordinates, on purpose
        pyogrio.write_dataframe(frame, path, layer=layer, driver=driver, geometry_type=kind or ("LineString" if lines_only else None),
                                **options)
