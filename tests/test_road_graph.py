"""Road graphs (geoccseg.vectorize.network): hand-drawn lines, GeoPackage round trip, and the
`--graph` output of `geoccseg predict` and `geoccseg vectorize` on real probability rasters."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import LineString, MultiLineString

from geoccseg.cli import cli
from geoccseg.io.catalog import sample_scene
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.files import read_lines
from geoccseg.vectorize import read_graph, road_graph, write_graph

UTM = "EPSG:32611"
X0, Y0 = 500_000.0, 4_000_000.0


def lines(*parts: list[tuple[float, float]], **columns) -> gpd.GeoDataFrame:
    """Lines in UTM metres, coordinates relative to (X0, Y0)."""
    geoms = [LineString([(X0 + x, Y0 + y) for x, y in part]) for part in parts]
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=UTM)


def node_xy(graph, n) -> tuple[float, float]:
    return graph.nodes[n]["x"], graph.nodes[n]["y"]


def assert_edges_end_on_nodes(graph) -> None:
    """Every edge runs from node min(u, v) to node max(u, v), exactly; degrees count edge ends."""
    ends = Counter()
    for u, v, data in graph.edges(data=True):
        coords = list(data["geometry"].coords)
        assert coords[0] == node_xy(graph, min(u, v)) and coords[-1] == node_xy(graph, max(u, v))
        ends[u] += 1
        ends[v] += 1
    assert {n: graph.nodes[n]["degree"] for n in graph.nodes} == {n: ends[n] for n in graph.nodes}


def test_lines_are_split_at_junctions_and_joined_through_bends() -> None:
    # a bar (0,0)-(100,0); a stem from (40,50) down onto the bar's interior at (40,0), not a vertex of it;
    # a line (100,0)-(100,-30) continued by (100,-30)-(130,-30): one road bending through a point of degree 2;
    # a line (70,10)-(70,-10) crossing the bar at (70,0)
    graph = road_graph(lines(
        [(0, 0), (100, 0)], [(40, 50), (40, 0)], [(100, 0), (100, -30)], [(100, -30), (130, -30)], [(70, 10), (70, -10)],
        width_m=[6.0, 4.0, 5.0, 3.0, 8.0], probability=[0.9, 0.7, 0.8, 0.6, 0.5],
    ))
    # nodes: ends (0,0), (40,50), (130,-30), (70,10), (70,-10); junctions (40,0) degree 3, (70,0) degree 4;
    # (100,0) joins the bar and the bend: degree 2, so it is no node and the road runs on to (130,-30)
    coords = {(round(x - X0, 6), round(y - Y0, 6)): d["degree"] for x, y, d in
              ((d["x"], d["y"], d) for _, d in graph.nodes(data=True))}
    assert coords == {(0, 0): 1, (40, 50): 1, (130, -30): 1, (70, 10): 1, (70, -10): 1, (40, 0): 3, (70, 0): 4}
    assert graph.number_of_edges() == 6
    lengths = sorted(d["length_m"] for _, _, d in graph.edges(data=True))
    # (0,0)-(40,0) 40, stem 50, (40,0)-(70,0) 30, (70,0)-(100,0)-(100,-30)-(130,-30) 30+30+30, crossing halves 10 and 10
    assert lengths == pytest.approx([10, 10, 30, 40, 50, 90])
    assert_edges_end_on_nodes(graph)
    # attributes: length-weighted means of the lines an edge runs along
    bend = max(graph.edges(data=True), key=lambda e: e[2]["length_m"])[2]
    assert bend["width_m"] == pytest.approx((30 * 6 + 30 * 5 + 30 * 3) / 90)
    assert bend["probability"] == pytest.approx((30 * 0.9 + 30 * 0.8 + 30 * 0.6) / 90)
    assert graph.graph["crs"].to_epsg() == 32611


def test_ends_within_the_snapping_distance_are_joined() -> None:
    # a side road stopping 0.6 m short of the main road, and a road whose two halves miss by 0.5 m
    drawn = lines([(0, 0), (100, 0)], [(50, 40), (50, 0.6)], [(0, -20), (30, -20)], [(30.5, -20), (60, -20)])
    joined = road_graph(drawn, snap_m=1.0)
    assert sorted(d["degree"] for _, d in joined.nodes(data=True)) == [1, 1, 1, 1, 1, 3]
    tee = next(n for n, d in joined.nodes(data=True) if d["degree"] == 3)
    assert node_xy(joined, tee) == (X0 + 50, Y0)  # the short end moved onto the main road
    halves = [d for _, _, d in joined.edges(data=True) if d["geometry"].coords[0][1] == Y0 - 20]
    assert len(halves) == 1 and halves[0]["length_m"] == pytest.approx(60, abs=0.01)  # one road, no gap
    assert_edges_end_on_nodes(joined)
    apart = road_graph(drawn, snap_m=0.3)
    assert sorted(d["degree"] for _, d in apart.nodes(data=True)) == [1, 1, 1, 1, 1, 1, 1, 1]
    assert apart.number_of_edges() == 4


def test_an_end_on_a_line_stays_there_when_another_passes_near() -> None:
    """An end lying on a line (distance 0) skipped that line and was snapped onto the next one
    within snap_m: the side road left the main road it ends on for a road 0.6 m beside it."""
    drawn = lines([(0, 0), (100, 0)], [(50, 40), (50, 0)], [(60, -0.6), (30, -0.6)])
    graph = road_graph(drawn, snap_m=1.0)
    tees = [node_xy(graph, n) for n, d in graph.nodes(data=True) if d["degree"] == 3]
    assert tees == [(X0 + 50, Y0)]  # on the main road, where it was drawn
    assert_edges_end_on_nodes(graph)


def test_two_ends_near_a_road_and_each_other_join_the_road() -> None:
    """Two side roads stopping 0.42 m short of a main road, 0.71 m apart, formed a cluster whose mean
    point (as far off the road) was never snapped onto it: they joined each other, not the road."""
    drawn = lines([(0, 0), (100, 100)], [(20, 80), (49.5, 50.1)], [(30, 90), (50.0, 50.6)])
    graph = road_graph(drawn, snap_m=1.0)
    assert sorted(d["degree"] for _, d in graph.nodes(data=True)) == [1, 1, 1, 1, 4]
    assert_edges_end_on_nodes(graph)
    # two lines that already meet (a bend drawn as two features) stay where they meet, beside a road
    bend = lines([(0, 0), (100, 0)], [(10, 0.7), (10, 50)], [(10, 0.7), (60, 30)])
    assert sorted(d["degree"] for _, d in road_graph(bend, snap_m=1.0).nodes(data=True)) == [1, 1, 1, 1]


def test_ring_multilines_geographic_crs_and_empty_input() -> None:
    ring = [(0, 0), (50, 0), (50, 50), (0, 50), (0, 0)]
    graph = road_graph(gpd.GeoSeries([MultiLineString([[(X0 + x, Y0 + y) for x, y in ring]])], crs=UTM).to_crs(4326))
    assert graph.number_of_nodes() == 1 and graph.number_of_edges() == 1  # a self-loop
    (n, d), = graph.nodes(data=True)
    assert d["degree"] == 2 and graph.has_edge(n, n)
    assert next(iter(graph.edges(data=True)))[2]["length_m"] == pytest.approx(200, rel=1e-3)  # metres, not degrees
    assert graph.graph["crs"].to_epsg() == 4326
    empty = road_graph(gpd.GeoSeries([], crs=UTM))
    assert empty.number_of_nodes() == 0 and empty.graph["crs"].to_epsg() == 32611
    with pytest.raises(GeoccsegError, match="no CRS"):
        road_graph(gpd.GeoSeries([LineString([(0, 0), (1, 1)])]))
    with pytest.raises(GeoccsegError, match="Point"):
        road_graph(gpd.GeoSeries([shapely.Point(0, 0)], crs=UTM))


def test_graph_round_trips_through_a_geopackage(tmp_path: Path) -> None:
    graph = road_graph(lines([(0, 0), (100, 0)], [(40, 50), (40, 0)], width_m=[6.0, 4.0], probability=[0.9, 0.7]))
    out = write_graph(graph, tmp_path / "g.gpkg", "road")
    assert [name for name, _ in pyogrio.list_layers(out)] == ["road_nodes", "road_edges"]
    back = read_graph(out, "road")
    assert sorted(back.nodes(data=True)) == sorted(graph.nodes(data=True))
    mine = sorted((d["edge_id"], u, v, d["length_m"], d["width_m"], d["probability"], d["geometry"].wkb) for u, v, d in graph.edges(data=True))
    theirs = sorted((d["edge_id"], u, v, d["length_m"], d["width_m"], d["probability"], d["geometry"].wkb) for u, v, d in back.edges(data=True))
    assert mine == theirs and back.graph["crs"] == graph.graph["crs"]
    # an edge line turned round in a GIS reads as the graph stores it; pinned to its nodes in
    # another CRS it crossed itself over its whole length
    edited = pyogrio.read_dataframe(out, layer="road_edges")
    edited["geometry"] = shapely.reverse(edited.geometry.values)
    pyogrio.write_dataframe(edited, out, layer="road_edges")
    turned = read_graph(out, "road")
    assert sorted((d["edge_id"], d["geometry"].wkb) for _, _, d in turned.edges(data=True)) == [(e[0], e[-1]) for e in mine]
    with pytest.raises(GeoccsegError, match="already exists"):
        write_graph(graph, out, "road")
    with pytest.raises(GeoccsegError, match="GeoPackage"):
        write_graph(graph, tmp_path / "g.geojson", "road")
    with pytest.raises(GeoccsegError, match="has no layer crack_nodes"):
        read_graph(out, "crack")
    # an empty graph gives empty layers of the right geometry types, read back as an empty graph
    empty = write_graph(road_graph(gpd.GeoSeries([], crs=UTM)), tmp_path / "empty.gpkg", "road")
    assert [(str(name), str(kind)) for name, kind in pyogrio.list_layers(empty)] == [("road_nodes", "Point"), ("road_edges", "LineString")]
    assert read_graph(empty, "road").number_of_nodes() == 0
    # a node whose point was cleared in a GIS: get_coordinates skipped it and shifted every later node onto its neighbour's place
    cleared = pyogrio.read_dataframe(out, layer="road_nodes")
    cleared.loc[0, "geometry"] = None
    pyogrio.write_dataframe(cleared, out, layer="road_nodes")
    with pytest.raises(GeoccsegError, match="holds a node without a point geometry"):
        read_graph(out, "road")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """The shipped road model run on the sample scene with --graph (one run for the module)."""
    folder = tmp_path_factory.mktemp("predicted")
    result = CliRunner().invoke(cli, [
        "predict", str(sample_scene()), "-o", str(folder / "roads.gpkg"), "--prob-out", str(folder / "prob.tif"), "--graph",
    ])
    assert result.exit_code == 0, result.output
    return folder


def read_layers(path: Path, name: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    return pyogrio.read_dataframe(path, layer=f"{name}_nodes"), pyogrio.read_dataframe(path, layer=f"{name}_edges")


def assert_every_edge_end_is_a_node(nodes: gpd.GeoDataFrame, edges: gpd.GeoDataFrame) -> None:
    at = {row.node_id: (row.geometry.x, row.geometry.y) for row in nodes.itertuples()}
    ends = Counter()
    for row in edges.itertuples():
        coords = list(row.geometry.coords)
        assert coords[0] == at[row.u] and coords[-1] == at[row.v]
        ends[row.u] += 1
        ends[row.v] += 1
    assert dict(zip(nodes["node_id"], nodes["degree"])) == {n: ends[n] for n in nodes["node_id"]}


def test_predict_and_vectorize_graph_on_the_models_probabilities(predicted: Path) -> None:
    # predict --graph: lines, nodes and edges in one GeoPackage
    roads = predicted / "roads.gpkg"
    assert [str(name) for name, _ in pyogrio.list_layers(roads)] == ["road", "road_nodes", "road_edges"]
    nodes, edges = read_layers(roads, "road")
    lines_layer = pyogrio.read_dataframe(roads, layer="road")
    assert len(edges) >= 1 and len(nodes) >= 2
    assert_every_edge_end_is_a_node(nodes, edges)
    assert edges["length_m"].sum() == pytest.approx(lines_layer["length_m"].sum(), rel=1e-3)  # UTM vs pixel-grid metres
    assert edges["probability"].between(0.5, 1).all() and (edges["width_m"] > 0).all()
    # vectorize --graph on the same probabilities, in 256-px blocks: the same graph as the one-block run of predict
    out = predicted / "blocks.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", str(predicted / "prob.tif"), "-o", str(out), "--graph", "--block-px", "256"])
    assert result.exit_code == 0, result.output
    assert f"road graph of {len(nodes)} nodes and {len(edges)} edges" in result.output
    block_nodes, block_edges = read_layers(out, "road")
    assert_every_edge_end_is_a_node(block_nodes, block_edges)
    assert sorted(block_edges["length_m"]) == pytest.approx(sorted(edges["length_m"]), abs=1e-6)
    # the Python API reads the graph back as networkx
    graph = read_graph(out, "road")
    assert graph.number_of_nodes() == len(nodes) and graph.number_of_edges() == len(edges)
    # and evaluate reads the lines of a --graph GeoPackage, not its node and edge layers (a file of
    # several layers is otherwise refused)
    result = CliRunner().invoke(cli, ["evaluate", str(roads), str(roads)])
    assert result.exit_code == 0, result.output
    assert "1.0000" in result.stdout
    read = read_lines(roads, "PRED")  # the lines themselves (the edges are the same roads cut at the nodes: scored alike)
    assert len(read) == len(lines_layer) and read.geom_equals_exact(lines_layer.geometry, 0).all()


def test_vectorize_graph_has_junctions_continuous_across_block_borders(vegas: Path, tmp_path: Path) -> None:
    # SpaceNet road mask (rasterised from 9 centrelines that meet at junctions), 128-px blocks against one block
    runs = {}
    for block_px in (128, 4096):
        out = tmp_path / f"b{block_px}.gpkg"
        result = CliRunner().invoke(cli, [
            "vectorize", str(vegas / "vegas_pan_roadmask.tif"), "-o", str(out), "--graph", "--block-px", str(block_px),
        ])
        assert result.exit_code == 0, result.output
        runs[block_px] = read_layers(out, "class_1")
        assert_every_edge_end_is_a_node(*runs[block_px])
    (nodes, edges), (whole_nodes, whole_edges) = runs[128], runs[4096]
    assert (nodes["degree"] >= 3).sum() >= 3  # real junctions
    assert sorted(nodes["degree"]) == sorted(whole_nodes["degree"])
    assert sorted(edges["length_m"]) == pytest.approx(sorted(whole_edges["length_m"]), abs=1e-6)


def test_graph_needs_a_geopackage_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(sample_scene()), "-o", str(tmp_path / "roads.geojson"), "--graph"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["geoccseg: error: --graph writes node and edge layers beside the lines, which needs a GeoPackage; name the output roads.gpkg"]
    assert list(tmp_path.iterdir()) == []


def test_a_negative_snapping_distance_is_refused_before_any_work(vegas: Path, tmp_path: Path) -> None:
    """--graph-snap-m -1 was refused only after every block was vectorised (hours on a large scene)."""
    out = tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", str(vegas / "vegas_pan_roadmask.tif"), "-o", str(out), "--graph",
                                      "--graph-snap-m", "-1"])
    assert result.exit_code == 2 and "-1.0 is not in the range x>=0" in result.output
    assert "vectorise" not in result.output and list(tmp_path.iterdir()) == []


def test_infinite_lengths_are_refused_in_one_line_before_any_work(vegas: Path, tmp_path: Path) -> None:
    """``inf`` passed every ">= 0" check: ``--max-hole-m2 inf`` then crashed with an OverflowError
    traceback when the block halo was sized (in ``predict``: after the whole prediction), and
    ``evaluate --graph-snap-m inf`` joined every line end into one point without a word."""
    from geoccseg.evaluate.apls import APLSParams
    from geoccseg.evaluate.topo import TopoParams
    from geoccseg.vectorize import VectorizeParams

    mask = str(vegas / "vegas_pan_roadmask.tif")
    cases = {
        ("vectorize", mask, "-o", str(tmp_path / "a.gpkg"), "--max-hole-m2", "inf"): "max_hole_m2 must be a finite number >= 0, got inf",
        ("vectorize", mask, "-o", str(tmp_path / "b.gpkg"), "--min-blob-m2", "1e308"): None,  # finite: the halo is capped
        ("predict", str(sample_scene()), "-o", str(tmp_path / "c.gpkg"), "--gap-m", "inf", "--device", "cpu"): "gap_m must be a finite number >= 0, got inf",
        ("vectorize", mask, "-o", str(tmp_path / "d.gpkg"), "--graph", "--graph-snap-m", "inf"): "--graph-snap-m must be a finite distance >= 0 in metres",
        ("evaluate", mask, mask, "--graph-snap-m", "inf"): "--graph-snap-m must be a finite distance >= 0 in metres",
        ("evaluate", mask, mask, "--apls-snap-m", "inf"): "APLS snap_m must be a finite number > 0 metres, got inf",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(cli, list(args))
        if message is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 2, (args, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("geoccseg: error: ") and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gpkg"]
    for make in (lambda: VectorizeParams(spur_m=float("inf")), lambda: TopoParams(radius_m=float("inf")),
                 lambda: APLSParams(min_path_m=float("inf")), lambda: road_graph(gpd.GeoSeries([LineString([(0, 0), (10, 0)])], crs="EPSG:32611"), snap_m=float("inf"))):
        with pytest.raises(GeoccsegError, match="finite"):
            make()


def test_the_snapping_distance_reaches_the_graph_from_predict_and_needs_graph(vegas: Path, tmp_path: Path) -> None:
    """``predict --graph`` had no --graph-snap-m (always the default), and ``vectorize`` ignored it silently without --graph."""
    result = CliRunner().invoke(cli, ["vectorize", str(vegas / "vegas_pan_roadmask.tif"), "-o", str(tmp_path / "r.gpkg"), "--graph-snap-m", "5"])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "geoccseg: error: --graph-snap-m only applies to the road graph; add --graph or leave it out"]
    counts = {}
    for snap in ("0", "30"):
        out = tmp_path / f"snap{snap}.gpkg"
        result = CliRunner().invoke(cli, ["predict", str(sample_scene()), "-o", str(out), "--graph", "--graph-snap-m", snap, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        counts[snap] = len(read_layers(out, "road")[0])
    assert counts["30"] < counts["0"]  # more ends joined: fewer nodes
