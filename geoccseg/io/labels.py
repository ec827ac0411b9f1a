"""Labels for a scene, from vector files or raster masks, rasterised onto any chip grid.

Vector labels (GeoPackage, GeoJSON, Shapefile, FlatGeobuf) are reprojected to the scene CRS once,
when they are opened. Lines (road or crack centrelines) are buffered by a per-class width in metres
on the ground: the buffer is made in the UTM zone of the labels' centroid, then reprojected to the
scene CRS, so a 6 m road is 6 m wide whether the labels or the scene are in degrees, Web Mercator
or US survey feet. Polygons are kept as they are. Points are refused (a disc is no road or crack).
A class column maps feature values to class names.

Raster masks are read through a warped view onto the chip's grid with nearest resampling, whatever
grid or CRS they are on. Values 0/255 (or 0/1) mean background/first class; other values are class
indices; the mask's nodata becomes the ignore index.

Class index 0 is always the background; :data:`geoccseg.label_values.IGNORE_INDEX` marks pixels without a label.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from scipy.spatial import cKDTree
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.io.formats import RASTER_SUFFIXES, VECTOR_SUFFIXES
from geoccseg.io.scene import open_raster, readable
from geoccseg.io.units import reprojected
from geoccseg.label_values import IGNORE_INDEX, held_values, label_mode

DEFAULT_WIDTH_M = {"road": 6.0, "crack": 0.02}


def read_vector(path: str | os.PathLike, what: str = "labels", keep_empty: bool = False) -> gpd.GeoDataFrame:
    """Read a vector file with geopandas/pyogrio; one-line errors for missing, unreadable or CRS-less files.

    Args:
        path: vector file.
        what: name used in error messages.
        keep_empty: keep features whose geometry is null or empty (dropped by default).
    """
    path = Path(path)
    if not path.exists():
        raise GeoccsegError(f"{what} file {path} does not exist")
    if path.suffix.lower() not in VECTOR_SUFFIXES:
        raise GeoccsegError(f"{what} file {path} has an unsupported extension; use one of {', '.join(sorted(VECTOR_SUFFIXES))}")
    try:
        layers = [(str(name), kind) for name, kind in pyogrio.list_layers(path)]
        spatial = [name for name, kind in layers if kind is not None]  # a GeoPackage may hold attribute tables too
        # beside a class's lines, `predict --graph` writes its road graph as <class>_nodes and <class>_edges
        spatial = [name for name in spatial if not (name.endswith(("_nodes", "_edges")) and name.rsplit("_", 1)[0] in spatial)]
        if len(spatial) != 1:
            raise GeoccsegError(
                f"{what} file {path} holds no layer with geometries" if not spatial else
                f"{what} file {path} holds {len(spatial)} layers with geometries ({', '.join(spatial[:6])}); geoccseg reads "
                f"one: save the one meant for {what} on its own, e.g. ogr2ogr {what.split()[0]}.gpkg {path.name} {spatial[0]}")
        gdf = gpd.read_file(path, engine="pyogrio", layer=spatial[0])
    except GeoccsegError:
        raise
    except Exception as exc:  # pyogrio raises several types for damaged files
        raise GeoccsegError(f"cannot read {what} file {path}: {str(exc).splitlines()[0]}") from None
    if gdf.crs is None:
        raise GeoccsegError(f"{what} file {path} has no CRS; set one (e.g. `ogr2ogr -a_srs EPSG:4326 out.gpkg {path}`)")
    if not keep_empty:
        gdf = gdf[~(gdf.geometry.is_empty | gdf.geometry.isna())]
    return gdf


def exploded_collections(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` with each GeometryCollection feature (what a clip or a union writes to a layer of mixed
    types) replaced by its lines and polygons, each a row with the feature's index and columns; their
    points (where a clipped line only touched the clip's edge) left out. Other features as they are."""
    collections = (gdf.geom_type == "GeometryCollection").to_numpy()
    if not collections.any():
        return gdf
    parts = gdf[collections].explode(index_parts=False)
    parts = parts[~(parts.geometry.is_empty | parts.geometry.isna() | parts.geom_type.isin(["Point", "MultiPoint"]))]
    return pd.concat([gdf[~collections], parts])


def reaching(frame: gpd.GeoDataFrame | gpd.GeoSeries, bounds: Sequence[float]) -> gpd.GeoDataFrame | gpd.GeoSeries:
    """The features of ``frame`` whose bounding boxes reach ``bounds`` (minx, miny, maxx, maxy in
    the frame's CRS), in file order, found with its spatial index."""
    return frame.iloc[np.sort(frame.sindex.query(box(*bounds)))]


@dataclass
class VectorLabels:
    """Vector labels reprojected and buffered into polygons in the scene CRS.

    Attributes:
        classes: foreground class names; class ``i`` (0-based) gets index ``i + 1``.
        shapes: GeoDataFrame of polygons in the scene CRS with integer columns ``class_index`` and
            ``feature`` (row of the feature in the file).
        path: the file the labels were read from.
        features: number of features in the file, null or empty geometries included.
        empty: number of those whose geometry is null or empty.
        centrelines: the line features (same columns) in the scene CRS, burnt along their path
            besides their buffers (:meth:`rasterize`); None where the file holds none.
        class_shapes: the number of shapes of each class index in the whole file (:meth:`near`
            keeps it).
    """

    classes: list[str]
    shapes: gpd.GeoDataFrame = field(repr=False)
    path: Path | None = None
    features: int = 0
    empty: int = 0
    centrelines: gpd.GeoDataFrame | None = field(default=None, repr=False)
    class_shapes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.class_shapes and len(self.shapes):
            self.class_shapes = {int(k): int(n) for k, n in self.shapes["class_index"].value_counts().items()}

    def near(self, area: BaseGeometry) -> VectorLabels:
        """The labels whose bounding boxes reach ``area`` (scene CRS): a scene tile's share of labels
        drawn for a whole city, so that each tile of a training holds its own part, not a copy of
        the whole file. The file's counts (:attr:`features`, :attr:`class_shapes`) stay."""
        def share(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
            return frame if frame is None or not len(frame) else reaching(frame, area.bounds).reset_index(drop=True)

        return replace(self, shapes=share(self.shapes), centrelines=share(self.centrelines))

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        crs,
        classes: list[str] | None = None,
        class_column: str | None = None,
        width_m: dict[str, float] | float | None = None,
    ) -> VectorLabels:
        """Read, reproject and buffer vector labels.

        Args:
            path: vector file.
            crs: target (scene) CRS.
            classes: foreground class names, in index order (default ``["road"]``).
            class_column: column whose values are class names; without it every feature is the first class.
            width_m: line width in metres, per class or for all; defaults per known class (road 6 m).

        Raises:
            GeoccsegError: unreadable file, unknown class column or class names, point geometries.
        """
        classes = list(classes or ["road"])
        gdf = read_vector(path, "labels", keep_empty=True)
        features = len(gdf)
        gdf = gdf[~(gdf.geometry.is_empty | gdf.geometry.isna())]
        counts = {"path": Path(path), "features": features, "empty": features - len(gdf)}
        # a clip or union's collections: their lines and polygons are labels like any (they were dropped, and with the
        # rest of the file the area still counted as labeled: their roads were learnt as background)
        gdf = exploded_collections(gdf)
        points = gdf.geom_type.isin(["Point", "MultiPoint"])
        if points.any():
            raise GeoccsegError(
                f"labels {path} hold {int(points.sum())} point feature(s); roads and cracks need lines (centrelines, "
                "buffered by --width-m) or polygons: draw them as lines or polygons"
            )
        if class_column is not None:
            if class_column not in gdf.columns:
                raise GeoccsegError(f"labels {path} have no column '{class_column}'; columns are: {', '.join(c for c in gdf.columns if c != 'geometry')}")
            values = gdf[class_column].astype(str)
            unknown = sorted(set(values) - set(classes))
            if unknown:
                raise GeoccsegError(f"unknown class name(s) {', '.join(unknown[:5])} in column '{class_column}' of {path}; known classes: {', '.join(classes)} (set them with --classes)")
            index = values.map({c: i + 1 for i, c in enumerate(classes)}).astype(int)
        else:
            index = np.ones(len(gdf), dtype=int)
        gdf = gpd.GeoDataFrame(
            {"class_index": np.asarray(index), "feature": np.asarray(gdf.index)}, geometry=gdf.geometry.values, crs=gdf.crs,
        )
        widths = _widths(classes, width_m)
        lines = gdf.geom_type.isin(["LineString", "MultiLineString"]).to_numpy()
        shapes = reprojected(gdf[~lines], crs, what=f"labels {path}")  # polygons' edges densified first, as an AOI's
        centrelines = None
        if lines.any():
            centrelines = reprojected(gdf[lines], crs, what=f"labels {path}").reset_index(drop=True)  # first: says if they have no place here
            shapes = pd.concat([shapes, buffer_lines_m(gdf[lines], classes, widths, crs)])
        shapes = shapes[shapes.geom_type.isin(["Polygon", "MultiPolygon"])]
        return cls(classes, shapes.sort_values("feature").reset_index(drop=True), **counts, centrelines=centrelines)

    @property
    def total_bounds(self) -> tuple[float, float, float, float]:
        return tuple(self.shapes.total_bounds)

    def rasterize(self, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
        """Class-index mask (H, W) uint8 of the chip covering ``bounds`` (scene CRS) at ``shape`` pixels.

        A polygon labels the pixels whose centre it covers; a line also labels the pixels along its
        path, so that one narrower than a pixel (a 2 cm crack on a 3 cm orthophoto, a 6 m road at
        10 m) stays one connected line: its buffer alone covered a pixel centre in some columns only,
        a dashed crack whose gaps were learnt as labeled background. A line wider than a pixel
        lies inside its buffer: it adds at most the pixel holding each of its ends.
        """
        transform = rasterio.transform.from_bounds(*bounds, shape[1], shape[0])
        hits = [frame.iloc[frame.sindex.query(box(*bounds))] for frame in (self.shapes, self.centrelines)
                if frame is not None and len(frame)]
        hits = [h for h in hits if len(h)]
        if not hits:
            return np.zeros(shape, dtype=np.uint8)
        hits = pd.concat(hits).sort_values("class_index", kind="stable")  # later (higher) classes win overlaps
        return rasterio.features.rasterize(
            zip(hits.geometry, hits["class_index"]), out_shape=shape, transform=transform, fill=0, dtype="uint8",
        )


def buffer_lines_m(lines: gpd.GeoDataFrame, classes: list[str], widths_m: dict[str, float], crs) -> gpd.GeoDataFrame:
    """Buffer lines by their class's width in metres on the ground, each in the UTM zone of its own
    centroid, and return the polygons in ``crs``.

    A buffer in the labels' own CRS would be in its units (feet, degrees) and scaled by its
    distortion (Web Mercator: 1 / cos(latitude)); the local UTM zone is metric and nearly
    distortion-free (scale 0.9996 to 1.0010 within a zone). One zone for a whole file would not be
    local to all of it: a file of two cities' roads, or a country's, is scaled by up to 1.4 far
    from that zone's meridian, so each line takes its own zone.

    Args:
        lines: (Multi)LineStrings with an integer column ``class_index`` (1 = ``classes[0]``), any CRS.
        classes: foreground class names.
        widths_m: full line width in metres per class name.
        crs: CRS of the returned polygons (the scene's).

    Returns:
        The buffered polygons, same columns: flat caps, round where a line's end meets another's
        (:func:`shared_ends`, within a zone).
    """
    local = pyproj.CRS.from_user_input(lines.crs)
    if local.geodetic_crs is None:  # a site grid (engineering CRS): no UTM zone; buffered in its own units, at true scale
        unit = local.axis_info[0].unit_conversion_factor if local.axis_info else 1.0
        groups = [(lines, unit)]
    else:
        centres = lines.geometry.to_crs(4326).representative_point()
        zone = np.clip(np.floor((centres.x.to_numpy() + 180) / 6).astype(int) + 1, 1, 60)
        epsg = np.where(centres.y.to_numpy() >= 0, 32600, 32700) + zone
        groups = [(lines[epsg == code].to_crs(int(code)), 1.0) for code in np.unique(epsg)]
    parts = []
    for metric, unit in groups:
        half = metric["class_index"].map({i + 1: widths_m[name] / 2.0 / unit for i, name in enumerate(classes)}).to_numpy()
        shapes = shapely.buffer(metric.geometry.values, half, cap_style="flat")
        joints = shared_ends(metric.geometry.values)
        at = np.flatnonzero(~shapely.is_empty(joints))
        shapes[at] = shapely.union(shapes[at], shapely.buffer(joints[at], half[at]))  # round where two lines meet
        parts.append(metric.set_geometry(shapes).to_crs(crs))
    return pd.concat(parts) if len(parts) > 1 else parts[0]


def shared_ends(lines: np.ndarray, tolerance: float = 0.01) -> np.ndarray:
    """For each (Multi)LineString, the ends of its parts that are also an end of another part (the
    same within ``tolerance`` map units): where roads drawn as separate features meet.

    Flat caps keep dead ends and cuts where they are, but at such a joint (a bend where
    OpenStreetMap splits a way) they leave the outer corner unlabeled, a wedge the width of the
    road that training would learn as background; a single line has round joins there.

    Returns:
        (L,) MultiPoints, empty where a line shares no end.
    """
    out = np.array([shapely.MultiPoint()] * len(lines), dtype=object)
    parts, owner = shapely.get_parts(lines, return_index=True)
    drawn = ~shapely.is_empty(parts)  # a MultiLineString may hold an empty part: no ends
    parts, owner = parts[drawn], owner[drawn]
    if len(parts) == 0:
        return out
    xy = np.concatenate([shapely.get_coordinates(shapely.get_point(parts, 0)), shapely.get_coordinates(shapely.get_point(parts, -1))])
    owners = np.concatenate([owner, owner])
    pairs = cKDTree(xy).query_pairs(tolerance, output_type="ndarray")  # (rounding to a grid split pairs across its cells)
    shared = np.unique(pairs[pairs[:, 0] % len(parts) != pairs[:, 1] % len(parts)].ravel())  # not a part's own two ends
    shared = shared[np.argsort(owners[shared], kind="stable")]
    rows, starts = np.unique(owners[shared], return_index=True)
    for row, points in zip(rows, np.split(xy[shared], starts[1:])):
        out[row] = shapely.multipoints(points)
    return out


def _widths(classes: list[str], width_m: dict[str, float] | float | None) -> dict[str, float]:
    if isinstance(width_m, (int, float)):
        return {c: float(width_m) for c in classes}
    width_m = dict(width_m or {})
    unknown = sorted(set(width_m) - set(classes))
    if unknown:
        raise GeoccsegError(f"line width given for unknown class(es) {', '.join(unknown)}; known classes: {', '.join(classes)}")
    return {c: float(width_m.get(c, DEFAULT_WIDTH_M.get(c, 3.0))) for c in classes}


@dataclass
class RasterLabels:
    """A label raster, warped on the fly onto chip grids in the scene CRS.

    Attributes:
        mask: the raster is a 0/255 mask (values from 128 up are the first class, as in photo
            masks); otherwise it holds class indices.
        unlabeled_255: a class-index raster whose 255 marks unlabeled pixels (the usual
            ``ignore_index`` of segmentation datasets) without being its nodata value.
        footprint: where the raster has pixels (scene CRS): outside it nothing is labeled.
        zero_nodata: the raster's nodata value is 0, which in a mask is background (QGIS's
            Rasterize writes nodata 0 by default), so it marks no pixel unlabeled.
    """

    path: Path
    classes: list[str]
    crs: object
    mask: bool
    footprint: BaseGeometry
    unlabeled_255: bool = False
    zero_nodata: bool = False

    def near(self, area: BaseGeometry) -> RasterLabels:
        """The labels for ``area``: a raster is read window by window, all of it stays as it is."""
        return self

    @classmethod
    def open(cls, path: str | os.PathLike, crs, classes: list[str] | None = None) -> RasterLabels:
        """Open a label raster: a 0/255 mask (values from 128 up are the class, as in photo masks),
        or class indices (0 background, 1 .. K the classes; a 0/1 mask is one class), where 255
        may mark unlabeled pixels.

        Which it is is decided once, from every value the raster holds (:func:`label_values`):
        a decision from a sample, or chip by chip, read a 0/1 raster with 255 for "no label" as a
        0/255 mask, its roads as background and its unlabeled pixels as road.

        Raises:
            GeoccsegError: a missing or unreadable file, no CRS, or values that are neither (a mask
                of values 0..2 for one class, a bilinear-resampled class raster).
        """
        path = Path(path)
        if not path.exists():
            raise GeoccsegError(f"labels file {path} does not exist")
        classes = list(classes or ["road"])
        try:
            with open_raster(path) as ds:
                if ds.crs is None:
                    raise GeoccsegError(f"label raster {path} has no CRS; assign one (rio edit-info --crs ...)")
                stat = path.stat()
                held, odd = _scanned(str(path), stat.st_mtime_ns, stat.st_size)
                footprint, zero_nodata = raster_footprint(ds, crs), ds.nodata == 0
        except rasterio.errors.RasterioIOError:
            raise GeoccsegError(f"labels {path} are not a readable raster") from None
        mask, unlabeled_255 = label_mode(f"label raster {path.name}", held, odd, len(classes), classes)
        return cls(path=path, classes=classes, crs=crs, mask=mask, footprint=footprint, unlabeled_255=unlabeled_255,
                   zero_nodata=zero_nodata)

    @property
    def total_bounds(self) -> tuple[float, float, float, float]:
        with open_raster(self.path) as ds, WarpedVRT(ds, crs=self.crs) as vrt:
            return tuple(vrt.bounds)

    def rasterize(self, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
        """Class-index mask (H, W) uint8 of the chip covering ``bounds`` (scene CRS) at ``shape`` pixels."""
        transform = rasterio.transform.from_bounds(*bounds, shape[1], shape[0])
        with open_raster(self.path) as ds, WarpedVRT(
            ds, crs=self.crs, transform=transform, width=shape[1], height=shape[0], resampling=Resampling.nearest,
            # an internal mask reaches the warped view only as an alpha band (else its pixels read as valid
            # 0s); an alpha band of the raster's own reaches it as it is (asking for another raised)
            add_alpha=ds.nodata is None and ds.mask_flag_enums[0] == [MaskFlags.per_dataset],
        ) as vrt, readable(self.path):
            data = vrt.read(1)
            valid = rasterio.features.geometry_mask([self.footprint], out_shape=shape, transform=transform, invert=True)
            if not self.zero_nodata:
                valid &= vrt.read_masks(1) > 0
        valid &= np.isfinite(data)  # NaN in a float raster without a nodata value: no label
        if self.unlabeled_255:
            valid &= data != 255
        if self.mask:
            out = (data >= 128).astype(np.uint8)
        else:
            top = data[valid].max(initial=0)
            if top > len(self.classes):  # the file changed since it was opened
                raise GeoccsegError(f"label raster {self.path.name} holds value {top} around "
                                    f"{tuple(round(v, 2) for v in bounds)}, not a class index 0..{len(self.classes)} "
                                    f"({', '.join(self.classes)}); fix the raster or give --classes for each value")
            out = np.where(valid, data, 0).astype(np.uint8)  # NaN (no label) cast to uint8 warned
        out[~valid] = IGNORE_INDEX
        return out


@functools.lru_cache(maxsize=8)
def _scanned(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, float | None]:
    """:func:`label_values` of a file version, scanned once: training opens the labels once per scene."""
    with open_raster(path) as ds:
        return label_values(ds)


LABEL_SCAN_PIXELS = 1 << 24
"""Pixels per strip read by :func:`label_values`."""


def label_values(ds: rasterio.io.DatasetReader) -> tuple[np.ndarray, float | None]:
    """Which of the values 0..255 a label raster holds in its first band, read strip by strip.

    Nodata (unless it is 0, which in a mask is background), pixels outside an internal mask or
    alpha, and NaN are left out.

    Returns:
        ``held``: (256,) bool, value v present; ``odd``: the value of largest magnitude outside
        the integers 0..255 (fractional, negative or larger), None when there is none.
    """
    held, odd = np.zeros(256, dtype=bool), None
    rows = max(1, LABEL_SCAN_PIXELS // ds.width)
    for row in range(0, ds.height, rows):
        window = rasterio.windows.Window(0, row, ds.width, min(rows, ds.height - row))
        strip = ds.read(1, window=window, masked=ds.nodata != 0)  # nodata, internal mask or alpha; nodata 0 is background
        values = np.ma.masked_invalid(strip).compressed() if np.ma.isMaskedArray(strip) or strip.dtype.kind == "f" \
            else strip.ravel()
        strip_held, strip_odd = held_values(values)
        held |= strip_held
        if strip_odd is not None and (odd is None or abs(strip_odd) > abs(odd)):
            odd = strip_odd
    return held, odd


def raster_footprint(ds: rasterio.io.DatasetReader, crs) -> BaseGeometry:
    """The extent of an opened raster as a polygon in ``crs``: its four corners (a rotated grid's
    extent is not its bounding box, whose corners outside it read as labeled background where
    nodata is 0), its edges densified so that they stay where they are through a reprojection."""
    corners = [ds.transform * corner for corner in ((0, 0), (ds.width, 0), (ds.width, ds.height), (0, ds.height))]
    edge = max(math.dist(corners[0], corners[1]), math.dist(corners[1], corners[2])) / 64
    outline = gpd.GeoSeries([shapely.segmentize(shapely.Polygon(corners), edge)], crs=ds.crs)
    return outline.to_crs(crs).iloc[0]


Labels = VectorLabels | RasterLabels


def open_labels(
    path: str | os.PathLike,
    crs,
    classes: list[str] | None = None,
    class_column: str | None = None,
    width_m: dict[str, float] | float | None = None,
) -> Labels:
    """Open vector or raster labels by extension, reprojected to ``crs``."""
    suffix = Path(path).suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return RasterLabels.open(path, crs, classes)
    if suffix in VECTOR_SUFFIXES:
        return VectorLabels.open(path, crs, classes, class_column, width_m)
    raise GeoccsegError(f"labels {path}: unsupported extension '{suffix}'; use a GeoTIFF mask or one of {', '.join(sorted(VECTOR_SUFFIXES))}")


def transform_for(bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> Affine:
    """Affine transform of a chip grid of ``shape`` (H, W) pixels covering ``bounds``."""
    return rasterio.transform.from_bounds(*bounds, shape[1], shape[0])
