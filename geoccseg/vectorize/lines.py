"""The one vectoriser: sparse skeleton pixels of a whole scene → attributed polylines.

Whether the pixels come from one array (:func:`geoccseg.vectorize.vectorize_array`) or from the
cores of many blocks (:func:`geoccseg.vectorize.vectorize_raster`), the graph steps run here once
over all of them:

1. networks without a hysteresis seed are dropped;
2. spurs are pruned until none is left (:mod:`~geoccseg.vectorize.prune`);
3. gaps are bridged (:mod:`~geoccseg.vectorize.bridge`);
4. networks shorter than ``min_length_m`` in total are dropped;
5. branches are chained through nodes of degree two, so that each output line runs between
   junctions and ends (a T gives 3 lines, a cross 4, a ring 1 closed line);
6. lines are simplified (Douglas-Peucker in metres) and georeferenced.

Each step rebuilds the graph from the pixels it keeps or adds, so the pixels stay the single
source of truth.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS

from geoccseg.io.units import pixel_size_m as crs_pixel_size_m
from geoccseg.vectorize.bridge import bridge_pixels
from geoccseg.vectorize.graph import SkeletonGraph, build_graph, owners
from geoccseg.vectorize.params import VectorizeParams
from geoccseg.vectorize.prune import spur_pixels
from geoccseg.vectorize.skeleton import SkeletonPixels

def scene_pixel_size_m(crs: CRS | str, transform: Affine, height_px: int, width_px: int) -> tuple[float, float]:
    """(x, y) pixel size in metres at the centre of a scene (geographic CRSs vary with latitude)."""
    centre = transform * (width_px / 2, height_px / 2)
    return crs_pixel_size_m(crs, transform, centre)


def lines_from_skeleton(
    pixels: SkeletonPixels,
    *,
    transform: Affine,
    crs: CRS | str,
    pixel_size_m: tuple[float, float],
    class_name: str,
    params: VectorizeParams,
) -> gpd.GeoDataFrame:
    """Turn the skeleton pixels of a scene into polylines.

    Args:
        pixels: skeleton pixels of the whole scene (scene pixel coordinates).
        transform: the scene's affine transform (pixel → CRS units).
        crs: the scene's CRS, given to the output.
        pixel_size_m: (x, y) size of one pixel in metres.
        class_name: value of the ``class`` column.
        params: vectoriser settings.

    Returns:
        One LineString per branch between junctions/ends, with columns ``class``, ``length_m``
        (metres, of the simplified line), ``width_m`` (metres), ``probability`` (0-1) and
        ``geometry`` in ``crs``.
    """
    graph = clean_graph(pixels, pixel_size_m, params)
    return _to_frame(graph, transform, crs, class_name, params.simplify_m)


def clean_graph(pixels: SkeletonPixels, pixel_size_m: tuple[float, float], params: VectorizeParams) -> SkeletonGraph:
    """The graph steps 1-4 of the vectoriser: unseeded networks out, spurs pruned, gaps bridged,
    short networks out.

    Args:
        pixels: skeleton pixels of the whole scene (scene pixel coordinates).
        pixel_size_m: (x, y) size of one pixel in metres.
        params: vectoriser settings.

    Returns:
        The final skeleton graph, whose branches run between junctions and ends.
    """
    graph = build_graph(pixels, pixel_size_m)
    if not graph.pixels.seeded.all():
        network = graph.pixel_network
        has_seed = np.bincount(network, graph.pixels.seeded, minlength=network.max() + 1) > 0
        graph = build_graph(graph.pixels.subset(has_seed[network]), pixel_size_m)
    while (spurs := spur_pixels(graph, params.spur_m)).any():
        graph = build_graph(graph.pixels.subset(~spurs), pixel_size_m)
    bridges = bridge_pixels(graph, params.gap_m)
    if len(bridges):
        graph = build_graph(SkeletonPixels.concat([graph.pixels, bridges]), pixel_size_m)
    short = graph.network_length_m() < params.min_length_m
    if short.any():
        graph = build_graph(graph.pixels.subset(~short), pixel_size_m)
    return graph


def _empty_frame(crs: CRS | str | None) -> gpd.GeoDataFrame:
    """A GeoDataFrame with the vectoriser's columns and no rows."""
    data = {"class": np.array([], dtype=object), **{k: np.array([], dtype=np.float64) for k in ("length_m", "width_m", "probability")}}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _to_frame(
    graph: SkeletonGraph, transform: Affine, crs: CRS | str, class_name: str, simplify_m: float
) -> gpd.GeoDataFrame:
    """Chain, simplify and georeference the branches of a final graph."""
    line_ptr, branch, reverse = _chains(graph)
    n_lines = len(line_ptr) - 1
    if n_lines == 0:
        return _empty_frame(crs)
    point, point_line = _walk(graph.point_ptr, line_ptr, branch, reverse, skip_shared=True)
    member, member_line = _walk(graph.branch_ptr, line_ptr, branch, reverse, skip_shared=False)
    pixel = graph.branch_pixels[member]
    count = np.bincount(member_line, minlength=n_lines)
    width_m = np.bincount(member_line, graph.pixels.width_m[pixel].astype(np.float64), minlength=n_lines) / count
    probability = np.bincount(member_line, graph.pixels.prob[pixel].astype(np.float64), minlength=n_lines) / count

    # Simplify and measure in metres on the pixel grid, then map the kept vertices to the CRS.
    x_m, y_m = graph.pixel_size_m
    rc = graph.point_rc[point]
    metric = shapely.linestrings(rc[:, 1] * x_m, rc[:, 0] * y_m, indices=point_line)
    if simplify_m > 0:
        metric = shapely.simplify(metric, simplify_m, preserve_topology=True)
    coords, index = shapely.get_coordinates(metric, return_index=True)
    col, row = coords[:, 0] / x_m + 0.5, coords[:, 1] / y_m + 0.5
    x = transform.a * col + transform.b * row + transform.c
    y = transform.d * col + transform.e * row + transform.f
    data = {
        "class": np.full(n_lines, class_name, dtype=object),
        "length_m": shapely.length(metric),
        "width_m": width_m,
        "probability": probability,
    }
    return gpd.GeoDataFrame(data, geometry=shapely.linestrings(x, y, indices=index), crs=crs)


def _chains(graph: SkeletonGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group branches into lines that pass through nodes of degree two.

    Returns:
        line_ptr (L + 1,) offsets into the next two arrays; branch (S,) the branches of each
        line in order; reverse (S,) bool, True where a branch is walked from its end to its start.
    """
    nodes = graph.branch_nodes
    is_pass = graph.end_degree == 2
    through = is_pass.any(axis=1)
    singles = np.flatnonzero(~through)
    if not through.any():
        return np.arange(len(singles) + 1), singles, np.zeros(len(singles), dtype=bool)

    at_node: dict[int, list[tuple[int, int]]] = {}
    for b, side in zip(*np.nonzero(is_pass)):
        at_node.setdefault(int(nodes[b, side]), []).append((int(b), int(side)))
    done: set[int] = set()

    def walk(b: int, side: int) -> list[tuple[int, bool]]:
        """Branches met when leaving branch ``b`` through its ``side`` (0 start, 1 end)."""
        found = []
        while (node := int(nodes[b, side])) in at_node:
            first, second = at_node[node]
            b, entered = second if first == (b, side) else first
            if b in done:  # back at the start of a closed chain
                break
            done.add(b)
            found.append((b, entered == 1))
            side = 1 - entered
        return found

    chains = [[(int(b), False)] for b in singles]
    for b in np.flatnonzero(through):
        if int(b) in done:
            continue
        done.add(int(b))
        forward, backward = walk(int(b), 1), walk(int(b), 0)
        chains.append([(c, not rev) for c, rev in reversed(backward)] + [(int(b), False)] + forward)
    line_ptr = np.concatenate([[0], np.cumsum([len(c) for c in chains])])
    flat = [step for chain in chains for step in chain]
    return line_ptr, np.array([c for c, _ in flat], dtype=np.int64), np.array([r for _, r in flat], dtype=bool)


def _walk(
    ptr: np.ndarray, line_ptr: np.ndarray, branch: np.ndarray, reverse: np.ndarray, skip_shared: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a per-branch ragged array (``ptr``) along each line, and the line of each.

    With ``skip_shared`` the first element of every branch but a line's first is skipped (the
    node vertex it shares with the branch before it).
    """
    line_of = owners(line_ptr)
    skip = np.ones(len(branch), dtype=np.int64) if skip_shared else np.zeros(len(branch), dtype=np.int64)
    skip[line_ptr[:-1]] = 0
    start, stop = ptr[branch], ptr[branch + 1]
    count = stop - start - skip
    step_of = np.repeat(np.arange(len(branch)), count)
    k = np.arange(count.sum()) - (np.cumsum(count) - count)[step_of] + skip[step_of]
    position = np.where(reverse[step_of], stop[step_of] - 1 - k, start[step_of] + k)
    return position, line_of[step_of]
