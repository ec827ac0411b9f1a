"""The vectoriser's options (:class:`~geoccseg.vectorize.VectorizeParams`) and the road graph's,
defined once for ``geoccseg vectorize`` and ``geoccseg predict``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from geoccseg.errors import GeoccsegError
from geoccseg.vectorize import VectorizeParams
from geoccseg.vectorize.params import DEFAULT_THRESHOLD
from geoccseg.vectorize.network import DEFAULT_SNAP_M, check_snap_m

_DEFAULTS = VectorizeParams()

#: ``VectorizeParams`` field -> help (the default is appended). All lengths in metres, areas in m².
HELP: dict[str, str] = {
    "threshold": "Foreground probability (0-1) at or above which a pixel is on a line "
                 f"[predict: the model's own threshold; vectorize: the one the raster records (the one predict drew its lines "
                 f"at); else {DEFAULT_THRESHOLD}].",
    "low_threshold": "Hysteresis: also keep pixels at or above this probability (0-1) when they touch a pixel at or "
                     "above --threshold [off].",
    "min_blob_m2": f"Remove foreground blobs smaller than this, square metres [{_DEFAULTS.min_blob_m2:g}].",
    "max_hole_m2": f"Fill holes in the foreground smaller than this, square metres [{_DEFAULTS.max_hole_m2:g}].",
    "spur_m": f"Prune end branches shorter than this, metres [{_DEFAULTS.spur_m:g}].",
    "min_length_m": f"Drop networks shorter than this, metres [{_DEFAULTS.min_length_m:g}].",
    "gap_m": f"Bridge gaps between line ends up to this, metres; 0: no bridging [{_DEFAULTS.gap_m:g}].",
    "simplify_m": f"Tolerance of the line simplification (Douglas-Peucker), metres; 0 keeps every skeleton pixel [{_DEFAULTS.simplify_m:g}].",
}
NAMES = tuple(HELP)
"""Parameter names of the options (the ``VectorizeParams`` fields)."""


def vectorize_options(prefix: str = "") -> Callable[[Callable], Callable]:
    """Add one option per :class:`VectorizeParams` field to a click command function.

    The function gets them together as ``vectorizer``: a dict of the options given (field name ->
    value), without those left out, so the caller decides what an absent threshold means.

    Args:
        prefix: put before the help of every option but ``--threshold``, e.g. ``"Scene: "`` where
            only georeferenced inputs are vectorised with them.
    """

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            given = {name: kwargs.pop(name) for name in NAMES}
            return command(*args, vectorizer={k: v for k, v in given.items() if v is not None}, **kwargs)

        for name in reversed(NAMES):
            help_text = HELP[name] if name == "threshold" or not prefix else prefix + HELP[name][0].lower() + HELP[name][1:]
            run = click.option("--" + name.replace("_", "-"), name, type=float, default=None, help=help_text)(run)
        return run

    return decorate


def graph_options(prefix: str = "") -> Callable[[Callable], Callable]:
    """Add ``--graph`` and ``--graph-snap-m`` to a click command function, which gets them together
    as ``graph_snap_m``: the snapping distance in metres with ``--graph``, None without.

    Args:
        prefix: put before their help, e.g. ``"Scene: "``.

    Raises:
        GeoccsegError: (when the command runs) ``--graph-snap-m`` without ``--graph``.
    """

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            graph, snap_m = kwargs.pop("graph"), kwargs.pop("graph_snap_m")
            if snap_m is not None:
                check_snap_m(snap_m, "--graph-snap-m")
            if snap_m is not None and not graph:
                raise GeoccsegError("--graph-snap-m only applies to the road graph; add --graph or leave it out")
            return command(*args, graph_snap_m=(DEFAULT_SNAP_M if snap_m is None else snap_m) if graph else None, **kwargs)

        run = click.option("--graph-snap-m", type=click.FloatRange(min=0), default=None,
                           help=f"{prefix}with --graph: join line ends this close to other ends or lines, metres [{DEFAULT_SNAP_M:g}].")(run)
        return click.option("--graph", is_flag=True,
                            help=f"{prefix}also write the road graph: <class>_nodes and <class>_edges layers (.gpkg only).")(run)

    return decorate
