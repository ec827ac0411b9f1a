"""Pixel sizes and lengths in ground metres, whatever the CRS of the scene or the lines."""

from __future__ import annotations

import geopandas as gpd
import pytest
import rasterio
import rasterio.warp
from pyproj import Geod
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import LineString

from geoccseg.inference.predict import model_scale
from geoccseg.io.catalog import sample_scene
from geoccseg.io.scene import open_scene
from geoccseg.io.units import metric_crs


def test_a_web_mercator_scene_and_lines_are_measured_in_ground_metres(tmp_path):
    """EPSG:3857, the CRS of web map tiles, draws a metre of ground at Las Vegas (36 degrees north)
    as 1.24 of its metres: the sample warped into it keeps its ground pixel size, so the road
    model resamples it as it does the original, and lines in it are measured on the ground."""
    merc = tmp_path / "sample_3857.tif"
    with rasterio.open(sample_scene()) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": "EPSG:3857", "transform": transform, "width": width, "height": height}
        with rasterio.open(merc, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.nearest)
    original, warped = open_scene(sample_scene()), open_scene(merc)
    # one pixel's edges at the scene centre, on the ellipsoid
    (x0, x1), (y0, y1) = rasterio.warp.transform("EPSG:3857", "EPSG:4326", [warped.centre[0], warped.centre[0] + warped.res[0]],
                                                 [warped.centre[1]] * 2)
    ground_px_m = Geod(ellps="WGS84").inv(x0, y0, x1, y1)[2]
    assert warped.res[0] / ground_px_m == pytest.approx(1.24, abs=0.01)  # Web Mercator's metres per ground metre
    assert warped.pixel_size_xy_m[0] == pytest.approx(ground_px_m, rel=2e-3)  # PROJ scales on the sphere: 0.12 % here
    assert warped.pixel_size_m == pytest.approx(original.pixel_size_m, rel=0.03)  # the warp's own resolution
    assert model_scale(warped, 1.0) == pytest.approx(1.0 / warped.pixel_size_m)

    lon, lat = original.centre
    line = gpd.GeoSeries([LineString([(lon, lat), (lon + 0.01, lat + 0.01)])], crs=original.crs).to_crs(3857)
    ground_m = Geod(ellps="WGS84").line_length([lon, lon + 0.01], [lat, lat + 0.01])
    metric = metric_crs(line)
    assert metric.to_epsg() == 32611  # the local UTM zone, not Web Mercator's own metres
    assert line.to_crs(metric).length.iloc[0] == pytest.approx(ground_m, rel=1e-3)
    utm = line.to_crs(32611)
    assert metric_crs(utm).to_epsg() == 32611  # a CRS made for measuring is kept
    # ... also one that the estimate would not pick (the next UTM zone, Nevada East in metres)
    assert [metric_crs(line.to_crs(epsg)).to_epsg() for epsg in (32612, 32107)] == [32612, 32107]
