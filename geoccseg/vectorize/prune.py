"""Spur pruning: short end branches that hang off a junction are skeleton noise.

A thinned road grows stubs towards the corners of its mask. A *spur* is a branch from an end
node to a junction node, shorter than ``spur_m``. One round removes the pixels of all spurs; the
caller rebuilds the graph and repeats until no spur is left, because removing a stub can turn a
junction into a plain bend and expose a new, longer spur.

When every branch but at most one at a junction is a spur (the fork at the end of a road), the
longest spur is kept so that the road still reaches its end.
"""

from __future__ import annotations

import numpy as np

from geoccseg.vectorize.graph import SkeletonGraph, owners


def spur_pixels(graph: SkeletonGraph, spur_m: float) -> np.ndarray:
    """Select the pixels of the spurs to remove in one round.

    Args:
        graph: the current skeleton graph.
        spur_m: spurs shorter than this (metres) are removed.

    Returns:
        (N,) bool over ``graph.pixels``: True for pixels to remove (the junction's own pixels
        are never removed).
    """
    remove = np.zeros(len(graph.pixels), dtype=bool)
    if graph.n_branches == 0 or spur_m <= 0:
        return remove
    nodes = graph.branch_nodes
    degree = graph.end_degree
    junction_at_end = (degree[:, 0] == 1) & (degree[:, 1] >= 3)
    junction_at_start = (degree[:, 1] == 1) & (degree[:, 0] >= 3)
    spurs = np.flatnonzero((junction_at_end | junction_at_start) & (graph.branch_length_m < spur_m))
    if len(spurs) == 0:
        return remove
    junction = np.where(junction_at_end[spurs], nodes[spurs, 1], nodes[spurs, 0])

    # At a junction that would be left with fewer than two branch ends, keep its longest spur.
    n_spurs = np.bincount(junction, minlength=len(graph.node_degree))
    starved = graph.node_degree[junction] - n_spurs[junction] <= 1
    order = np.lexsort((-graph.branch_length_m[spurs], junction))
    longest = np.zeros(len(spurs), dtype=bool)
    longest[order[np.concatenate([[True], junction[order][1:] != junction[order][:-1]])]] = True
    cut = ~(starved & longest)

    junction_of = np.full(graph.n_branches, -2, dtype=np.int64)
    junction_of[spurs[cut]] = junction[cut]
    owner = owners(graph.branch_ptr)
    take = (junction_of[owner] != -2) & (graph.node_of_pixel[graph.branch_pixels] != junction_of[owner])
    remove[graph.branch_pixels[take]] = True
    return remove
