"""Writing lines to GIS files, and the ``geoccseg vectorize`` command end to end."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import LineString

from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.io.vector_write import write_vectors
from geoccseg.vectorize import vectorize_array

UTM = "EPSG:32611"
ONE_METRE = Affine(1.0, 0.0, 500_000.0, 0.0, -1.0, 4_000_000.0)


def lines_of(name: str, n: int, crs: str | None = UTM) -> gpd.GeoDataFrame:
    geoms = [LineString([(500_000 + 10 * i, 3_999_900), (500_000 + 10 * i, 3_999_950 + i)]) for i in range(n)]
    data = {"class": [name] * n, "length_m": [g.length for g in geoms], "width_m": [5.0] * n, "probability": [0.9] * n}
    return gpd.GeoDataFrame(data, geometry=geoms, crs=crs)


def empty_lines() -> gpd.GeoDataFrame:
    return vectorize_array(np.zeros((20, 20)), transform=ONE_METRE, crs=UTM)


def test_gpkg_has_one_layer_per_class_with_crs(tmp_path):
    out = write_vectors({"road": lines_of("road", 3), "crack": lines_of("crack", 2)}, tmp_path / "lines.gpkg")
    assert out == tmp_path / "lines.gpkg"
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["crack", "road"]
    road = gpd.read_file(out, layer="road")
    assert road.crs == UTM and len(road) == 3
    assert road["length_m"].tolist() == pytest.approx([50, 51, 52])
    assert set(gpd.read_file(out, layer="crack")["class"]) == {"crack"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.gpkg"]


@pytest.mark.parametrize("name", ["lines.geojson", "lines.fgb", "lines.shp"])
def test_single_layer_formats_hold_all_classes(tmp_path, name):
    out = write_vectors({"road": lines_of("road", 3), "crack": lines_of("crack", 2)}, tmp_path / name)
    back = gpd.read_file(out)
    if name.endswith(".geojson"):  # RFC 7946: always WGS 84 longitude/latitude (tests/test_formats.py)
        assert back.crs == "EPSG:4326"
        back = back.to_crs(UTM)
    assert back.crs == UTM
    rows = sorted(zip(back["class"], back.geometry.length.round(1)))  # FlatGeobuf reorders by its index
    assert rows == [("crack", 50), ("crack", 51), ("road", 50), ("road", 51), ("road", 52)]
    # a class without lines beside one with lines: the numeric fields stay numbers
    out = write_vectors({"road": lines_of("road", 3), "crack": empty_lines()}, tmp_path / f"mixed{Path(name).suffix}")
    assert pyogrio.read_info(out)["dtypes"].tolist()[1:] == ["float64"] * 3


def test_shapefile_leaves_no_staging_folder(tmp_path):
    write_vectors({"road": lines_of("road", 1)}, tmp_path / "lines.shp")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lines.cpg", "lines.dbf", "lines.prj", "lines.shp", "lines.shx"]


@pytest.mark.parametrize("when", [("before", ".prj"), ("after", ".dbf"), ("after", ".shp")])
def test_an_interrupted_shapefile_overwrite_keeps_the_old_one_whole(tmp_path, monkeypatch, when):
    """Overwriting a Shapefile removed the old sidecars first: Ctrl-C (or an I/O error) among the
    moves left the old .shp without its .dbf. The old parts go back, also when the error comes
    after a part's rename (flushing it to disk), the .shp's included; a stale .qix goes only once
    the new set is in place."""
    import geoccseg.io.atomic as atomic

    out = write_vectors({"road": lines_of("road", 2)}, tmp_path / "lines.shp")
    (tmp_path / "lines.qix").write_bytes(b"an old spatial index")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_move = atomic.move_into_place
    moment, suffix = when

    def interrupted(part, dest, overwrite=False):
        if moment == "after":
            real_move(part, dest, overwrite)
        if Path(dest).suffix == suffix:
            raise KeyboardInterrupt if moment == "before" else OSError(5, "Input/output error")
        if moment == "before":
            real_move(part, dest, overwrite)

    monkeypatch.setattr(atomic, "move_into_place", interrupted)
    with pytest.raises((KeyboardInterrupt, OSError)):
        write_vectors({"road": lines_of("road", 5)}, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert len(gpd.read_file(out)) == 2
    monkeypatch.setattr(atomic, "move_into_place", real_move)
    write_vectors({"road": lines_of("road", 5)}, out, overwrite=True)
    assert len(gpd.read_file(out)) == 5 and not (tmp_path / "lines.qix").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.cpg", "lines.dbf", "lines.prj", "lines.shp", "lines.shx"]


@pytest.mark.parametrize("name", ["empty.gpkg", "empty.fgb"])
def test_empty_result_is_a_valid_empty_line_layer(tmp_path, name):
    out = write_vectors({"road": empty_lines()}, tmp_path / name)
    info = pyogrio.read_info(out, layer="road" if name.endswith(".gpkg") else None)
    assert info["geometry_type"] == "LineString"
    assert list(info["fields"]) == ["class", "length_m", "width_m", "probability"]
    assert list(info["dtypes"]) == ["object", "float64", "float64", "float64"]  # numbers, not text fields
    back = gpd.read_file(out)
    assert len(back) == 0 and back.crs == UTM


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    out = write_vectors({"road": lines_of("road", 1)}, tmp_path / "lines.gpkg")
    with pytest.raises(GeoccsegError, match="already exists"):
        write_vectors({"road": lines_of("road", 4)}, out)
    assert len(gpd.read_file(out)) == 1
    write_vectors({"road": lines_of("road", 4)}, out, overwrite=True)
    assert len(gpd.read_file(out)) == 4


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    with pytest.raises(GeoccsegError, match=r"\.gpkg, \.geojson, \.fgb, \.shp"):
        write_vectors({"road": lines_of("road", 1)}, tmp_path / "lines.kml")


def test_crs_must_be_known(tmp_path):
    with pytest.raises(GeoccsegError, match="CRS"):
        write_vectors({"road": lines_of("road", 1, crs=None)}, tmp_path / "lines.gpkg")
    out = write_vectors({"road": lines_of("road", 1, crs=None)}, tmp_path / "lines.gpkg", crs=UTM)
    assert gpd.read_file(out).crs == UTM
    wgs84 = write_vectors({"road": lines_of("road", 1)}, tmp_path / "wgs84.gpkg", crs="EPSG:4326")
    back = gpd.read_file(wgs84)
    assert back.crs == "EPSG:4326" and -118 < back.geometry.iloc[0].coords[0][0] < -116


@pytest.mark.parametrize("name", ["lines.gpkg", "lines.shp", "lines.fgb"])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, name):
    real_write = pyogrio.write_dataframe
    calls = []

    def write_then_fail(df, path, **kwargs):
        real_write(df, path, **kwargs)  # a file is half done on disk...
        calls.append(path)
        if len(calls) == 2 or not name.endswith(".gpkg"):
            raise OSError("disk full")  # ...when the writer fails

    monkeypatch.setattr(pyogrio, "write_dataframe", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_vectors({"road": lines_of("road", 2), "crack": lines_of("crack", 1)}, tmp_path / name)
    assert calls and list(tmp_path.iterdir()) == []


def write_prob_tif(path: Path, prob: np.ndarray, crs: str | None) -> Path:
    profile = {"driver": "GTiff", "height": prob.shape[0], "width": prob.shape[1], "count": 1,
               "dtype": "uint8", "transform": ONE_METRE, "crs": crs}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.round(prob * 255).astype(np.uint8), 1)
        dst.write_mask(np.full(prob.shape, 255, dtype=np.uint8))
        dst.set_band_description(1, "road")
    return path


def test_cli_vectorizes_a_probability_geotiff(tmp_path):
    prob = np.full((120, 150), 0.05)
    prob[58:63, 10:140] = 0.9  # a 5 m wide, 130 m long road
    tif = write_prob_tif(tmp_path / "prob.tif", prob, UTM)
    out = tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", str(tif), "-o", str(out), "--block-px", "64", "--simplify-m", "0.5"])
    assert result.exit_code == 0, result.output
    assert "road: 1 lines, 0.12" in result.output
    roads = gpd.read_file(out, layer="road")
    assert len(roads) == 1 and roads.crs == UTM
    assert roads["length_m"].iloc[0] == pytest.approx(126, abs=4)
    again = CliRunner().invoke(cli, ["vectorize", str(tif), "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize(("problem", "told"), [
    ("missing", "prob.tif does not exist; pass the probability GeoTIFF written by prediction"),
    ("not a raster", "prob.tif is not a raster that can be read"),
    ("no CRS", "prob.tif has no CRS; assign one"),
    ("bad extension", "unknown extension '.txt'; use one of .gpkg"),
])
def test_cli_bad_input_is_a_one_line_error(tmp_path, problem, told):
    tif = tmp_path / "prob.tif"
    out = tmp_path / "roads.gpkg"
    if problem == "not a raster":
        tif.write_text("hello")
    elif problem == "no CRS":
        write_prob_tif(tif, np.zeros((20, 20)), None)
    elif problem == "bad extension":
        write_prob_tif(tif, np.zeros((20, 20)), UTM)
        out = tmp_path / "roads.txt"
    result = CliRunner().invoke(cli, ["vectorize", str(tif), "-o", str(out)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("geoccseg: error:") and "\n" not in message and told in message
    assert not out.exists()


LOCAL_WKT = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
"""A drone orthomosaic's "local coordinates": an engineering CRS in metres, with no place on the earth."""


def test_geojson_of_a_scene_in_a_local_crs_is_refused_before_any_work(tmp_path: Path) -> None:
    """A drone orthomosaic exported in local coordinates (an engineering CRS) was predicted whole,
    then its lines could not be turned into GeoJSON's WGS 84: a traceback at the very end, and the
    --prob-out lost with them. It is refused at once now, by predict and by suggest (its areas are
    in the scene's CRS too); .gpkg keeps the local CRS."""
    from rasterio.crs import CRS as RioCRS

    from geoccseg.io.catalog import sample_scene

    with rasterio.open(sample_scene()) as src:
        profile, pixels = src.profile, src.read()
    profile.update(crs=RioCRS.from_wkt(LOCAL_WKT), transform=Affine(0.3, 0, 1000.0, 0, -0.3, 2000.0))
    scene = tmp_path / "ortho_local.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(pixels)
    for command, out in (("predict", "roads.geojson"), ("suggest", "areas.geojson")):
        extra = ["--prob-out", str(tmp_path / "p.tif")] if command == "predict" else ["-n", "3"]
        result = CliRunner().invoke(cli, [command, str(scene), "-o", str(tmp_path / out), *extra])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert (f"cannot write {tmp_path / out}: GeoJSON holds WGS 84 coordinates, and {scene} is in a local CRS "
                "(site grid) with no place on the earth; write .gpkg or .fgb") in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ortho_local.tif"]


def test_road_graph_of_a_scene_in_a_local_crs_is_in_its_metres(tmp_path: Path) -> None:
    """--graph measured its edges in the lines' UTM zone, which a local grid has none of: a pyproj
    traceback after the whole prediction. A local grid in metres is measured as it is."""
    from rasterio.crs import CRS as RioCRS

    prob = np.full((120, 150), 13, dtype=np.uint8)
    prob[58:63, 10:140] = 230  # one 5 m wide road, 130 m long east-west
    prob_tif = tmp_path / "prob.tif"
    with rasterio.open(prob_tif, "w", driver="GTiff", height=120, width=150, count=1, dtype="uint8",
                       crs=RioCRS.from_wkt(LOCAL_WKT), transform=Affine(1.0, 0, 1000.0, 0, -1.0, 2000.0)) as dst:
        dst.write(prob, 1)
        dst.set_band_description(1, "road")
    out = tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", str(prob_tif), "-o", str(out), "--graph"])
    assert result.exit_code == 0, result.output
    edges = gpd.read_file(out, layer="road_edges")
    assert edges.crs.name == "site grid" and len(edges) == 1
    assert edges.length_m.iloc[0] == pytest.approx(edges.geometry.length.iloc[0]) and 115 < edges.length_m.iloc[0] < 131
