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

import os
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.features
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.io.formats import RASTER_SUFFIXES, VECTOR_SUFFIXES
from geoccseg.io.scene import open_raster
from geoccseg.label_values import IGNORE_INDEX

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
        gdf = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several types for damaged files
        raise GeoccsegError(f"cannot read {what} file {path}: {str(exc).splitlines()[0]}") from None
    if gdf.crs is None:
        raise GeoccsegError(f"{what} file {path} has no CRS; set one (e.g. `ogr2ogr -a_srs EPSG:4326 out.gpkg {path}`)")
    if not keep_empty:
        gdf = gdf[~(gdf.geometry.is_empty | gdf.geometry.isna())]
    return gdf


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
    """

    classes: list[str]
    shapes: gpd.GeoDataFrame = field(repr=False)
    path: Path | None = None
    features: int = 0
    empty: int = 0

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
        shapes = gdf[~lines].to_crs(crs)
        if lines.any():
            shapes = pd.concat([shapes, buffer_lines_m(gdf[lines], classes, widths).to_crs(crs)])
        shapes = shapes[shapes.geom_type.isin(["Polygon", "MultiPolygon"])]
        return cls(classes, shapes.sort_values("feature").reset_index(drop=True), **counts)

    @property
    def total_bounds(self) -> tuple[float, float, float, float]:
        return tuple(self.shapes.total_bounds)

    def rasterize(self, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
        """Class-index mask (H, W) uint8 of the chip covering ``bounds`` (scene CRS) at ``shape`` pixels."""
        transform = rasterio.transform.from_bounds(*bounds, shape[1], shape[0])
        hits = self.shapes.iloc[self.shapes.sindex.query(box(*bounds))] if len(self.shapes) else self.shapes
        out = np.zeros(shape, dtype=np.uint8)
        if len(hits) == 0:
            return out
        hits = hits.sort_values("class_index")  # later (higher) classes win overlaps
        return rasterio.features.rasterize(
            zip(hits.geometry, hits["class_index"]), out_shape=shape, transform=transform, fill=0, dtype="uint8",
        )


def buffer_lines_m(lines: gpd.GeoDataFrame, classes: list[str], widths_m: dict[str, float]) -> gpd.GeoDataFrame:
    """Buffer lines by their class's width in metres on the ground, in the UTM zone of their centroid.

    A buffer in the labels' own CRS would be in its units (feet, degrees) and scaled by its
    distortion (Web Mercator: 1 / cos(latitude)); the local UTM zone is metric and nearly
    distortion-free (scale 0.9996 to 1.0010 within a zone).

    Args:
        lines: (Multi)LineStrings with an integer column ``class_index`` (1 = ``classes[0]``), any CRS.
        classes: foreground class names.
        widths_m: full line width in metres per class name.

    Returns:
        The buffered polygons (flat caps) in that UTM CRS, same columns.
    """
    metric = lines.to_crs(lines.estimate_utm_crs())
    half = metric["class_index"].map({i + 1: widths_m[name] / 2.0 for i, name in enumerate(classes)})
    return metric.set_geometry(metric.geometry.buffer(half.to_numpy(), cap_style="flat"))


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
        footprint: where the raster has pixels (scene CRS): outside it nothing is labeled.
        zero_nodata: the raster's nodata value is 0, which in a mask is background (QGIS's
            Rasterize writes nodata 0 by default), so it marks no pixel unlabeled.
    """

    path: Path
    classes: list[str]
    crs: object
    binary: bool | None
    footprint: BaseGeometry
    zero_nodata: bool = False

    @classmethod
    def open(cls, path: str | os.PathLike, crs, classes: list[str] | None = None) -> RasterLabels:
        """Open a label raster: a 0/255 mask (values from 128 up are the class, as in photo masks),
        or class indices (0 background, 1 .. K the classes; a 0/1 mask is one class).

        Which of the two is decided on a decimated read of the whole raster (``binary``: True,
        False, or None when that read holds no foreground, then chip by chip).

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
                sample = ds.read(1, out_shape=(min(ds.height, 1024), min(ds.width, 1024)), resampling=Resampling.nearest,
                                 masked=ds.nodata != 0)  # nodata is no label value; nodata 0 is background
                footprint, zero_nodata = raster_footprint(ds, crs), ds.nodata == 0
        except rasterio.errors.RasterioIOError:
            raise GeoccsegError(f"labels {path} are not a readable raster") from None
        labels = cls(path=path, classes=classes, crs=crs, binary=None, footprint=footprint, zero_nodata=zero_nodata)
        finite = np.ma.masked_invalid(sample)  # NaN in a float raster without a nodata value: no label
        labels.binary = labels._mode(int(np.ma.filled(finite.max(), 0)) if finite.count() else 0)
        return labels

    def _mode(self, top: int) -> bool | None:
        """Binary mask (True), class indices (False) or not known yet (None, all background) for
        a read whose largest value is ``top``.

        Raises:
            GeoccsegError: ``top`` is neither a class index nor a 0/255 mask value.
        """
        if top == 0:
            return None
        if top <= len(self.classes):
            return False
        if top >= 128:
            return True
        raise GeoccsegError(f"label raster {self.path.name} holds values up to {top}: give a 0/255 or 0/1 mask, or class "
                            f"indices 0..{len(self.classes)} (background and the classes {', '.join(self.classes)}); "
                            "resample masks with nearest, never bilinear")

    @property
    def total_bounds(self) -> tuple[float, float, float, float]:
        with open_raster(self.path) as ds, WarpedVRT(ds, crs=self.crs) as vrt:
            return tuple(vrt.bounds)

    def rasterize(self, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
        """Class-index mask (H, W) uint8 of the chip covering ``bounds`` (scene CRS) at ``shape`` pixels."""
        transform = rasterio.transform.from_bounds(*bounds, shape[1], shape[0])
        with open_raster(self.path) as ds, WarpedVRT(
            ds, crs=self.crs, transform=transform, width=shape[1], height=shape[0], resampling=Resampling.nearest,
        ) as vrt:
            data = vrt.read(1)
            valid = rasterio.features.geometry_mask([self.footprint], out_shape=shape, transform=transform, invert=True)
            if not self.zero_nodata:
                valid &= vrt.read_masks(1) > 0
        valid &= np.isfinite(data)  # NaN in a float raster without a nodata value: no label
        top = int(data[valid].max(initial=0))
        binary = self._mode(top) if self.binary is None else self.binary
        if binary:
            out = (data >= 128).astype(np.uint8)
        elif top > len(self.classes):
            raise GeoccsegError(f"label raster {self.path.name} holds value {top} around {tuple(round(v, 2) for v in bounds)}, "
                                f"not a class index 0..{len(self.classes)} ({', '.join(self.classes)}); fix the raster or "
                                "give --classes for each value")
        else:
            out = data.astype(np.uint8)
        out[~valid] = IGNORE_INDEX
        return out


def raster_footprint(ds: rasterio.io.DatasetReader, crs) -> BaseGeometry:
    """The extent of an opened raster as a polygon in ``crs``, its edges densified so that they
    stay where they are through a reprojection."""
    edge = max(abs(ds.transform.a) * ds.width, abs(ds.transform.e) * ds.height) / 64
    outline = gpd.GeoSeries([shapely.segmentize(box(*ds.bounds), edge)], crs=ds.crs)
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
