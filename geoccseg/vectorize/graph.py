"""The skeleton graph: sparse skeleton pixels → nodes and branches, in one structure.

Like skan's ``csr.py``, the graph is held in flat arrays and everything (branch paths, lengths in
metres, node degrees, networks) is derived from the pixels with numpy and ``scipy.sparse.csgraph``,
without a Python loop over pixels:

1. pixels are 8-connected, except that a diagonal step is dropped where a 4-connected pixel
   already joins the two (the staircase corners of a thin skeleton are not junctions);
2. pixels with one neighbour are *end* nodes; 8-connected pixels with three or more neighbours
   are clustered into *junction* nodes;
3. the remaining pixels (two neighbours each) form paths between nodes, or rings with no node;
   they are ordered by one breadth-first traversal of all paths at once;
4. junction nodes joined by a branch shorter than the road width there are merged into one
   node (a wide crossing often thins into two close junctions).

A branch runs from a node to a node; its geometry starts and ends at the node centroids, so the
branches of a junction meet in one point. A ring is a branch without nodes, closed on itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

from geoccseg.vectorize.skeleton import SkeletonPixels

_SHIFT = np.int64(32)  # pixel key = row << 32 | column


@dataclass(frozen=True)
class SkeletonGraph:
    """Nodes and branches of a skeleton, all in flat arrays.

    Attributes:
        pixels: the N skeleton pixels the graph is built from (scene pixel coordinates).
        pixel_size_m: (x, y) size of one pixel in metres.
        pixel_network: (N,) int64 connected network of each pixel.
        node_of_pixel: (N,) int64 node of each pixel, -1 for pixels inside a branch.
        node_rc: (M, 2) float64 (row, column) of each node: the centroid of its pixels.
        node_degree: (M,) int64 number of branch ends at each node (a loop counts twice).
        branch_nodes: (B, 2) int64 (start, end) node of each branch; (-1, -1) for a ring.
        branch_ptr: (B + 1,) int64 offsets of each branch in ``branch_pixels``.
        branch_pixels: ordered pixels of all branches; a branch lists the pixel of its start
            node that it touches, its inner pixels and the pixel of its end node; a ring lists
            its pixels once.
        point_ptr: (B + 1,) int64 offsets of each branch in ``point_rc``.
        point_rc: (P, 2) float64 (row, column) vertices of all branches: start node centroid,
            inner pixels, end node centroid; a ring repeats its first pixel at the end.
        branch_length_m: (B,) float64 length of each branch's vertices in metres.
    """

    pixels: SkeletonPixels
    pixel_size_m: tuple[float, float]
    pixel_network: np.ndarray
    node_of_pixel: np.ndarray
    node_rc: np.ndarray
    node_degree: np.ndarray
    branch_nodes: np.ndarray
    branch_ptr: np.ndarray
    branch_pixels: np.ndarray
    point_ptr: np.ndarray
    point_rc: np.ndarray
    branch_length_m: np.ndarray

    @property
    def n_branches(self) -> int:
        """Number of branches B."""
        return len(self.branch_ptr) - 1

    @property
    def end_degree(self) -> np.ndarray:
        """(B, 2) degree of the start and end node of each branch; 0 for a ring."""
        degree = np.append(self.node_degree, 0)
        return degree[self.branch_nodes]  # node -1 (ring) reads the appended 0

    def network_length_m(self) -> np.ndarray:
        """(N,) total branch length (metres) of the network each pixel belongs to."""
        if self.n_branches == 0:
            return np.zeros(len(self.pixels))
        network = self.pixel_network[self.branch_pixels[self.branch_ptr[:-1]]]
        totals = np.bincount(network, self.branch_length_m, minlength=self.pixel_network.max() + 1)
        return totals[self.pixel_network]


def build_graph(pixels: SkeletonPixels, pixel_size_m: tuple[float, float]) -> SkeletonGraph:
    """Build the graph of a set of skeleton pixels.

    Args:
        pixels: skeleton pixels without duplicates, in scene pixel coordinates, in any order
            (the graph stores them sorted by row, then column, so that a pixel set always gives
            the same graph, whichever blocks it came from).
        pixel_size_m: (x, y) size of one pixel in metres.

    Returns:
        The graph, with junctions closer than the local road width merged.
    """
    pixels = pixels.subset(np.argsort(pixel_keys(pixels.rows, pixels.cols)))  # same pixels, same graph
    n = len(pixels)
    i, j = _pixel_edges(pixels.rows, pixels.cols)
    adjacency = _symmetric(i, j, n)
    degree = np.diff(adjacency.indptr)
    _, network = connected_components(adjacency, directed=False)

    # Nodes: clusters of junction pixels first, then end pixels, one node each.
    is_junction = degree >= 3
    both = is_junction[i] & is_junction[j]
    _, cluster = connected_components(_symmetric(i[both], j[both], n), directed=False)
    node_of_pixel = np.full(n, -1, dtype=np.int64)
    junction_ids, junction_node = np.unique(cluster[is_junction], return_inverse=True)
    node_of_pixel[is_junction] = junction_node
    n_junction_nodes = len(junction_ids)
    is_end = degree == 1
    node_of_pixel[is_end] = n_junction_nodes + np.arange(np.count_nonzero(is_end))
    n_nodes = n_junction_nodes + np.count_nonzero(is_end)

    branch_ptr, branch_pixels, branch_nodes = _trace_branches(adjacency, degree == 2, node_of_pixel, i, j)

    # Merge junctions joined by a branch shorter than the road there.
    node_rc = _centroids(node_of_pixel, pixels, n_nodes)
    point_ptr, point_rc = _branch_points(branch_ptr, branch_pixels, branch_nodes, pixels, node_rc)
    length_m = _lengths_m(point_ptr, point_rc, pixel_size_m)
    owner = owners(branch_ptr)
    mean_width_m = _ragged_mean(branch_ptr, pixels.width_m[branch_pixels])
    between_junctions = (branch_nodes.min(axis=1) >= 0) & (branch_nodes.max(axis=1) < n_junction_nodes)
    internal = between_junctions & (length_m < mean_width_m)
    if internal.any():
        src, dst = branch_nodes[internal].T
        _, merged = connected_components(_symmetric(src, dst, n_nodes), directed=False)
        inner = internal[owner] & (node_of_pixel[branch_pixels] < 0)
        node_of_pixel[branch_pixels[inner]] = branch_nodes[owner[inner], 0]
        node_of_pixel = np.where(node_of_pixel >= 0, merged[node_of_pixel], -1)
        n_nodes = int(merged.max()) + 1
        branch_ptr, branch_pixels = _select(branch_ptr, branch_pixels, ~internal)
        kept = branch_nodes[~internal]
        branch_nodes = np.where(kept >= 0, merged[np.maximum(kept, 0)], -1)
        node_rc = _centroids(node_of_pixel, pixels, n_nodes)
        point_ptr, point_rc = _branch_points(branch_ptr, branch_pixels, branch_nodes, pixels, node_rc)
        length_m = _lengths_m(point_ptr, point_rc, pixel_size_m)

    ends = branch_nodes[branch_nodes[:, 0] >= 0].ravel()
    return SkeletonGraph(
        pixels=pixels,
        pixel_size_m=pixel_size_m,
        pixel_network=network.astype(np.int64),
        node_of_pixel=node_of_pixel,
        node_rc=node_rc,
        node_degree=np.bincount(ends, minlength=n_nodes).astype(np.int64),
        branch_nodes=branch_nodes,
        branch_ptr=branch_ptr,
        branch_pixels=branch_pixels,
        point_ptr=point_ptr,
        point_rc=point_rc,
        branch_length_m=length_m,
    )


def owners(ptr: np.ndarray) -> np.ndarray:
    """Row of each element of a ragged array given by its offsets ``ptr`` (R + 1,)."""
    return np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))


def _ragged_mean(ptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(R,) mean of ``values`` over each row of a ragged array given by its offsets ``ptr``."""
    sums = np.bincount(owners(ptr), values.astype(np.float64), minlength=len(ptr) - 1)
    return sums / np.maximum(np.diff(ptr), 1)


def pixel_keys(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N,) int64 key of each pixel, unique for rows and columns in [0, 2**31)."""
    return (rows.astype(np.int64) << _SHIFT) | cols.astype(np.int64)


def _pixel_edges(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected 8-connected edges (i, j) of pixels sorted by key, without the diagonal steps
    that a 4-connected pixel already bridges."""
    keys = pixel_keys(rows, cols)
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    def find(dr: int, dc: int) -> np.ndarray:
        wanted = keys + ((np.int64(dr) << _SHIFT) + dc)
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return np.where(keys[at] == wanted, at, -1)

    right, down, down_right, down_left = find(0, 1), find(1, 0), find(1, 1), find(1, -1)
    left = find(0, -1)
    down_right[(right >= 0) | (down >= 0)] = -1
    down_left[(left >= 0) | (down >= 0)] = -1
    src, dst = [], []
    for other in (right, down, down_right, down_left):
        has = other >= 0
        src.append(np.flatnonzero(has))
        dst.append(other[has])
    return np.concatenate(src), np.concatenate(dst)


def _symmetric(i: np.ndarray, j: np.ndarray, n: int) -> csr_matrix:
    """Symmetric n x n adjacency matrix of the undirected edges (i, j)."""
    data = np.ones(2 * len(i), dtype=np.int8)
    return csr_matrix((data, (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n))


def _trace_branches(
    adjacency: csr_matrix, is_path: np.ndarray, node_of_pixel: np.ndarray, i: np.ndarray, j: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered pixel paths between nodes, rings, and direct node-to-node steps.

    Returns:
        branch_ptr (B + 1,), branch_pixels (flat), branch_nodes (B, 2).
    """
    n = adjacency.shape[0]
    on_path = is_path[i] & is_path[j]
    pi, pj = i[on_path], j[on_path]
    sub_degree = np.bincount(np.concatenate([pi, pj]), minlength=n)
    _, component = connected_components(_symmetric(pi, pj, n), directed=False)

    # One start pixel per path: an end of it, or any pixel of a ring.
    path_px = np.flatnonzero(is_path)
    start = np.full(n, -1, dtype=np.int64)
    comps, first = np.unique(component[path_px], return_index=True)
    start[comps] = path_px[first]
    tips = path_px[sub_degree[path_px] < 2]
    tip_comps, first = np.unique(component[tips], return_index=True)
    start[tip_comps] = tips[first]
    starts = start[comps]
    ring = sub_degree[starts] == 2

    # Open each ring between its start and one neighbour, so that every path is a chain.
    cut_to = adjacency.indices[adjacency.indptr[starts[ring]]]
    ring_starts = starts[ring]
    edge_keys = np.minimum(pi, pj) * n + np.maximum(pi, pj)
    cut = np.isin(edge_keys, np.minimum(ring_starts, cut_to) * n + np.maximum(ring_starts, cut_to))
    pi, pj = pi[~cut], pj[~cut]

    # One breadth-first traversal from a virtual root joined to every start reaches the pixels of
    # a chain in the order of their depth; a stable sort by path keeps that order within paths.
    root = n
    walk = csr_matrix(
        (np.ones(2 * len(pi) + len(starts), dtype=np.int8),
         (np.concatenate([pi, pj, np.full(len(starts), root)]), np.concatenate([pj, pi, starts]))),
        shape=(n + 1, n + 1),
    )
    order = breadth_first_order(walk, root, directed=True, return_predecessors=False)[1:]
    order = order[np.argsort(component[order], kind="stable")]
    size = np.bincount(component[order], minlength=n)[comps]
    begin = np.cumsum(size) - size
    first_px, last_px = order[begin], order[begin + size - 1]

    # Node pixels at both ends of each open path: the neighbours that are not path pixels.
    def neighbours(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return adjacency.indices[adjacency.indptr[p]], adjacency.indices[adjacency.indptr[p] + 1]

    a_first, b_first = neighbours(first_px)
    a_last, b_last = neighbours(last_px)
    single = size == 1
    src = np.where(single | ~is_path[a_first], a_first, b_first)
    dst = np.where(single, b_first, np.where(is_path[a_last], b_last, a_last))

    # Flat layout: [src, path..., dst] for open paths, [path...] for rings.
    count = size + 2 * ~ring
    ptr = np.concatenate([[0], np.cumsum(count)])
    flat = np.empty(ptr[-1], dtype=np.int64)
    path_of = np.repeat(np.arange(len(size)), size)
    flat[ptr[path_of] + (~ring)[path_of] + np.arange(len(order)) - begin[path_of]] = order
    open_ = np.flatnonzero(~ring)
    flat[ptr[open_]] = src[~ring]
    flat[ptr[open_ + 1] - 1] = dst[~ring]
    nodes = np.full((len(size), 2), -1, dtype=np.int64)
    nodes[~ring] = np.stack([node_of_pixel[src[~ring]], node_of_pixel[dst[~ring]]], axis=1)

    # Direct steps between two different nodes (an end next to a junction, a 2-pixel line).
    ni, nj = node_of_pixel[i], node_of_pixel[j]
    direct = (ni >= 0) & (nj >= 0) & (ni != nj)
    direct_flat = np.stack([i[direct], j[direct]], axis=1).ravel()
    branch_ptr = np.concatenate([ptr, ptr[-1] + 2 * np.arange(1, np.count_nonzero(direct) + 1)])
    branch_pixels = np.concatenate([flat, direct_flat])
    branch_nodes = np.concatenate([nodes, np.stack([ni[direct], nj[direct]], axis=1)])
    return branch_ptr, branch_pixels, branch_nodes


def _centroids(node_of_pixel: np.ndarray, pixels: SkeletonPixels, n_nodes: int) -> np.ndarray:
    """(M, 2) mean (row, column) of the pixels of each node."""
    has = node_of_pixel >= 0
    node = node_of_pixel[has]
    count = np.maximum(np.bincount(node, minlength=n_nodes), 1)
    rows = np.bincount(node, pixels.rows[has].astype(np.float64), minlength=n_nodes) / count
    cols = np.bincount(node, pixels.cols[has].astype(np.float64), minlength=n_nodes) / count
    return np.stack([rows, cols], axis=1)


def _branch_points(
    branch_ptr: np.ndarray,
    branch_pixels: np.ndarray,
    branch_nodes: np.ndarray,
    pixels: SkeletonPixels,
    node_rc: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of every branch: node centroids at the ends, a ring closed on its first pixel."""
    ring = branch_nodes[:, 0] < 0
    owner = owners(branch_ptr)
    rings_before = np.cumsum(ring) - ring
    point_ptr = branch_ptr + np.concatenate([[0], np.cumsum(ring)])
    point_rc = np.empty((point_ptr[-1], 2), dtype=np.float64)
    at = np.arange(len(branch_pixels)) + rings_before[owner]
    point_rc[at, 0] = pixels.rows[branch_pixels]
    point_rc[at, 1] = pixels.cols[branch_pixels]
    closed = np.flatnonzero(ring)
    point_rc[point_ptr[closed + 1] - 1] = point_rc[point_ptr[closed]]
    open_ = np.flatnonzero(~ring)
    point_rc[point_ptr[open_]] = node_rc[branch_nodes[open_, 0]]
    point_rc[point_ptr[open_ + 1] - 1] = node_rc[branch_nodes[open_, 1]]
    return point_ptr, point_rc


def _lengths_m(point_ptr: np.ndarray, point_rc: np.ndarray, pixel_size_m: tuple[float, float]) -> np.ndarray:
    """(B,) length in metres of each branch's vertices."""
    n_branches = len(point_ptr) - 1
    if len(point_rc) < 2:
        return np.zeros(n_branches)
    x_m, y_m = pixel_size_m
    step = np.diff(point_rc, axis=0) * (y_m, x_m)
    step_m = np.hypot(step[:, 0], step[:, 1])
    owner = owners(point_ptr)[:-1]
    inside = np.ones(len(step_m), dtype=bool)
    inside[point_ptr[1:-1] - 1] = False  # from the last vertex of a branch to the first of the next
    return np.bincount(owner[inside], step_m[inside], minlength=n_branches)


def _select(ptr: np.ndarray, flat: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep some rows of a ragged (ptr, flat) array."""
    counts = np.diff(ptr)
    return np.concatenate([[0], np.cumsum(counts[keep])]), flat[keep[owners(ptr)]]
