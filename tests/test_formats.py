"""Standard GIS outputs: RFC 7946 GeoJSON, GeoPackage 1.2, Shapefile-safe field names."""

from __future__ import annotations

import json
import re
import sqlite3
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer
from shapely.geometry import LineString

import geoccseg
from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.io.vector_write import write_vectors

UTM = "EPSG:32611"
ORIGIN = (660_000.0, 4_000_000.0)  # Las Vegas, UTM zone 11N
ONE_METRE = Affine(1.0, 0.0, ORIGIN[0], 0.0, -1.0, ORIGIN[1])
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"


def lines(n: int = 2, crs: str = UTM) -> gpd.GeoDataFrame:
    geoms = [LineString([(ORIGIN[0] + 10 * i, ORIGIN[1] - 100), (ORIGIN[0] + 10 * i, ORIGIN[1] - 50 + i)]) for i in range(n)]
    data = {"class": ["road"] * n, "length_m": [g.length for g in geoms], "width_m": [5.0] * n, "probability": [0.9] * n}
    return gpd.GeoDataFrame(data, geometry=geoms, crs=crs)


def utm_probability_tif(path) -> str:
    """A real uint8 probability GeoTIFF in UTM 11N: one 5 m wide, 130 m long east-west road."""
    prob = np.full((120, 150), 0.05)
    prob[58:63, 10:140] = 0.9
    profile = {"driver": "GTiff", "height": 120, "width": 150, "count": 1, "dtype": "uint8", "transform": ONE_METRE, "crs": UTM}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.round(prob * 255).astype(np.uint8), 1)
        dst.write_mask(np.full(prob.shape, 255, dtype=np.uint8))
        dst.set_band_description(1, "road")
    return str(path)


def test_geojson_from_a_utm_scene_is_rfc7946(tmp_path):
    out = tmp_path / "roads.geojson"
    result = CliRunner().invoke(cli, ["vectorize", utm_probability_tif(tmp_path / "prob.tif"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert "crs" not in doc
    assert len(doc["features"]) == 1
    coords = doc["features"][0]["geometry"]["coordinates"]
    # longitude / latitude in degrees near Las Vegas, to 7 decimals at most
    assert all(-116 < x < -114 and 36 < y < 36.2 for x, y in coords)
    assert max(len(v.split(".")[1]) for v in re.findall(r"-?\d+\.\d+", json.dumps(coords))) <= 7
    # the line is where the road is: its ends back in UTM lie on the road's axis (y = 4e6 - 60.5)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    for x, y in coords:
        e, n = to_utm.transform(x, y)
        assert ORIGIN[0] + 5 < e < ORIGIN[0] + 145 and abs(n - (ORIGIN[1] - 60.5)) < 1.5
    back = gpd.read_file(out)
    assert back.crs == "EPSG:4326"
    assert back.to_crs(UTM).geometry.length.iloc[0] == pytest.approx(doc["features"][0]["properties"]["length_m"], abs=1.0)


def test_geojson_coordinates_round_trip_to_a_centimetre(tmp_path):
    frame = lines()
    out = write_vectors({"road": frame}, tmp_path / "lines.geojson")
    back = gpd.read_file(out).to_crs(UTM)
    assert len(back) == len(frame) == 2
    for a, b in zip(frame.geometry, back.geometry):
        assert np.abs(np.asarray(a.coords) - np.asarray(b.coords)).max() < 0.02


def test_geojson_of_photo_lines_keeps_pixel_coordinates(tmp_path):
    frame = gpd.GeoDataFrame({"probability": [0.8]}, geometry=[LineString([(0.5, -0.5), (40.5, -20.5)])])
    out = write_vectors({"crack": frame}, tmp_path / "cracks.geojson", pixel_coordinates=True)
    doc = json.loads(out.read_text())
    assert "crs" not in doc
    assert doc["features"][0]["geometry"]["coordinates"] == [[0.5, -0.5], [40.5, -20.5]]


def _gpkg_pragmas(path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]


def test_geopackage_is_version_1_2_unless_asked(tmp_path):
    out = write_vectors({"road": lines(), "crack": lines(1)}, tmp_path / "lines.gpkg")
    assert _gpkg_pragmas(out) == (GPKG_APPLICATION_ID, 10200)
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["crack", "road"]
    with sqlite3.connect(out) as db:  # the spatial index is still there
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"rtree_road_geom", "rtree_crack_geom"} <= tables
    newer = write_vectors({"road": lines()}, tmp_path / "newer.gpkg", gpkg_version="1.4")
    assert _gpkg_pragmas(newer) == (GPKG_APPLICATION_ID, 10400)
    with pytest.raises(GeoccsegError, match="GeoPackage version '2.0'"):
        write_vectors({"road": lines()}, tmp_path / "bad.gpkg", gpkg_version="2.0")
    assert not (tmp_path / "bad.gpkg").exists()


def test_vectorize_graph_output_is_a_geopackage_1_2(tmp_path):
    out = tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", utm_probability_tif(tmp_path / "prob.tif"), "-o", str(out), "--graph"])
    assert result.exit_code == 0, result.output
    assert _gpkg_pragmas(out) == (GPKG_APPLICATION_ID, 10200)
    assert {"road", "road_nodes", "road_edges"} <= set(pyogrio.list_layers(out)[:, 0])


def test_shapefile_fields_are_named_not_truncated(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the known columns need no warning
        out = write_vectors({"road": lines()}, tmp_path / "lines.shp")
    fields = list(pyogrio.read_info(out)["fields"])
    assert fields == ["class", "length_m", "width_m", "prob"]
    assert gpd.read_file(out)["prob"].tolist() == pytest.approx([0.9, 0.9])


def test_shapefile_unknown_long_columns_are_cut_unique_with_a_warning(tmp_path):
    frame = lines().assign(confidence_mean=0.5, confidence_max=0.7)
    with pytest.warns(UserWarning, match="confidence_mean -> confidence, confidence_max -> confidenc1"):
        out = write_vectors({"road": frame}, tmp_path / "lines.shp")
    fields = list(pyogrio.read_info(out)["fields"])
    assert fields == ["class", "length_m", "width_m", "prob", "confidence", "confidenc1"]
    assert gpd.read_file(out)["confidenc1"].tolist() == pytest.approx([0.7, 0.7])


def test_probability_cog_and_geopackage_carry_scale_and_provenance(tmp_path):
    """QGIS reads p in [0, 1] from the uint8 COG (scale 1/255), and both outputs say what made them."""
    from geoccseg.io.catalog import sample_scene

    prob, lines = tmp_path / "prob.tif", tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["predict", str(sample_scene()), "-o", str(lines), "--prob-out", str(prob),
                                      "--threshold", "0.4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    sha = json.loads((Path(geoccseg.__file__).parent / "assets" / "models" / "road" / "bundle.json").read_text())["weights_sha256"]
    expected = {"GEOCCSEG_MODEL": "road", "GEOCCSEG_WEIGHTS_SHA256": sha, "GEOCCSEG_VERSION": geoccseg.__version__,
                "GEOCCSEG_THRESHOLD": "0.4"}
    with rasterio.open(prob) as src:
        assert src.scales == (1 / 255,) and src.offsets == (0.0,)
        assert src.descriptions == ("road",)
        tags = src.tags()
        raw = src.read(1, masked=True)
    assert {k: tags.get(k) for k in expected} == expected
    assert tags["GEOCCSEG_PROBABILITY"] == "uint8"
    assert 0 < raw.max() <= 255  # the stored values stay p x 255: the scale is what GIS applies
    meta = pyogrio.read_info(lines, layer="road")["layer_metadata"]
    assert {k: meta.get(k) for k in expected} == expected
    assert _gpkg_pragmas(lines) == (GPKG_APPLICATION_ID, 10200)  # metadata tables keep the version
    gpd.read_file(lines, layer="road")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prob.tif", "roads.gpkg"]  # reading it wrote no .aux.xml
