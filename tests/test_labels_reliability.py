"""Labels and scene data that must not mislead training: line widths in ground metres whatever the
CRS, refusal of labels that put no pixel of a class in the labeled area, training without an AOI,
band and tile checks, and ``geoccseg info`` (text and ``--json``) on the real SpaceNet chip."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image
from pyproj import CRS
from shapely.geometry import box

from geoccseg.cli import cli
from geoccseg.io.labels import VectorLabels
from geoccseg.io.scene import open_scene
from geoccseg.models import load_bundle

SCENE = "vegas_img0_rgb.tif"
ROADS = "vegas_img0_roads.geojson"
NEVADA_EAST_FTUS = 3421  # NAD83 / Nevada East (ftUS), the state plane zone of Las Vegas, in US survey feet


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output.strip()


def _train(vegas: Path, labels: Path, out: Path, *extra) -> tuple[int, str]:
    return _run("train", "--scene", vegas / SCENE, "--labels", labels, "-o", out, "--max-steps", "1",
                "--tile-px", "128", "--batch-size", "2", *extra)


@pytest.mark.parametrize(("epsg", "suffix"), [(4269, "geojson"), (32611, "gpkg"), (3857, "gpkg"), (NEVADA_EAST_FTUS, "gpkg"), (NEVADA_EAST_FTUS, "geojson")])
def test_line_widths_are_metres_on_the_ground_in_any_label_crs(vegas, tmp_path, epsg, suffix):
    """The same centrelines in degrees (NAD83: the reference file is WGS 84), UTM, Web Mercator (1.24x scale at 36 N) or US survey feet
    burn the same road pixels: 6 m wide on the ground, not 6 feet or 6 Mercator units."""
    scene = open_scene(vegas / SCENE)
    lines = gpd.read_file(vegas / ROADS)
    path = tmp_path / f"roads_{epsg}.{suffix}"
    lines.to_crs(epsg).to_file(path)
    written = gpd.read_file(path)
    assert written.crs.to_epsg() == epsg
    if epsg == NEVADA_EAST_FTUS:
        assert CRS(written.crs).axis_info[0].unit_name == "US survey foot"
    shape = (scene.height, scene.width)
    reference = (VectorLabels.open(vegas / ROADS, scene.crs, width_m=6.0).rasterize(scene.bounds, shape) == 1).sum()
    roads = (VectorLabels.open(path, scene.crs, width_m=6.0).rasterize(scene.bounds, shape) == 1).sum()
    assert abs(roads / reference - 1) < 0.03, (epsg, roads, reference)
    # and the reference itself is 6 m wide: its ground area matches the buffered lines in UTM
    utm = lines.estimate_utm_crs()
    footprint = gpd.GeoSeries([scene.footprint], crs=scene.crs).to_crs(utm).iloc[0]
    truth_m2 = shapely.union_all(lines.to_crs(utm).buffer(3.0, cap_style="flat").values).intersection(footprint).area
    x_m, y_m = scene.pixel_size_xy_m
    assert abs(reference * x_m * y_m / truth_m2 - 1) < 0.03


def test_line_widths_stay_metres_in_a_file_that_spans_continents(vegas, tmp_path):
    """Lines were buffered in one UTM zone, that of the whole file's centre: with Paris's roads in
    the same file the zone lay near 56 W, 59 degrees from Las Vegas, and its roads came out about
    4.3 m wide instead of 6 (scale 1.39). Each line now takes its own zone."""
    scene = open_scene(vegas / SCENE)
    lines = gpd.read_file(vegas / ROADS)
    paris = lines.set_geometry(lines.translate(115.15 + 2.35, 48.86 - 36.17))  # the same lines moved to Paris
    both = tmp_path / "two_cities.gpkg"
    pd.concat([lines, paris]).to_file(both)
    shape = (scene.height, scene.width)
    reference = (VectorLabels.open(vegas / ROADS, scene.crs, width_m=6.0).rasterize(scene.bounds, shape) == 1).sum()
    roads = (VectorLabels.open(both, scene.crs, width_m=6.0).rasterize(scene.bounds, shape) == 1).sum()
    assert abs(roads / reference - 1) < 0.01, (roads, reference)


@pytest.fixture
def scene_aoi(vegas, tmp_path) -> Path:
    """An AOI over the upper half of the real chip."""
    scene = open_scene(vegas / SCENE)
    xmin, ymin, xmax, ymax = scene.bounds
    path = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(xmin, (ymin + ymax) / 2, xmax, ymax)], crs=scene.crs).to_file(path)
    return path


def _unusable_labels(kind: str, vegas: Path, tmp_path: Path) -> tuple[Path, str]:
    """Real label files that put no road pixel in the labeled area, and what the error must say they hold."""
    path = tmp_path / f"{kind}.gpkg"
    lines = gpd.read_file(vegas / ROADS)
    if kind == "empty":
        gpd.GeoDataFrame({"name": []}, geometry=gpd.GeoSeries([], crs=4326), crs=4326).to_file(path)
        return path, "(the file holds no feature)"
    if kind == "nulls":
        gpd.GeoDataFrame({"id": [1, 2, 3]}, geometry=[None, None, None], crs=4326).to_file(path)
        return path, "(3 feature(s), all with a null or empty geometry)"
    if kind == "far":
        lines.set_geometry(lines.translate(0.5, 0.5)).to_file(path)  # the same 38 lines, 50 km away
        return path, "(38 road feature(s), all outside the scene); check the labels' location and CRS"
    scene = open_scene(vegas / SCENE)
    xmin, ymin, xmax, ymax = scene.bounds
    south = lines.within(box(xmin, ymin, xmax, (ymin + ymax) / 2 - 1e-4))  # the lower half, 11 m clear of the AOI
    lines[south].to_file(path)
    n = int(south.sum())
    assert n > 0
    return path, f"({n} road feature(s), {n} in the scene but none inside the AOI)"


@pytest.mark.parametrize(("kind", "with_aoi"), [("empty", False), ("nulls", False), ("far", False), ("far", True), ("south", True)])
def test_training_refuses_labels_with_no_road_pixel(vegas, tmp_path, scene_aoi, kind, with_aoi):
    """Empty layers, null geometries and lines outside the scene or the AOI stop training with one
    line naming the file and what it holds, instead of training a model on background only."""
    labels, found = _unusable_labels(kind, vegas, tmp_path)
    code, out = _train(vegas, labels, tmp_path / "model", *(["--aoi", scene_aoi] if with_aoi else []))
    assert code == 2 and out.count("\n") == 0, out
    assert out.startswith(f"geoccseg: error: labels {labels}: 0 road pixels inside the labeled area "), out
    assert found in out, out
    assert not (tmp_path / "model" / "bundle.json").exists()


def test_photo_training_refuses_labeled_masks_without_the_class(data_dir, tmp_path):
    """Massachusetts crops whose road masks are empty (34 of the 326 are): labeling only those
    trains nothing; photo training refuses in one line, as scene training does."""
    source = data_dir / "massachusetts" / "train"
    empty = [m for m in sorted((source / "masks").iterdir()) if np.asarray(Image.open(m)).max() == 0][:2]
    assert len(empty) == 2
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for mask in empty:  # links to the real files, not copies
        (tmp_path / "masks" / mask.name).symlink_to(mask)
        (tmp_path / "images" / mask.name).symlink_to(source / "images" / mask.name)
    code, out = _run("train", "--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", "road",
                     "--labeled-fraction", "1", "-o", tmp_path / "model", "--max-steps", "1", "--tile-px", "128")
    assert code == 2 and out.count("\n") == 0, out
    assert f"masks {tmp_path / 'masks'}: 0 road pixels in the 2 labeled mask(s) ({empty[0].name}, {empty[1].name})" in out


def test_training_without_aoi_uses_the_labeled_chips_as_unlabeled(vegas, tmp_path, caplog):
    """Labels without an AOI cover the whole scene: the unlabeled terms train on the labeled chips."""
    out = tmp_path / "model"
    with caplog.at_level(logging.WARNING, logger="geoccseg"):
        code, text = _train(vegas, vegas / ROADS, out, "--max-steps", "2", "--unlabeled-batch-size", "2",
                            "--unlabeled-start-steps", "0", "--rampup-steps", "1")
    assert code == 0, text
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("geoccseg")]
    assert any("the labeled chips serve as unlabeled ones too" in n and "\n" not in n for n in notes), notes
    assert load_bundle(out).meta.classes == ["road"]
    rows = (out / "metrics.csv").read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    assert first[header.index("pl")] and first[header.index("con")]  # the unlabeled terms ran


def test_band_tile_and_point_inputs_are_refused_in_one_line(vegas, tmp_path):
    scene = vegas / SCENE
    code, out = _run("info", scene, "--bands", "a,b")
    assert code == 2 and out.count("\n") == 0 and "bands must be comma-separated 1-based band numbers" in out
    code, out = _run("info", scene, "--bands", "1,2,4")
    assert code == 2 and out.count("\n") == 0 and "band 4" in out and "alpha band" in out and "among 1, 2, 3" in out
    code, out = _train(vegas, vegas / ROADS, tmp_path / "alpha", "--bands", "4")
    assert code == 2 and out.count("\n") == 0 and "alpha band" in out
    for tile in ("0", "100"):
        code, out = _run("info", scene, "--labels", vegas / ROADS, "--tile-px", tile)
        assert code == 2 and out.count("\n") == 0 and f"tile_px must be a multiple of 32 (at least 32), got {tile}" in out
    points = tmp_path / "points.gpkg"
    lines = gpd.read_file(vegas / ROADS)
    lines.set_geometry(shapely.get_point(lines.geometry.values, 0)).to_file(points)  # the first vertex of each line
    code, out = _run("info", scene, "--labels", points)
    assert code == 2 and out.count("\n") == 0 and "hold 38 point feature(s)" in out and "need lines" in out


def test_info_json_and_text_report_the_labeled_pixels(vegas, tmp_path, scene_aoi):
    scene = open_scene(vegas / SCENE)
    shape = (scene.height, scene.width)
    # the real command: one JSON object on stdout, the note (no AOI) on stderr only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "geoccseg.cli", "info", str(vegas / SCENE), "--labels", str(vegas / ROADS), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert "labeled chips serve as unlabeled ones too" in proc.stderr and proc.stderr.count("\n") == 1
    assert facts["width"] == facts["height"] == 1300 and facts["crs"] == "EPSG:4326" and facts["input_bands"] == [1, 2, 3]
    assert facts["chips"]["labeled"] == 25 and facts["chips"]["unlabeled"] == 0 and facts["chips"]["unlabeled_from_labeled"]
    roads = int((VectorLabels.open(vegas / ROADS, scene.crs).rasterize(scene.bounds, shape) == 1).sum())
    assert facts["label_pixels"] == {"background": scene.width * scene.height - roads, "road": roads}

    # with an AOI over the upper half: about half the pixels, only the roads there
    code, out = _run("info", vegas / SCENE, "--labels", vegas / ROADS, "--aoi", scene_aoi, "--json")
    assert code == 0
    half = json.loads(out)
    upper = box(*scene.bounds).intersection(gpd.read_file(scene_aoi).geometry.iloc[0])
    assert sum(half["label_pixels"].values()) == pytest.approx(scene.width * scene.height / 2, rel=0.01)
    upper_roads = (VectorLabels.open(vegas / ROADS, scene.crs).rasterize(upper.bounds, (650, 1300)) == 1).sum()
    assert half["label_pixels"]["road"] == pytest.approx(upper_roads, rel=0.01)
    assert not half["chips"]["unlabeled_from_labeled"] and half["chips"]["unlabeled"] > 0

    code, text = _run("info", vegas / SCENE, "--labels", vegas / ROADS, "--aoi", scene_aoi)
    assert code == 0
    road, background = half["label_pixels"]["road"], half["label_pixels"]["background"]
    assert f"labeled px:  background {background:,}, road {road:,}" in text
    # without labels nothing is counted; the scene facts stay
    code, out = _run("info", vegas / SCENE, "--json")
    assert code == 0 and "label_pixels" not in json.loads(out) and json.loads(out)["mask"] == "alpha"
    assert np.isclose(json.loads(out)["pixel_size_m"], scene.pixel_size_xy_m).all()


def test_a_geopackage_of_several_layers_is_refused_not_read_at_its_first(vegas, tmp_path):
    """A QGIS project GeoPackage holds several layers: the first one was read silently (AOI polygons
    trained on as road where that layer came first), and a first layer without geometries (an
    attribute table) was an AttributeError traceback. One layer with geometries beside attribute
    tables is read."""
    import pyogrio

    from geoccseg.errors import GeoccsegError
    from geoccseg.io.labels import read_vector

    roads = gpd.read_file(vegas / "vegas_img0_roads.geojson")
    aoi = gpd.GeoDataFrame(geometry=[box(*roads.total_bounds)], crs=roads.crs)
    project = tmp_path / "project.gpkg"
    aoi.to_file(project, layer="aoi")
    roads.to_file(project, layer="roads")
    with pytest.raises(GeoccsegError, match=r"project.gpkg holds 2 layers with geometries \(aoi, roads\); geoccseg reads one: "
                                            r"save the one meant for labels on its own, e.g. ogr2ogr labels.gpkg project.gpkg aoi"):
        read_vector(project, "labels")
    table = tmp_path / "table_first.gpkg"
    pyogrio.write_dataframe(roads.drop(columns="geometry"), table, layer="notes")  # no geometry column: an attribute table
    roads.to_file(table, layer="roads")
    assert len(read_vector(table, "labels")) == len(roads)
    only_table = tmp_path / "only_table.gpkg"
    pyogrio.write_dataframe(roads.drop(columns="geometry"), only_table, layer="notes")
    with pytest.raises(GeoccsegError, match="only_table.gpkg holds no layer with geometries"):
        read_vector(only_table, "labels")


def test_an_aoi_in_degrees_keeps_its_edges_on_a_utm_scene(tmp_path) -> None:
    """Review G5: AOIs and polygon labels were reprojected corner by corner; the straight edge of a
    20 km AOI drawn in degrees is a curve in UTM, and its middle sat 4.6 m off (a strip of the scene
    trained as labeled background, or left out)."""
    import geopandas as gpd
    import pyproj
    import shapely
    from shapely.geometry import box

    from geoccseg.io.aoi import read_aoi

    gpd.GeoDataFrame(geometry=[box(-115.3, 36.0, -115.1, 36.2)], crs="EPSG:4326").to_file(tmp_path / "aoi.gpkg")
    area = read_aoi(tmp_path / "aoi.gpkg", "EPSG:32611")
    x, y = pyproj.Transformer.from_crs(4326, 32611, always_xy=True).transform(-115.2, 36.2)  # the north edge's middle
    assert area.exterior.distance(shapely.Point(x, y)) < 0.01
