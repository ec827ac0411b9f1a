"""APLS and TOPO (geoccseg.evaluate.apls, geoccseg.evaluate.topo): values worked out by hand in the
docstrings, and `geoccseg evaluate` on the SpaceNet Las Vegas centrelines."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner
from shapely.geometry import LineString

from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import APLSParams, TopoParams, apls_score, evaluate, topo_counts
from geoccseg.vectorize import road_graph

UTM = "EPSG:32611"
X0, Y0 = 500_000.0, 4_000_000.0


def graph(*parts: list[tuple[float, float]]):
    """Road graph of lines in UTM metres, coordinates relative to (X0, Y0)."""
    return road_graph(gpd.GeoSeries([LineString([(X0 + x, Y0 + y) for x, y in part]) for part in parts], crs=UTM))


# Two T-junctions B (100, 0) and C (130, 0) joined by a 30 m bridge B-C:
# A (0, 0) -- B -- C -- D (230, 0), with spurs B-E (100, 30) and C-F (130, 30).
AB, BE, BC, CD, CF = [(0, 0), (100, 0)], [(100, 0), (100, 30)], [(100, 0), (130, 0)], [(130, 0), (230, 0)], [(130, 0), (130, 30)]


def test_identical_graphs_score_one() -> None:
    truth = graph(AB, BE, BC, CD, CF)
    result = apls_score(truth, graph(AB, BE, BC, CD, CF))
    assert result.apls == pytest.approx(1.0, abs=1e-12)
    assert result.truth_onto_pred == pytest.approx(1.0, abs=1e-12) and result.pred_onto_truth == pytest.approx(1.0, abs=1e-12)
    # control points: A, B, C, D, E, F and the midpoints of the 100 m edges A-B and C-D: 8 points, 28 pairs
    assert result.truth_paths == 28
    topo = topo_counts(truth, truth)
    assert (topo.fp, topo.fn) == (0, 0) and topo.tp > 0 and topo.f1 == 1.0


def test_bridge_edge_removed_by_hand() -> None:
    """Truth: A-B 100 m, B-E 30 m, B-C 30 m (the bridge), C-D 100 m, C-F 30 m. Prediction: the same without B-C.

    Control points every 50 m: an edge of 100 m gets its midpoint, edges under 0.75 x 50 m none.

    Truth onto prediction. Truth control points: A, M1 (50, 0), B, E on the left, C, F, M2 (180, 0), D on
    the right: 8 points, 28 pairs, all joined in the truth. Without the bridge B and C have two roads
    each, so the prediction has two edges A-E and D-F (130 m each) and B, C, M1, M2 snap onto their
    interiors. The 6 + 6 pairs within a side keep their exact lengths (difference 0); the 4 x 4 = 16
    pairs across have no path in the prediction (difference 1).  C = 1 - 16/28 = 3/7.

    Prediction onto truth. Its control points: A, E, D, F and, on each 130 m edge,
    linspace(0, 130, 4)[1:-1] = 43.3 and 86.7 m: 8 points, but only the 6 + 6 pairs within a side are
    joined in the prediction, and the truth has the same paths: C = 1.

    APLS = harmonic mean = 2 (3/7)(1) / (3/7 + 1) = 0.6.
    """
    result = apls_score(graph(AB, BE, BC, CD, CF), graph(AB, BE, CD, CF))
    assert result.truth_onto_pred == pytest.approx(3 / 7)
    assert result.pred_onto_truth == pytest.approx(1.0)
    assert (result.truth_paths, result.pred_paths) == (28, 12)
    assert result.apls == pytest.approx(0.6)


def test_topo_of_a_road_with_a_gap_by_hand() -> None:
    """Truth: one straight road A (0, 0) - D (230, 0); its only nodes A and D are the seeds. Prediction:
    the same road with a gap from 100 to 130 m.

    Holes every 30 m out to 150 m from each seed: 0, 30, ..., 150 m, 6 per seed, 12 in all. From A the
    prediction (entered at A) carries marbles at 0, 30, 60 and 90 m and stops at 100 m: 4 marbles,
    each in its hole. The same from D. tp = 8, fp = 0, fn = 12 - 8 = 4: precision 1, recall 2/3,
    F1 = 2 x 1 x 2/3 / (1 + 2/3) = 0.8.
    """
    counts = topo_counts(graph([(0, 0), (230, 0)]), graph([(0, 0), (100, 0)], [(130, 0), (230, 0)]))
    assert (counts.tp, counts.fp, counts.fn) == (8, 0, 4)
    assert counts.precision == 1.0 and counts.recall == pytest.approx(2 / 3) and counts.f1 == pytest.approx(0.8)


def spacenet(vegas: Path, dx_m: float = 0.0, dy_m: float = 0.0) -> gpd.GeoDataFrame:
    lines = gpd.read_file(vegas / "vegas_img0_roads.geojson")
    if dx_m or dy_m:
        lines = lines.set_geometry(lines.to_crs(UTM).translate(dx_m, dy_m).to_crs(lines.crs))
    return lines


def test_shift_within_the_snapping_buffer_stays_near_one(vegas: Path) -> None:
    truth = road_graph(spacenet(vegas))
    near = road_graph(spacenet(vegas, 2.0, 1.0))  # 2.2 m off, within the 4 m buffer
    # measured: APLS 0.991, TOPO F1 0.926 (marbles 2.2 m from their holes, a few near the ends fall out)
    assert apls_score(truth, near).apls > 0.97
    assert topo_counts(truth, near).f1 > 0.85
    far = road_graph(spacenet(vegas, 6.0, 0.0))  # outside the buffer: most control points lose their counterpart
    assert apls_score(truth, far).apls < 0.5


def test_empty_prediction_scores_zero(vegas: Path) -> None:
    truth = road_graph(spacenet(vegas))
    empty = road_graph(gpd.GeoSeries([], crs=UTM))
    result = apls_score(truth, empty)
    assert (result.apls, result.truth_onto_pred, result.pred_onto_truth) == (0.0, 0.0, 0.0)
    topo = topo_counts(truth, empty)
    assert topo.tp == 0 and topo.fn > 0 and (topo.precision, topo.recall, topo.f1) == (0.0, 0.0, 0.0)
    assert apls_score(empty, empty).apls == 1.0 and topo_counts(empty, empty).f1 == 1.0  # nothing to find, nothing false


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(GeoccsegError, match="snap_m"):
        APLSParams(snap_m=0)
    with pytest.raises(GeoccsegError, match="interval_m"):
        TopoParams(interval_m=-1)


def test_cli_truth_against_itself_and_against_half_of_it(vegas: Path, tmp_path: Path) -> None:
    truth = vegas / "vegas_img0_roads.geojson"
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(cli, ["evaluate", str(truth), str(truth), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "APLS" in result.stdout and "TOPO F1" in result.stdout and "1.0000" in result.stdout
    assert "wrote" not in result.stdout and f"wrote {out}" in result.stderr  # stdout holds the table alone
    row = json.loads(out.read_text())["classes"][0]
    assert row["apls"] == pytest.approx(1.0, abs=1e-9)
    assert (row["topo_precision"], row["topo_recall"], row["topo_f1"]) == (1.0, 1.0, 1.0)
    half = tmp_path / "half.geojson"
    spacenet(vegas).iloc[::2].to_file(half)  # 19 of the 38 centrelines
    result = CliRunner().invoke(cli, ["evaluate", str(half), str(truth), "--json", str(out)])
    assert result.exit_code == 2 and "scores.json already exists; pass --overwrite to replace it" in result.stderr
    assert json.loads(out.read_text())["classes"][0]["apls"] == pytest.approx(1.0, abs=1e-9)  # kept
    result = CliRunner().invoke(cli, ["evaluate", str(half), str(truth), "--json", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    row = scores["classes"][0]
    # measured: APLS 0.163 (truth onto half 0.090: most paths are cut; half onto truth 0.900), TOPO recall 0.17
    assert row["apls"] < 0.5 and row["apls_truth_onto_pred"] < row["apls_pred_onto_truth"]
    assert row["topo_recall"] < 0.5 < row["topo_precision"]
    assert scores["apls_params"] == {"snap_m": 4.0, "spacing_m": 50.0, "min_path_m": 0.001, "max_points": 1000}
    # options reach the metrics, and bad values are one line
    result = CliRunner().invoke(cli, ["evaluate", str(half), str(truth), "--json", str(out), "--apls-snap-m", "100", "--overwrite"])
    assert json.loads(out.read_text())["classes"][0]["apls"] > row["apls"]
    result = CliRunner().invoke(cli, ["evaluate", str(half), str(truth), "--topo-hole-m", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["geoccseg: error: TOPO hole_m must be a finite number > 0 metres, got 0.0"]


def test_rasters_go_through_the_vectoriser(vegas: Path) -> None:
    # the SpaceNet road mask (rasterised from its 9 centrelines) against those centrelines
    row = evaluate(vegas / "vegas_pan_roadmask.tif", vegas / "vegas_pan_roads.geojson").classes[0]
    assert row.apls > 0.97 and row.topo_f1 > 0.95  # measured: 0.995 and 1.0
    off = evaluate(vegas / "vegas_pan_roadmask.tif", vegas / "vegas_pan_roads.geojson", graph_metrics=False).classes[0]
    assert off.apls is None and off.topo_f1 is None and off.completeness == row.completeness


def test_truth_beyond_a_predicted_raster_is_not_counted_as_missed(vegas: Path, tmp_path: Path) -> None:
    """Region-wide truth (OpenStreetMap, say) against one scene's prediction: the graph metrics
    compare only what lies on the raster, as the pixel and centreline metrics do."""
    truth = gpd.read_file(vegas / "vegas_pan_roads.geojson")
    utm = truth.estimate_utm_crs()
    elsewhere = truth.to_crs(utm).translate(xoff=5000).to_crs(truth.crs)  # the same roads 5 km east
    region = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[*truth.geometry, *elsewhere], crs=truth.crs).to_file(region)
    on_scene = evaluate(vegas / "vegas_pan_roadmask.tif", vegas / "vegas_pan_roads.geojson").classes[0]
    with_region = evaluate(vegas / "vegas_pan_roadmask.tif", region).classes[0]
    assert with_region.apls == pytest.approx(on_scene.apls) and with_region.topo_recall == pytest.approx(on_scene.topo_recall)
    assert with_region.completeness == on_scene.completeness


def test_truth_across_the_predictions_nodata_is_not_counted_as_missed(vegas: Path, tmp_path: Path) -> None:
    """The graph metrics clipped vector truth to the raster's box only: roads under its nodata
    (the collar of a reprojected scene, a masked half) counted as missed, while the pixel and
    centreline scores left those pixels out."""
    import numpy as np
    import rasterio

    with rasterio.open(vegas / "vegas_pan_roadmask.tif") as src:
        profile, data = src.profile, src.read()
    valid = np.ones(data.shape[1:], dtype=bool)
    valid[:, 650:] = False
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp_path / "half.tif", "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    row = evaluate(tmp_path / "half.tif", vegas / "vegas_pan_roads.geojson").classes[0]
    assert row.apls > 0.95 and row.topo_recall > 0.95  # APLS 0.44 when the east half counted as missed


def test_truth_that_only_touches_the_raster_edge_is_not_a_crash(vegas: Path, tmp_path: Path) -> None:
    """Clipping a line that ends on the raster's edge from outside left a Point: the road graph refused it."""
    import rasterio

    with rasterio.open(vegas / "vegas_pan_roadmask.tif") as src:
        right, top = src.bounds.right, src.bounds.top
    truth = gpd.read_file(vegas / "vegas_pan_roads.geojson")
    outside = LineString([(right + 0.001, top - 0.001), (right, top - 0.001)])  # ends exactly on the east edge
    gpd.GeoDataFrame(geometry=[*truth.geometry, outside], crs=truth.crs).to_file(tmp_path / "touch.geojson")
    row = evaluate(vegas / "vegas_pan_roadmask.tif", tmp_path / "touch.geojson").classes[0]
    assert row.apls > 0.97


def test_a_break_in_a_truth_mask_stays_a_break(vegas: Path, tmp_path: Path) -> None:
    """A truth mask went through the vectoriser with the prediction's settings, which bridge gaps up
    to 10 m: a road the truth shows broken for 7 m became connected, and a prediction drawn with the
    same break lost APLS for the connection the truth does not have. The truth's breaks are its own."""
    import numpy as np
    import rasterio
    import rasterio.features
    import shapely

    lines = gpd.read_file(vegas / "vegas_pan_roads.geojson")
    utm = lines.estimate_utm_crs()
    metric = lines.to_crs(utm)
    longest = metric.geometry.iloc[int(metric.length.argmax())]
    a, b = longest.interpolate(0.49, normalized=True), longest.interpolate(0.51, normalized=True)
    direction = np.array([b.x - a.x, b.y - a.y]) / a.distance(b)
    centre = longest.interpolate(0.5, normalized=True)
    across = LineString([(centre.x - 20 * direction[1], centre.y + 20 * direction[0]),
                         (centre.x + 20 * direction[1], centre.y - 20 * direction[0])])
    cut = gpd.GeoSeries([across.buffer(3.5, cap_style="flat")], crs=utm)  # 7 m along the road, 40 m across it
    broken = tmp_path / "broken.geojson"
    gpd.GeoDataFrame(geometry=metric.difference(cut.iloc[0]), crs=utm).to_crs(lines.crs).to_file(broken)
    with rasterio.open(vegas / "vegas_pan_roadmask.tif") as src:
        mask, profile = src.read(1), src.profile
        inside = rasterio.features.geometry_mask(cut.to_crs(src.crs), mask.shape, src.transform, invert=True)
    assert (mask[inside] > 0).any()  # the cut crosses the road
    mask[inside] = 0
    truth = tmp_path / "truth_mask.tif"
    with rasterio.open(truth, "w", **profile) as dst:
        dst.write(mask, 1)
    row = evaluate(broken, truth).classes[0]
    assert row.apls > 0.95, row  # measured 0.804 while the truth's break was bridged
    assert shapely.get_num_geometries(gpd.read_file(broken).union_all()) >= 2


def test_a_thin_truth_raster_keeps_its_short_pieces(tmp_path: Path) -> None:
    """Review V5: a raster truth went through the prediction's cleaning before APLS and TOPO: at 0.3
    m a truth of one-pixel centrelines lost every piece under about 100 m (blobs under 30 m2,
    networks under 20 m), and a prediction that drew such a road exactly was charged for it."""
    import numpy as np
    import rasterio
    from affine import Affine

    transform = Affine(0.3, 0.0, 500_000.0, 0.0, -0.3, 4_000_000.0)
    truth = np.zeros((400, 400), dtype=np.uint8)
    truth[100, 10:390] = 255  # a road of 114 m
    truth[300, 50:110] = 255  # an isolated piece of 18 m (a road crossing a tile corner)
    with rasterio.open(tmp_path / "truth.tif", "w", driver="GTiff", width=400, height=400, count=1, dtype="uint8",
                       crs="EPSG:32611", transform=transform) as dst:
        dst.write(truth[None])

    def centre(row: int, col: int) -> tuple[float, float]:
        return transform * (col + 0.5, row + 0.5)

    pred = gpd.GeoDataFrame(geometry=[LineString([centre(100, 10), centre(100, 389)]), LineString([centre(300, 50), centre(300, 109)])],
                            crs="EPSG:32611")
    pred.to_file(tmp_path / "pred.gpkg")
    row = evaluate(tmp_path / "pred.gpkg", tmp_path / "truth.tif").classes[0]
    assert row.apls > 0.95 and row.topo_precision > 0.95, row  # the 18 m piece was erased from the truth
