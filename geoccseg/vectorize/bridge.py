"""Gap bridging: join line ends across short breaks in the mask (trees, shadows, bridges).

Distances are between road *surfaces*: the distance between two skeleton pixels less the
half-widths of the mask at both, i.e. the break a person sees in the mask. Two kinds of bridge:

- end to end: both ends point at each other, i.e. the bridge runs within ``max_angle_deg`` of
  the direction of each end; pairs are taken shortest gap first, each end used once;
- end onto a line: a remaining end whose direction hits another line's pixels within the gap
  (a side road that stops short of the main road).

A bridge is a straight, 8-connected run of new skeleton pixels (one per row or column step)
whose width and probability are interpolated between its two ends.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from geoccseg.vectorize.graph import SkeletonGraph, owners, pixel_keys
from geoccseg.vectorize.skeleton import SkeletonPixels

_LOOK_BACK_PX = 8  # vertices back from an end that give its direction
_CHUNK = 4096  # ends searched at once, to bound the memory of candidate pairs
WIDE_FACTOR = 4.0
"""Half-widths are counted up to this many times the 95th percentile of the skeleton's (at least
the gap) in the search for bridges (:func:`bridge_half_widths`)."""
MAX_HALF_M = 25.0
"""And never above this (a road 50 m wide; at least the gap): where wide regions are more than a
twentieth of the skeleton, the percentile is theirs."""


def bridge_half_widths(width_m: np.ndarray, gap_m: float) -> np.ndarray:
    """The half-widths (metres) of the skeleton pixels that bridging measures gaps with: the mask's
    half-width at each pixel, but at most :data:`WIDE_FACTOR` times the 95th percentile over the
    skeleton (or ``gap_m``, if larger). The search radius grows with the largest half-width, and
    the medial axis of one wide region (a car park, an apron, a background band 300 m across)
    made every end of the scene search 300 m around it: hundreds of millions of candidate pairs
    at 0.3 m, killed for memory. No road is that much wider than the roads around it; a line end
    beside such a region stays free rather than being bridged to its middle."""
    half = np.nan_to_num(np.asarray(width_m, dtype=np.float64) / 2)  # NaN: no edge in sight
    if half.size == 0:
        return half
    return np.minimum(half, max(gap_m, min(WIDE_FACTOR * float(np.percentile(half, 95)), MAX_HALF_M)))


def bridge_pixels(graph: SkeletonGraph, gap_m: float, max_angle_deg: float = 45.0) -> SkeletonPixels:
    """New skeleton pixels that bridge the gaps of a graph.

    Args:
        graph: the pruned skeleton graph.
        gap_m: largest gap between road surfaces to bridge (metres).
        max_angle_deg: largest angle between a bridge and the direction of an end it leaves.

    Returns:
        The bridge pixels, none of which is already in ``graph.pixels`` (possibly none).
    """
    pixels = graph.pixels
    x_m, y_m = graph.pixel_size_m
    ends = _line_ends(graph)
    if gap_m <= 0 or len(ends["pixel"]) == 0:
        return pixels.subset(np.zeros(0, dtype=np.int64))
    cos_max = math.cos(math.radians(max_angle_deg))
    pixel_m = np.stack([pixels.rows * y_m, pixels.cols * x_m], axis=1).astype(np.float64)
    half_m = bridge_half_widths(pixels.width_m, gap_m)
    end_px, end_dir = ends["pixel"], ends["direction"]
    end_m, end_half = pixel_m[end_px], half_m[end_px]

    bridges: list[tuple[int, int]] = []
    used = np.zeros(len(end_px), dtype=bool)
    pairs = cKDTree(end_m).query_pairs(gap_m + 2 * end_half.max(), output_type="ndarray")
    if len(pairs):
        a, b = pairs.T
        vec = end_m[b] - end_m[a]
        dist = np.linalg.norm(vec, axis=1)
        gap = dist - end_half[a] - end_half[b]
        aligned = (_cos(end_dir[a], vec, dist) >= cos_max) & (_cos(end_dir[b], -vec, dist) >= cos_max)
        candidates = np.flatnonzero((gap <= gap_m) & aligned)
        for k in candidates[np.argsort(gap[candidates], kind="stable")]:
            if not (used[a[k]] or used[b[k]]):
                used[a[k]] = used[b[k]] = True
                bridges.append((end_px[a[k]], end_px[b[k]]))

    end_of_pixel = np.full(len(pixels), -1, dtype=np.int64)
    end_of_pixel[end_px] = np.arange(len(end_px))
    end, target = _onto_lines(graph, ends, np.flatnonzero(~used), pixel_m, half_m, gap_m, cos_max)
    for e, t in zip(end, target):
        if not used[e]:
            bridges.append((end_px[e], t))
            used[e] = True
            if end_of_pixel[t] >= 0:  # landed on a free end: that end is joined too
                used[end_of_pixel[t]] = True
    return _draw(pixels, bridges)


def _onto_lines(
    graph: SkeletonGraph,
    ends: dict[str, np.ndarray],
    free: np.ndarray,
    pixel_m: np.ndarray,
    half_m: np.ndarray,
    gap_m: float,
    cos_max: float,
) -> tuple[np.ndarray, np.ndarray]:
    """For each free end, the pixel of another line that closes its gap best, if any.

    Returns:
        (ends, target pixels), ends in increasing order, at most one target each.
    """
    found_end, found_target, found_gap = [], [], []
    pixel_tree = cKDTree(pixel_m)
    reach = gap_m + 2 * float(half_m.max())
    interior = graph.node_of_pixel[graph.branch_pixels] < 0
    branch_of_pixel = np.full(len(pixel_m), -1, dtype=np.int64)
    branch_of_pixel[graph.branch_pixels[interior]] = owners(graph.branch_ptr)[interior]
    for chunk in np.array_split(free, max(1, len(free) // _CHUNK)):
        if len(chunk) == 0:
            continue
        near = cKDTree(pixel_m[ends["pixel"][chunk]]).sparse_distance_matrix(pixel_tree, reach, output_type="ndarray")
        e, p = chunk[near["i"]], near["j"]
        own = ends["branch"][e]
        other_node = graph.branch_nodes[own]
        on_own_line = (branch_of_pixel[p] == own) | (graph.node_of_pixel[p] == other_node[:, 0]) | (
            graph.node_of_pixel[p] == other_node[:, 1]
        )
        vec = pixel_m[p] - pixel_m[ends["pixel"][e]]
        gap = near["v"] - half_m[ends["pixel"][e]] - half_m[p]
        fits = ~on_own_line & (gap <= gap_m) & (_cos(ends["direction"][e], vec, near["v"]) >= cos_max)
        found_end.append(e[fits])
        found_target.append(p[fits])
        found_gap.append(gap[fits])
    e = np.concatenate(found_end) if found_end else np.zeros(0, dtype=np.int64)
    if len(e) == 0:
        return e, e
    p, gap = np.concatenate(found_target), np.concatenate(found_gap)
    order = np.lexsort((p, gap, e))  # per end, smallest gap first
    best = order[np.concatenate([[True], e[order][1:] != e[order][:-1]])]
    return e[best], p[best]


def _line_ends(graph: SkeletonGraph) -> dict[str, np.ndarray]:
    """End nodes (degree 1): their pixel, branch and outward direction (metres)."""
    branch, side = np.nonzero(graph.end_degree == 1)
    at_start = side == 0
    first_pixel = graph.branch_pixels[graph.branch_ptr[branch]]
    last_pixel = graph.branch_pixels[graph.branch_ptr[branch + 1] - 1]
    pixel = np.where(at_start, first_pixel, last_pixel)
    first, last = graph.point_ptr[branch], graph.point_ptr[branch + 1] - 1
    tip = np.where(at_start, first, last)
    back = np.where(at_start, np.minimum(first + _LOOK_BACK_PX, last), np.maximum(last - _LOOK_BACK_PX, first))
    x_m, y_m = graph.pixel_size_m
    direction = (graph.point_rc[tip] - graph.point_rc[back]) * (y_m, x_m)
    return {"pixel": pixel, "branch": branch, "direction": direction}


def _cos(direction: np.ndarray, vec: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Cosine of the angle between direction vectors and bridge vectors of length ``dist``."""
    norm = np.linalg.norm(direction, axis=1) * dist
    return np.einsum("ij,ij->i", direction, vec) / np.where(norm > 0, norm, np.inf)


def _draw(pixels: SkeletonPixels, bridges: list[tuple[int, int]]) -> SkeletonPixels:
    """Rasterise straight 8-connected runs between pixel pairs, with interpolated attributes."""
    if not bridges:
        return pixels.subset(np.zeros(0, dtype=np.int64))
    p, q = np.array(bridges, dtype=np.int64).T
    dr, dc = pixels.rows[q] - pixels.rows[p], pixels.cols[q] - pixels.cols[p]
    steps = np.maximum(np.abs(dr), np.abs(dc))
    inner = np.maximum(steps - 1, 0)  # pixels strictly between the two ends
    bridge = np.repeat(np.arange(len(p)), inner)
    t = (np.arange(inner.sum()) - (np.cumsum(inner) - inner)[bridge] + 1) / steps[bridge]
    rows = pixels.rows[p][bridge] + np.rint(t * dr[bridge]).astype(np.int64)
    cols = pixels.cols[p][bridge] + np.rint(t * dc[bridge]).astype(np.int64)
    p, q = p[bridge], q[bridge]
    keys = pixel_keys(rows, cols)
    _, first = np.unique(keys, return_index=True)
    new = first[~np.isin(keys[first], pixel_keys(pixels.rows, pixels.cols))]
    return SkeletonPixels(
        rows=rows[new],
        cols=cols[new],
        width_m=((1 - t) * pixels.width_m[p] + t * pixels.width_m[q])[new].astype(np.float32),
        prob=((1 - t) * pixels.prob[p] + t * pixels.prob[q])[new].astype(np.float32),
        seeded=np.ones(len(new), dtype=bool),
    )
