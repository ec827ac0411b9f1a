"""Road networks: polylines → a topological graph of junctions, ends and the roads between them.

The vectoriser writes one LineString per branch between junctions and ends; routing, connectivity
and the APLS / TOPO metrics need the graph those lines form. :func:`road_graph` builds it from any
lines (the vectoriser's, or truth centrelines from another source):

1. lines are exploded into parts and measured in a metric CRS (their own when in metres, else the
   local UTM zone);
2. a free line end within ``snap_m`` of other line ends is moved with them to their mean point; one
   within ``snap_m`` of another line is moved onto it, and a vertex is added there (digitising and
   rounding gaps; the real gaps of a probability map are bridged earlier, by the vectoriser's
   :mod:`~geoccseg.vectorize.bridge`, within ``gap_m`` and with its alignment rules, so the graph
   adds no second bridging rule);
3. the lines are noded (split wherever they meet or cross; duplicates dissolved) and merged again
   through points where exactly two pieces meet, so that every edge runs between two nodes of
   degree other than 2 (a ring without junction keeps one node and is a self-loop).

The vectoriser builds its skeleton graph once over the whole scene, whatever its block size, so
lines and hence the road graph run through block borders without breaks.

The result is a :class:`networkx.MultiGraph` (two roads may join the same two junctions):

- graph: ``crs`` (a :class:`pyproj.CRS`);
- nodes (ids 0..N-1): ``x``, ``y`` (CRS units), ``degree`` (edge ends at the node; a self-loop
  counts twice);
- edges (key = ``edge_id``, 0..E-1): ``geometry`` (LineString from node ``min(u, v)`` to node
  ``max(u, v)``, its end vertices exactly the node coordinates), ``length_m`` (metres),
  ``width_m`` and ``probability`` (length-weighted means of the lines' columns; NaN where the
  lines have none, e.g. truth centrelines).

:func:`graph_frames` turns it into ``<class>_nodes`` and ``<class>_edges`` layers for a
GeoPackage, :func:`write_graph` writes them (atomically, through
:func:`geoccseg.io.vector_write.write_vectors`) and :func:`read_graph` reads them back.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from geoccseg.errors import GeoccsegError
from geoccseg.io.units import metric_crs
from geoccseg.io.vector_write import write_vectors

DEFAULT_SNAP_M = 1.0
"""Line ends closer than this (metres) to other ends or lines are joined to them."""

NODE_FIELDS = ("node_id", "degree")
EDGE_FIELDS = ("edge_id", "u", "v", "length_m", "width_m", "probability")


def road_graph(
    lines: gpd.GeoDataFrame | gpd.GeoSeries, *, snap_m: float = DEFAULT_SNAP_M, crs: CRS | str | None = None
) -> nx.MultiGraph:
    """Build the topological road graph of a set of lines.

    Args:
        lines: (Multi)LineStrings with a CRS; optional columns ``width_m`` (metres) and
            ``probability`` (0-1), as written by the vectoriser.
        snap_m: free line ends within this distance (metres) of other ends or of another line
            are joined to them; 0 joins only lines that touch exactly.
        crs: CRS of the graph's coordinates; None keeps that of ``lines``.

    Returns:
        The graph (see the module docstring for its attributes); empty for no lines.

    Raises:
        GeoccsegError: lines without a CRS, geometries that are not lines, a negative ``snap_m``.
    """
    check_snap_m(snap_m)
    frame = lines if isinstance(lines, gpd.GeoDataFrame) else gpd.GeoDataFrame(geometry=gpd.GeoSeries(lines))
    if frame.crs is None:
        raise GeoccsegError("the lines have no CRS, so the graph's lengths in metres are unknown; set a CRS on them")
    out_crs = CRS.from_user_input(crs if crs is not None else frame.crs)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    other = sorted(set(frame.geom_type) - {"LineString", "MultiLineString"})
    if other:
        raise GeoccsegError(f"a road graph is built from (multi)line strings, got {', '.join(other)}")
    parts = frame.explode(index_parts=False, ignore_index=True)
    if len(parts) == 0:
        return _empty_graph(out_crs)
    metric = metric_crs(parts.geometry)
    geoms = shapely.force_2d(parts.geometry.to_crs(metric).values)
    attrs = np.stack([_column(parts, "width_m"), _column(parts, "probability")], axis=1)
    keep = shapely.length(geoms) > 0
    geoms, attrs = geoms[keep], attrs[keep]
    if len(geoms) == 0:
        return _empty_graph(out_crs)
    geoms = _snap_ends(geoms, snap_m)
    pieces = np.asarray(shapely.get_parts(shapely.node(shapely.multilinestrings(geoms))))
    pieces = pieces[shapely.length(pieces) > 0]
    edges = np.asarray(shapely.get_parts(shapely.line_merge(shapely.multilinestrings(pieces))))
    edge_attrs = _edge_attributes(pieces, edges, geoms, attrs)
    edges_out = gpd.GeoSeries(edges, crs=metric).to_crs(out_crs).values
    return _assemble(edges, edges_out, shapely.length(edges), edge_attrs, out_crs)


def graph_to_crs(graph: nx.MultiGraph, crs: CRS | str) -> nx.MultiGraph:
    """A copy of ``graph`` with its coordinates in ``crs`` (lengths in metres are kept).

    Edge geometries keep their end vertices exactly on their nodes.
    """
    crs = CRS.from_user_input(crs)
    if CRS.from_user_input(graph.graph["crs"]) == crs:
        return graph.copy()
    nodes = sorted(graph.nodes)
    points = gpd.GeoSeries(shapely.points(_node_xy(graph, nodes)), crs=graph.graph["crs"])
    xy = shapely.get_coordinates(points.to_crs(crs).values)
    out = graph.copy()
    out.graph["crs"] = crs
    for n, (x, y) in zip(nodes, xy):
        out.nodes[n]["x"], out.nodes[n]["y"] = float(x), float(y)
    keys = list(out.edges(keys=True))
    geoms = gpd.GeoSeries([out.edges[k]["geometry"] for k in keys], crs=graph.graph["crs"]).to_crs(crs).values
    for (u, v, key), geom in zip(keys, geoms):
        out.edges[u, v, key]["geometry"] = _pin_ends(geom, out.nodes[min(u, v)], out.nodes[max(u, v)])
    return out


def graph_frames(graph: nx.MultiGraph, class_name: str) -> dict[str, gpd.GeoDataFrame]:
    """The node and edge layers of a graph, named ``<class_name>_nodes`` and ``<class_name>_edges``.

    Returns:
        Points with ``node_id`` and ``degree``; LineStrings with ``edge_id``, ``u``, ``v``,
        ``length_m``, ``width_m`` and ``probability``; both in the graph's CRS.
    """
    crs = graph.graph["crs"]
    nodes = sorted(graph.nodes)
    node_frame = gpd.GeoDataFrame(
        {"node_id": np.array(nodes, dtype=np.int64), "degree": np.array([graph.degree(n) for n in nodes], dtype=np.int64)},
        geometry=gpd.GeoSeries(shapely.points(_node_xy(graph, nodes)), crs=crs),
        crs=crs,
    )
    node_frame.attrs["geometry_type"] = "Point"
    rows = sorted((data["edge_id"], min(u, v), max(u, v), data) for u, v, data in graph.edges(data=True))
    edge_frame = gpd.GeoDataFrame(
        {
            "edge_id": np.array([r[0] for r in rows], dtype=np.int64),
            "u": np.array([r[1] for r in rows], dtype=np.int64),
            "v": np.array([r[2] for r in rows], dtype=np.int64),
            "length_m": np.array([r[3]["length_m"] for r in rows], dtype=np.float64),
            "width_m": np.array([r[3]["width_m"] for r in rows], dtype=np.float64),
            "probability": np.array([r[3]["probability"] for r in rows], dtype=np.float64),
        },
        geometry=gpd.GeoSeries([r[3]["geometry"] for r in rows], crs=crs),
        crs=crs,
    )
    edge_frame.attrs["geometry_type"] = "LineString"
    return {f"{class_name}_nodes": node_frame, f"{class_name}_edges": edge_frame}


def check_snap_m(snap_m: float, name: str = "snap_m") -> None:
    """Refuse a snapping distance that is not a finite number of metres >= 0 (inf would join every
    line end into one point); ``name``: how the caller's user gave it, e.g. ``--graph-snap-m``."""
    if not 0 <= snap_m < math.inf:
        raise GeoccsegError(f"{name} must be a finite distance >= 0 in metres, e.g. {DEFAULT_SNAP_M:g}; got {snap_m}")


def with_graph_layers(layers: dict[str, gpd.GeoDataFrame], snap_m: float = DEFAULT_SNAP_M) -> dict[str, gpd.GeoDataFrame]:
    """The line layers of each class followed by the node and edge layers of its road graph.

    Args:
        layers: one GeoDataFrame of lines per class (e.g. from
            :func:`geoccseg.vectorize.vectorize_raster`).
        snap_m: see :func:`road_graph`.
    """
    out = dict(layers)
    for name, lines in layers.items():
        out.update(graph_frames(road_graph(lines, snap_m=snap_m), name))
    return out


def check_graph_output(path: str | os.PathLike) -> None:
    """Refuse a graph output that is not a GeoPackage (the only format here with several layers).

    Raises:
        GeoccsegError: the extension is not ``.gpkg``.
    """
    if Path(path).suffix.lower() != ".gpkg":
        raise GeoccsegError(f"--graph writes node and edge layers beside the lines, which needs a GeoPackage; name the output {Path(path).stem}.gpkg")


def write_graph(graph: nx.MultiGraph, path: str | os.PathLike, class_name: str, *, overwrite: bool = False) -> Path:
    """Write the node and edge layers of a graph to a new GeoPackage, atomically.

    Args:
        graph: a road graph (:func:`road_graph` or :func:`read_graph`).
        path: output ``.gpkg``.
        class_name: layer names are ``<class_name>_nodes`` and ``<class_name>_edges``.
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    check_graph_output(path)
    return write_vectors(graph_frames(graph, class_name), path, overwrite=overwrite)


def read_graph(path: str | os.PathLike, class_name: str) -> nx.MultiGraph:
    """Read a road graph from the ``<class_name>_nodes`` and ``<class_name>_edges`` layers of a GeoPackage.

    Each edge's line is turned to run from node ``min(u, v)`` to ``max(u, v)``, as the graph
    stores it, where it runs the other way (a layer edited in a GIS).

    Raises:
        GeoccsegError: a missing or unreadable file, missing layers or fields, edges that name
            nodes the node layer lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise GeoccsegError(f"{path} does not exist or is not a file; give the GeoPackage written with --graph")
    try:
        names = {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises several types for damaged files
        raise GeoccsegError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    frames = {}
    for kind, fields in (("nodes", NODE_FIELDS), ("edges", EDGE_FIELDS)):
        layer = f"{class_name}_{kind}"
        if layer not in names:
            raise GeoccsegError(f"{path} has no layer {layer} (layers: {', '.join(sorted(names))}); write it with --graph")
        frame = pyogrio.read_dataframe(path, layer=layer)
        missing = [f for f in fields if f not in frame.columns]
        if missing:
            raise GeoccsegError(f"layer {layer} of {path} lacks the field(s) {', '.join(missing)}")
        frames[kind] = frame
    nodes, edges = frames["nodes"], frames["edges"]
    if nodes.crs is None:
        raise GeoccsegError(f"{path} has no CRS; the road graph needs one")
    points = nodes.geometry.values
    if (shapely.is_missing(points) | shapely.is_empty(points) | (shapely.get_type_id(points) != shapely.GeometryType.POINT)).any():
        # get_coordinates skips them: every later node would take its neighbour's place
        raise GeoccsegError(f"layer {class_name}_nodes of {path} holds a node without a point geometry; give each node a point, "
                            "or delete the node with its edges")
    graph = _empty_graph(CRS.from_user_input(nodes.crs))
    xy = shapely.get_coordinates(points)
    for node_id, (x, y) in zip(nodes["node_id"].to_numpy(), xy):
        graph.add_node(int(node_id), x=float(x), y=float(y))
    unknown = sorted(set(edges["u"]).union(edges["v"]) - set(graph.nodes))
    if unknown:
        raise GeoccsegError(f"edges of {path} name nodes {unknown[:5]} that layer {class_name}_nodes lacks")
    for row in edges.itertuples(index=False):
        graph.add_edge(
            int(row.u), int(row.v), key=int(row.edge_id), edge_id=int(row.edge_id),
            geometry=_oriented(row.geometry, graph.nodes[min(row.u, row.v)], graph.nodes[max(row.u, row.v)]),
            length_m=float(row.length_m), width_m=_float(row.width_m), probability=_float(row.probability),
        )
    for n in graph.nodes:
        graph.nodes[n]["degree"] = graph.degree(n)
    return graph


def _empty_graph(crs: CRS) -> nx.MultiGraph:
    graph = nx.MultiGraph()
    graph.graph["crs"] = crs
    return graph


def _node_xy(graph: nx.MultiGraph, nodes: list[int]) -> np.ndarray:
    """(N, 2) coordinates of ``nodes``."""
    return np.array([(graph.nodes[n]["x"], graph.nodes[n]["y"]) for n in nodes], dtype=np.float64).reshape(-1, 2)


def _float(value: object) -> float:
    return float("nan") if value is None or pd.isna(value) else float(value)


def _column(frame: gpd.GeoDataFrame, name: str) -> np.ndarray:
    """(N,) float64 values of a column, NaN where it is missing."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)


def _snap_ends(geoms: np.ndarray, snap_m: float) -> np.ndarray:
    """Join free line ends to nearby ends and onto nearby lines: the ends within ``snap_m`` of each
    other (chained) go to their mean point, and that point, or a lone end, onto the nearest line
    within ``snap_m`` that none of them belongs to (a vertex added there). An end so moves by more
    than ``snap_m`` where a group's mean point is itself moved onto a line.

    Args:
        geoms: (L,) LineStrings in metres.
        snap_m: the distance within which ends join each other and lines (metres).

    Returns:
        (L,) LineStrings with moved ends and added vertices.
    """
    coords = [shapely.get_coordinates(g) for g in geoms]
    if snap_m <= 0:
        return geoms
    ends = np.array([c[k] for c in coords for k in (0, -1)])  # end e belongs to line e // 2
    pairs = cKDTree(ends).query_pairs(snap_m, output_type="ndarray")
    pairs = pairs[pairs[:, 0] // 2 != pairs[:, 1] // 2]  # the two ends of one short line stay apart
    n_ends = len(ends)
    _, cluster = connected_components(
        coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_ends, n_ends)), directed=False
    )
    size = np.bincount(cluster)
    mean = np.stack([np.bincount(cluster, ends[:, i]) / size for i in range(2)], axis=1)
    target = mean[cluster]  # each end to its cluster's mean point (itself when alone)

    # Each cluster's point onto the nearest line within snap_m that none of its ends belongs to: a
    # lone end onto the road it stops short of, and two side roads ending near a road together (their
    # mean point, generally off it) onto that road too; ends that already meet stay.
    members = [[] for _ in range(len(size))]
    for e, c in enumerate(cluster):
        members[c].append(e)
    tree = shapely.STRtree(geoms)
    points = shapely.points(mean)
    hit_cluster, hit_line = tree.query(points, predicate="dwithin", distance=snap_m)
    own = np.array([any(e // 2 == line for e in members[c]) for c, line in zip(hit_cluster, hit_line)], dtype=bool)
    meet = np.array([len(m) > 1 and np.ptp(ends[m], axis=0).max() == 0 for m in members], dtype=bool)
    keep = ~own & ~meet[hit_cluster]  # ends that already meet (a bend drawn as two lines) stay where they meet
    hit_cluster, hit_line = hit_cluster[keep], hit_line[keep]
    dist = shapely.distance(points[hit_cluster], geoms[hit_line])
    inserts: dict[int, list[tuple[float, np.ndarray]]] = {}
    handled = np.zeros(len(size), dtype=bool)
    for k in np.lexsort((hit_line, dist, hit_cluster)):  # each cluster's nearest line first
        c = hit_cluster[k]
        if handled[c]:
            continue
        handled[c] = True
        if dist[k] == 0:
            continue  # on its nearest line already (noding splits there): not pulled onto a farther one
        line = geoms[hit_line[k]]
        along = shapely.line_locate_point(line, points[c])
        point = shapely.get_coordinates(shapely.line_interpolate_point(line, along))[0]
        target[members[c]] = point
        inserts.setdefault(int(hit_line[k]), []).append((float(along), point))

    out = []
    for i, c in enumerate(coords):
        c = c.copy()
        for along, point in sorted(inserts.get(i, []), key=lambda item: item[0]):
            measure = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(c, axis=0).T))])
            at = int(np.clip(np.searchsorted(measure, along), 1, len(c) - 1))
            c = np.insert(c, at, point, axis=0)
        c[0], c[-1] = target[2 * i], target[2 * i + 1]
        out.append(shapely.linestrings(c))
    return np.array(out, dtype=object)


def _edge_attributes(pieces: np.ndarray, edges: np.ndarray, sources: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """(E, 2) length-weighted mean of the source lines' (width_m, probability) along each edge.

    Each noded piece takes the values of the source line nearest its midpoint, and belongs to the
    merged edge nearest its midpoint.
    """
    mid = shapely.line_interpolate_point(pieces, 0.5, normalized=True)
    source = shapely.STRtree(sources).query_nearest(mid, all_matches=False)[1]
    edge = shapely.STRtree(edges).query_nearest(mid, all_matches=False)[1]
    length = shapely.length(pieces)
    out = np.full((len(edges), 2), np.nan)
    for j in range(2):
        value = attrs[source, j]
        known = ~np.isnan(value)
        weight = np.bincount(edge[known], length[known], minlength=len(edges))
        total = np.bincount(edge[known], length[known] * value[known], minlength=len(edges))
        out[:, j] = np.where(weight > 0, total / np.where(weight > 0, weight, 1), np.nan)
    return out


def _assemble(
    edges_m: np.ndarray, edges_out: np.ndarray, length_m: np.ndarray, attrs: np.ndarray, crs: CRS
) -> nx.MultiGraph:
    """The MultiGraph of merged edges: nodes at their end points (exact coordinates, metric CRS)."""
    first = shapely.get_coordinates(shapely.get_point(edges_m, 0))
    last = shapely.get_coordinates(shapely.get_point(edges_m, -1))
    ends = np.concatenate([first, last])
    unique, node_of_end = np.unique(ends, axis=0, return_inverse=True)  # sorted by x, then y
    node_of_end = node_of_end.ravel()
    start, stop = node_of_end[: len(edges_m)], node_of_end[len(edges_m):]
    out_first = shapely.get_coordinates(shapely.get_point(edges_out, 0))
    out_last = shapely.get_coordinates(shapely.get_point(edges_out, -1))
    node_xy = np.empty((len(unique), 2))
    node_xy[start], node_xy[stop] = out_first, out_last  # a node has one metric point, hence one output point
    graph = _empty_graph(crs)
    for n, (x, y) in enumerate(node_xy):
        graph.add_node(n, x=float(x), y=float(y))
    u, v = np.minimum(start, stop), np.maximum(start, stop)
    order = np.lexsort((length_m, v, u))
    for edge_id, k in enumerate(order):
        geom = edges_out[k] if start[k] <= stop[k] else shapely.reverse(edges_out[k])
        graph.add_edge(
            int(u[k]), int(v[k]), key=edge_id, edge_id=edge_id,
            geometry=_pin_ends(geom, graph.nodes[int(u[k])], graph.nodes[int(v[k])]),
            length_m=float(length_m[k]), width_m=float(attrs[k, 0]), probability=float(attrs[k, 1]),
        )
    for n in graph.nodes:
        graph.nodes[n]["degree"] = graph.degree(n)
    return graph


def _oriented(geom: shapely.LineString, start: dict, end: dict) -> shapely.LineString:
    """The line running from node ``start`` to node ``end``: reversed where its first vertex lies
    nearer ``end`` (pinning its ends to the nodes would otherwise cross it over its whole length)."""
    coords = shapely.get_coordinates(geom)
    if len(coords) < 2:
        return geom
    a, b = (start["x"], start["y"]), (end["x"], end["y"])
    swapped = math.dist(coords[0], b) + math.dist(coords[-1], a) < math.dist(coords[0], a) + math.dist(coords[-1], b)
    return shapely.reverse(geom) if swapped else geom


def _pin_ends(geom: shapely.LineString, start: dict, end: dict) -> shapely.LineString:
    """The line with its first and last vertices set exactly to the coordinates of two nodes."""
    coords = shapely.get_coordinates(geom)
    coords[0], coords[-1] = (start["x"], start["y"]), (end["x"], end["y"])
    return shapely.linestrings(coords)
