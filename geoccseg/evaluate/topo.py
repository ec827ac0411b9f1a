"""TOPO precision, recall and F1 of a road graph: holes and marbles (Biagioni & Eriksson 2012).

As used for road graphs by He et al. (Sat2Graph, 2020) and the SpaceNet reference code (CosmiQ
``apls``, ``apls/topo_metric.py``, whose defaults are kept here), re-implemented on the project's
graphs (:mod:`geoccseg.vectorize.network`). For each *seed*, a node of the true graph:

1. *holes* are placed on the true graph at every ``interval_m`` of path distance from the seed
   (the seed itself included) along every path, out to ``radius_m``;
2. the prediction is entered at its point nearest the seed; if that is farther than ``hole_m``
   the seed's holes all count as false negatives;
3. *marbles* are placed the same way on the predicted graph from that point;
4. marbles fall into holes within ``hole_m``, one marble per hole, closest pairs first: matched
   marbles are true positives, the other marbles false positives, empty holes false negatives.

Counts are summed over seeds (and over images), then precision = tp / (tp + fp), recall = tp /
(tp + fn) and F1 their harmonic mean. Differences from the reference code, on purpose: sub-graphs
are explored by path distance from the seed (the published definition) rather than as the nodes
within a straight-line radius; the prediction is entered at its nearest point rather than its
nearest node (a road drawn through a missed junction still counts); marbles are matched closest
pair first rather than in node order; the seeds are all true nodes, or a fixed-seed sample of
``max_seeds`` of them, rather than a random draw with repeats. Both graphs empty: 1 for all three
(nothing to find, nothing false), as elsewhere in :mod:`geoccseg.evaluate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
import shapely
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.apls import Network, adjacency, common_metric_crs
from geoccseg.evaluate.pixel import Rates

_SAMPLE_SEED = 0
_SAME_POINT_M = 0.01  # points closer than this (metres) are one hole or marble


@dataclass(frozen=True)
class TopoParams:
    """Settings of TOPO, lengths in metres (defaults: the SpaceNet reference's command line).

    Attributes:
        radius_m: how far along the graph from each seed holes and marbles are placed.
        interval_m: path distance between holes (and between marbles).
        hole_m: a marble within this distance of a free hole fills it.
        max_seeds: largest number of seeds; more true nodes are sampled (fixed seed).
    """

    radius_m: float = 150.0
    interval_m: float = 30.0
    hole_m: float = 4.0
    max_seeds: int = 1000

    def __post_init__(self) -> None:
        for name in ("radius_m", "interval_m", "hole_m"):
            if not 0 < getattr(self, name) < math.inf:
                raise GeoccsegError(f"TOPO {name} must be a finite number > 0 metres, got {getattr(self, name)}")
        if self.max_seeds < 1:
            raise GeoccsegError(f"TOPO max_seeds must be at least 1, got {self.max_seeds}")


@dataclass
class TopoCounts(Rates):
    """Holes and marbles summed over seeds (and images); add images with ``+``.

    Attributes:
        tp: marbles in holes.
        fp: marbles outside every hole.
        fn: empty holes.
        empty: True when both graphs were empty (everywhere).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    empty: bool = True

    def __add__(self, other: TopoCounts) -> TopoCounts:
        return TopoCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.empty and other.empty)


def topo_counts(truth: nx.MultiGraph, pred: nx.MultiGraph, params: TopoParams | None = None) -> TopoCounts:
    """Holes and marbles of a predicted road graph against the true one.

    Args:
        truth: the true road graph (:func:`geoccseg.vectorize.network.road_graph`), with a CRS.
        pred: the predicted road graph, in any CRS.
        params: settings (metres); None for the defaults.
    """
    params = params or TopoParams()
    crs = common_metric_crs(truth, pred)
    t, p = Network.from_graph(truth, crs), Network.from_graph(pred, crs)
    counts = TopoCounts(empty=t.empty and p.empty)
    if t.empty:
        return counts
    seeds = np.unique(np.concatenate([t.u, t.v]))
    if len(seeds) > params.max_seeds:
        seeds = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(seeds, params.max_seeds, replace=False))
    t_adj = adjacency(t.u, t.v, t.length, len(t.xy))
    p_adj = adjacency(p.u, p.v, p.length, len(p.xy)) if not p.empty else None
    p_tree = shapely.STRtree(p.geoms) if not p.empty else None
    for seed in seeds:
        dist = dijkstra(t_adj, directed=False, indices=seed, limit=params.radius_m)
        near_seed = np.flatnonzero(np.minimum(dist[t.u], dist[t.v]) <= params.radius_m)
        holes = _points(t, [(e, 0.0, t.length[e], dist[t.u[e]], dist[t.v[e]]) for e in near_seed], params)
        marbles = np.zeros((0, 2))
        if p_tree is not None:
            start = shapely.points(t.xy[seed])
            near = p_tree.query_nearest(start, max_distance=params.hole_m, all_matches=False)
            if len(near):
                marbles = _points(p, _entered(p, p_adj, int(near[0]), start, params.radius_m), params)
        tp = _matches(holes, marbles, params.hole_m)
        counts = counts + TopoCounts(tp, len(marbles) - tp, len(holes) - tp, empty=False)
    return counts


def _entered(p: Network, p_adj, e: int, start: shapely.Point, radius_m: float) -> list[tuple]:
    """Stretches of P seen from its point on edge ``e`` nearest ``start``: (edge, from, to, d_from, d_to)."""
    x = float(shapely.line_locate_point(p.geoms[e], start))
    length = p.length[e]
    ends = dijkstra(p_adj, directed=False, indices=[p.u[e], p.v[e]], limit=radius_m + length)
    dist = np.minimum(x + ends[0], length - x + ends[1])
    reached = np.flatnonzero(np.minimum(dist[p.u], dist[p.v]) <= radius_m)
    stretches = [(k, 0.0, p.length[k], dist[p.u[k]], dist[p.v[k]]) for k in reached if k != e]
    return stretches + [(e, x, 0.0, 0.0, dist[p.u[e]]), (e, x, length, 0.0, dist[p.v[e]])]


def _points(net: Network, stretches: list[tuple], params: TopoParams) -> np.ndarray:
    """(K, 2) points at every ``interval_m`` of path distance, up to ``radius_m``, along stretches.

    A stretch (edge, a, b, d_a, d_b) runs along the edge's geometry from offset ``a`` to ``b``
    (metres), whose path distances from the source are ``d_a`` and ``d_b``; each of its points is
    reached from the nearer end, so the far side of a loop is not counted twice.
    """
    edges, offsets = [], []
    step, radius = params.interval_m, params.radius_m
    for edge, a, b, d_a, d_b in stretches:
        span = abs(b - a)
        sign = 1.0 if b >= a else -1.0
        peak = (d_a + d_b + span) / 2 if np.isfinite(d_b) else np.inf
        for d_near, origin, direction in ((d_a, a, sign), (d_b, b, -sign)):
            if not np.isfinite(d_near) or d_near > radius:
                continue
            top = min(radius, peak, d_near + span)
            k = np.arange(np.ceil(d_near / step - 1e-9), np.floor(top / step + 1e-9) + 1)
            along = k * step - d_near
            along = along[(along >= -1e-9) & (along <= span + 1e-9)]
            edges.extend([edge] * len(along))
            offsets.extend(origin + direction * np.clip(along, 0.0, span))
    if not edges:
        return np.zeros((0, 2))
    xy = shapely.get_coordinates(shapely.line_interpolate_point(net.geoms[np.array(edges)], np.array(offsets)))
    _, first = np.unique(np.round(xy / _SAME_POINT_M).astype(np.int64), axis=0, return_index=True)
    return xy[np.sort(first)]


def _matches(holes: np.ndarray, marbles: np.ndarray, hole_m: float) -> int:
    """Number of marbles in holes: pairs within ``hole_m``, closest first, each hole and marble once."""
    if len(holes) == 0 or len(marbles) == 0:
        return 0
    near = cKDTree(holes).sparse_distance_matrix(cKDTree(marbles), hole_m, output_type="ndarray")
    hole_used = np.zeros(len(holes), dtype=bool)
    marble_used = np.zeros(len(marbles), dtype=bool)
    matched = 0
    for k in np.argsort(near["v"], kind="stable"):
        h, m = near["i"][k], near["j"][k]
        if not (hole_used[h] or marble_used[m]):
            hole_used[h] = marble_used[m] = True
            matched += 1
    return matched
