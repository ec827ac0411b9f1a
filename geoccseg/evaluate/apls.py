"""APLS, the Average Path Length Similarity of two road graphs (SpaceNet; Van Etten et al. 2018).

Following the definition of the SpaceNet road challenge and its reference code (CosmiQ ``apls``,
``apls/apls.py``), re-implemented here on the project's graphs (:mod:`geoccseg.vectorize.network`):

1. both graphs are measured in one metric CRS (the truth's when in metres, else its UTM zone);
2. *control points* of a graph A are its nodes plus points inserted along its edges: none on an
   edge shorter than 0.75 x ``spacing_m``, the midpoint of one up to ``spacing_m``, else evenly
   spaced points about ``spacing_m`` apart (the reference's ``linestring_delta`` = 50 m, inserted
   on straight edges too as its command line does);
3. each control point of A is snapped onto graph B: to the nearest point of B's nearest edge when
   that lies within ``snap_m`` (reference ``max_snap_dist`` = 4 m), to an end node of that edge when
   the point falls within 5 cm of it; control points farther away have no counterpart;
4. for every pair (a, b) of control points joined in A by a path of length L(a, b) >= ``min_path_m``,
   the path difference is ``min(1, |L(a, b) - L(a', b')| / L(a, b))`` with L(a', b') the shortest
   path between their counterparts in B; a missing counterpart or a missing path counts 1;
5. ``C(A → B) = 1 - mean difference``, computed both ways: truth control points snapped onto the
   prediction (missed roads and broken connections cost) and prediction control points onto the
   truth (false roads and false shortcuts cost);
6. APLS is the harmonic mean of the two, 0 when either is 0.

Differences from the reference code, each on purpose: a control point that snaps onto a node
another control point already took keeps it (the reference renames the node, and the earlier point
loses its counterpart); graphs with more than ``max_points`` control points use a fixed-seed sample
of them (the reference keeps 500 random nodes of graphs over 500 nodes and drops the midpoints);
pairs closer than ``min_path_m`` are skipped whether or not their start has a counterpart. When both
graphs are empty APLS is 1 (nothing to find, nothing false, as elsewhere in
:mod:`geoccseg.evaluate`); when only one is, 0. Over a dataset, APLS is the mean of the images'
values, as SpaceNet reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely
from pyproj import CRS
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from geoccseg.errors import GeoccsegError
from geoccseg.io.units import metric_crs
from geoccseg.vectorize.network import graph_to_crs

NODE_TOLERANCE_M = 0.05
"""A control point snapped within this distance (metres) of an edge's end node takes that node."""

_SAMPLE_SEED = 0


@dataclass(frozen=True)
class APLSParams:
    """Settings of APLS, lengths in metres (defaults: the SpaceNet reference's command line).

    Attributes:
        snap_m: control points farther than this from the other graph have no counterpart.
        spacing_m: spacing of the control points inserted along edges.
        min_path_m: pairs of control points closer than this along the graph are not scored.
        max_points: largest number of control points of a graph; more are sampled (fixed seed).
    """

    snap_m: float = 4.0
    spacing_m: float = 50.0
    min_path_m: float = 0.001
    max_points: int = 1000

    def __post_init__(self) -> None:
        for name in ("snap_m", "spacing_m"):
            if not 0 < getattr(self, name) < math.inf:
                raise GeoccsegError(f"APLS {name} must be a finite number > 0 metres, got {getattr(self, name)}")
        if not 0 <= self.min_path_m < math.inf:
            raise GeoccsegError(f"APLS min_path_m must be a finite number >= 0 metres, got {self.min_path_m}")
        if self.max_points < 2:
            raise GeoccsegError(f"APLS max_points must be at least 2, got {self.max_points}")


@dataclass(frozen=True)
class APLSResult:
    """APLS of one (truth, prediction) pair, all in [0, 1].

    Attributes:
        apls: harmonic mean of the two directions.
        truth_onto_pred: C(truth → prediction), truth control points snapped onto the prediction.
        pred_onto_truth: C(prediction → truth).
        truth_paths: number of truth paths scored.
        pred_paths: number of prediction paths scored.
    """

    apls: float
    truth_onto_pred: float
    pred_onto_truth: float
    truth_paths: int = 0
    pred_paths: int = 0


@dataclass(frozen=True)
class Network:
    """A road graph as flat arrays in a metric CRS, the form both graph metrics work on.

    Attributes:
        xy: (N, 2) node coordinates (metres).
        u, v: (E,) end nodes of each edge (rows of ``xy``).
        geoms: (E,) LineStrings in metres, each running from node ``u`` to node ``v``.
        length: (E,) length of each geometry (metres).
    """

    xy: np.ndarray
    u: np.ndarray
    v: np.ndarray
    geoms: np.ndarray
    length: np.ndarray

    @classmethod
    def from_graph(cls, graph: nx.MultiGraph, crs: CRS) -> Network:
        """The network of ``graph`` in ``crs`` (a CRS in metres)."""
        graph = graph_to_crs(graph, crs)
        nodes = sorted(graph.nodes)
        index = {n: i for i, n in enumerate(nodes)}
        xy = np.array([(graph.nodes[n]["x"], graph.nodes[n]["y"]) for n in nodes], dtype=np.float64).reshape(-1, 2)
        edges = [(index[a], index[b], data["geometry"]) for a, b, data in graph.edges(data=True)]
        u = np.array([e[0] for e in edges], dtype=np.int64)
        v = np.array([e[1] for e in edges], dtype=np.int64)
        geoms = np.array([e[2] for e in edges], dtype=object)
        if len(edges):  # orient each geometry from u to v
            first = shapely.get_coordinates(shapely.get_point(geoms, 0))
            backwards = np.hypot(*(first - xy[v]).T) < np.hypot(*(first - xy[u]).T)
            geoms[backwards] = shapely.reverse(geoms[backwards])
        return cls(xy=xy, u=u, v=v, geoms=geoms, length=shapely.length(geoms) if len(edges) else np.zeros(0))

    @property
    def empty(self) -> bool:
        """True when the network has no edge."""
        return len(self.u) == 0


def adjacency(u: np.ndarray, v: np.ndarray, length: np.ndarray, n: int) -> csr_matrix:
    """Symmetric (n, n) matrix of edges (u, v, length in metres), the shortest of parallel ones; no self-loops."""
    keep = u != v
    u, v, length = u[keep], v[keep], np.maximum(length[keep], 1e-9)  # a stored 0 would read as no edge
    a, b = np.minimum(u, v), np.maximum(u, v)
    order = np.lexsort((length, b, a))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])
    a, b, length = a[order][first], b[order][first], length[order][first]
    return csr_matrix((np.concatenate([length, length]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n))


def common_metric_crs(truth: nx.MultiGraph, pred: nx.MultiGraph) -> CRS:
    """The metric CRS both graphs are compared in: the truth's (the prediction's when the truth is empty)."""
    graph = truth if truth.number_of_nodes() else pred
    points = shapely.points([(d["x"], d["y"]) for _, d in graph.nodes(data=True)] or [(0.0, 0.0)])
    return metric_crs(gpd.GeoSeries(points, crs=graph.graph["crs"]))


def apls_score(truth: nx.MultiGraph, pred: nx.MultiGraph, params: APLSParams | None = None) -> APLSResult:
    """APLS of a predicted road graph against the true one.

    Args:
        truth: the true road graph (:func:`geoccseg.vectorize.network.road_graph`), with a CRS.
        pred: the predicted road graph, in any CRS.
        params: settings (metres); None for the defaults.

    Returns:
        APLS and its two directions.
    """
    params = params or APLSParams()
    crs = common_metric_crs(truth, pred)
    t, p = Network.from_graph(truth, crs), Network.from_graph(pred, crs)
    if t.empty and p.empty:
        return APLSResult(1.0, 1.0, 1.0)
    if t.empty or p.empty:
        return APLSResult(0.0, 0.0, 0.0)
    c_tp, n_tp = one_way(t, p, params)
    c_pt, n_pt = one_way(p, t, params)
    total = 2 * c_tp * c_pt / (c_tp + c_pt) if c_tp > 0 and c_pt > 0 else 0.0
    return APLSResult(float(total), float(c_tp), float(c_pt), n_tp, n_pt)


def one_way(a: Network, b: Network, params: APLSParams) -> tuple[float, int]:
    """C(A → B): control points of A snapped onto B, path lengths compared.

    Returns:
        (1 - mean path difference, number of paths scored); (0, 0) when A has no path to score.
    """
    n_cp, cp_u, cp_v, cp_len, cp_xy = _with_control_points(a, params.spacing_m)
    points = np.arange(n_cp)
    if n_cp > params.max_points:
        points = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(n_cp, params.max_points, replace=False))
    dist_a = _distances(adjacency(cp_u, cp_v, cp_len, n_cp), points, points)

    n_b, b_u, b_v, b_len, counterpart = _snap_into(b, cp_xy[points], params.snap_m)
    mapped = np.unique(counterpart[counterpart >= 0])
    dist_b = np.full((len(points), len(points)), np.inf)
    if len(mapped):
        has = np.flatnonzero(counterpart >= 0)
        rows = _distances(adjacency(b_u, b_v, b_len, n_b), mapped, counterpart[has])
        row_of = np.full(n_b, -1, dtype=np.int64)
        row_of[mapped] = np.arange(len(mapped))
        dist_b[np.ix_(has, has)] = rows[row_of[counterpart[has]]]

    i, j = np.triu_indices(len(points), k=1)  # undirected: each pair once (the reference scores both orders, same mean)
    len_a, len_b = dist_a[i, j], dist_b[i, j]
    scored = np.isfinite(len_a) & (len_a >= params.min_path_m) & (len_a > 0)
    if not scored.any():
        return 0.0, 0
    len_a, len_b = len_a[scored], len_b[scored]
    diff = np.where(np.isfinite(len_b), np.minimum(1.0, np.abs(len_a - len_b) / len_a), 1.0)
    return float(1.0 - diff.mean()), int(scored.sum())


def _distances(graph, sources: np.ndarray, targets: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Shortest path lengths (len(sources), len(targets)) on a sparse graph, ``chunk`` sources at a
    time: Dijkstra's full rows (every node of the graph) never exist for more than ``chunk``
    sources, so memory follows the sample, not the size of the network."""
    out = np.empty((len(sources), len(targets)))
    for start in range(0, len(sources), chunk):
        out[start:start + chunk] = dijkstra(graph, directed=False, indices=sources[start:start + chunk])[:, targets]
    return out


def _with_control_points(a: Network, spacing_m: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A's nodes plus points along its edges, as a graph of edge pieces.

    Returns:
        Number of control points, pieces (u, v, length in metres) and (n, 2) control point
        coordinates (A's nodes first, in order).
    """
    offsets = [_spaced(length, spacing_m) for length in a.length]
    count = np.array([len(o) for o in offsets], dtype=np.int64)
    n_nodes = len(a.xy)
    first_new = n_nodes + np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    us, vs, lengths = [], [], []
    for e, off in enumerate(offsets):
        chain = np.concatenate([[a.u[e]], first_new[e] + np.arange(len(off)), [a.v[e]]])
        at = np.concatenate([[0.0], off, [a.length[e]]])
        us.append(chain[:-1])
        vs.append(chain[1:])
        lengths.append(np.diff(at))
    inserted = [shapely.line_interpolate_point(a.geoms[e], off) for e, off in enumerate(offsets) if len(off)]
    new_xy = shapely.get_coordinates(np.concatenate(inserted)) if inserted else np.zeros((0, 2))
    return (
        n_nodes + int(count.sum()),
        np.concatenate(us),
        np.concatenate(vs),
        np.concatenate(lengths),
        np.concatenate([a.xy, new_xy]),
    )


def _spaced(length_m: float, spacing_m: float) -> np.ndarray:
    """Offsets (metres) of the control points inserted on an edge of ``length_m``, as the reference does."""
    if length_m < 0.75 * spacing_m:
        return np.zeros(0)
    if length_m <= spacing_m:
        return np.array([0.5 * length_m])
    n_points = len(np.arange(0.0, length_m, spacing_m)) + 1
    return np.linspace(0.0, length_m, n_points)[1:-1]


def _snap_into(
    b: Network, xy: np.ndarray, snap_m: float
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Insert points into B where they snap (within ``snap_m`` of an edge).

    Returns:
        Number of nodes of the new graph, its edges (u, v, length in metres), and the node of each
        point (-1 where it has no counterpart).
    """
    n = len(b.xy)
    counterpart = np.full(len(xy), -1, dtype=np.int64)
    point, edge = shapely.STRtree(b.geoms).query_nearest(
        shapely.points(xy), max_distance=snap_m, all_matches=False
    )
    along = shapely.line_locate_point(b.geoms[edge], shapely.points(xy[point]))
    at_u = along <= NODE_TOLERANCE_M
    at_v = ~at_u & (b.length[edge] - along <= NODE_TOLERANCE_M)
    counterpart[point[at_u]] = b.u[edge[at_u]]
    counterpart[point[at_v]] = b.v[edge[at_v]]
    inner = ~(at_u | at_v)

    split = np.isin(np.arange(len(b.u)), edge[inner])
    us, vs, lengths = [b.u[~split]], [b.v[~split]], [b.length[~split]]
    for e in np.unique(edge[inner]):
        on = np.flatnonzero(inner & (edge == e))
        offsets, new = np.unique(along[on], return_inverse=True)  # points at the same place share a node
        counterpart[point[on]] = n + new.ravel()
        chain = np.concatenate([[b.u[e]], n + np.arange(len(offsets)), [b.v[e]]])
        at = np.concatenate([[0.0], offsets, [b.length[e]]])
        us.append(chain[:-1])
        vs.append(chain[1:])
        lengths.append(np.diff(at))
        n += len(offsets)
    return n, np.concatenate(us), np.concatenate(vs), np.concatenate(lengths), counterpart
