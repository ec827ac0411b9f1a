"""``geoccseg evaluate PRED TRUTH``: score predictions against truth and print a table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoccseg.cli.verbosity import say, verbosity_options
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.apls import APLSParams
from geoccseg.evaluate.files import match_files
from geoccseg.evaluate.report import DEFAULT_LINE_WIDTH_M, evaluate
from geoccseg.evaluate.topo import TopoParams
from geoccseg.io.atomic import atomic_path, check_not_input, check_writable
from geoccseg.vectorize.network import DEFAULT_SNAP_M, check_snap_m

_APLS, _TOPO = APLSParams(), TopoParams()


def _parse_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GeoccsegError(f"--classes {text!r} must be comma-separated integers, e.g. 1,2") from None


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=None,
              help="Probability threshold (positive when >=), in (0, 1] [the one PRED's probability rasters record: the one "
                   "geoccseg predict drew a scene's lines at, the model's for photos; else 0.5].")
@click.option("--tolerance-px", type=float, default=3, show_default=True, help="Relaxed precision/recall tolerance, pixels.")
@click.option("--buffer-m", type=float, default=5.0, show_default=True, help="Centreline buffer, metres.")
@click.option(
    "--line-width-m", type=float, default=DEFAULT_LINE_WIDTH_M, show_default=True,
    help="Width of vector lines burnt onto a raster for pixel metrics, metres.",
)
@click.option("--classes", default=None, help="Class values to score in class maps, e.g. 1,2 (default: binary masks).")
@click.option("--aoi", type=click.Path(path_type=Path), default=None,
              help="Score only inside these polygons (a vector file, any CRS), e.g. the part you did not label; rasters must be georeferenced.")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Also write the metrics as JSON to this file (never a folder or an input).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
@click.option("--graph-metrics/--no-graph-metrics", default=True, show_default=True,
              help="APLS and TOPO of the road graphs, where both sides are vectors or georeferenced rasters.")
@click.option("--graph-snap-m", type=click.FloatRange(min=0), default=DEFAULT_SNAP_M, show_default=True,
              help="Join line ends this close to other ends or lines when building road graphs, metres.")
@click.option("--apls-snap-m", type=float, default=_APLS.snap_m, show_default=True,
              help="APLS: control points farther than this from the other graph have no counterpart, metres.")
@click.option("--apls-spacing-m", type=float, default=_APLS.spacing_m, show_default=True,
              help="APLS: spacing of the control points inserted along edges, metres.")
@click.option("--apls-min-path-m", type=float, default=_APLS.min_path_m, show_default=True,
              help="APLS: paths shorter than this are not scored, metres.")
@click.option("--apls-max-points", type=int, default=_APLS.max_points, show_default=True,
              help="APLS: most control points per graph (more are sampled with a fixed seed).")
@click.option("--topo-radius-m", type=float, default=_TOPO.radius_m, show_default=True,
              help="TOPO: holes and marbles out to this path distance from each seed, metres.")
@click.option("--topo-interval-m", type=float, default=_TOPO.interval_m, show_default=True,
              help="TOPO: path distance between holes (and between marbles), metres.")
@click.option("--topo-hole-m", type=float, default=_TOPO.hole_m, show_default=True,
              help="TOPO: a marble within this distance of a free hole fills it, metres.")
@click.option("--topo-max-seeds", type=int, default=_TOPO.max_seeds, show_default=True,
              help="TOPO: most seeds (true nodes) per image (more are sampled with a fixed seed).")
@verbosity_options
def command(
    pred: Path,
    truth: Path,
    threshold: float | None,
    tolerance_px: float,
    buffer_m: float,
    line_width_m: float,
    classes: str | None,
    json_path: str | None,  # as typed: a trailing / names a folder
    graph_metrics: bool,
    graph_snap_m: float,
    apls_snap_m: float,
    apls_spacing_m: float,
    apls_min_path_m: float,
    apls_max_points: int,
    topo_radius_m: float,
    topo_interval_m: float,
    topo_hole_m: float,
    topo_max_seeds: int,
    aoi: Path | None,
    overwrite: bool,
) -> None:
    """Score PRED against TRUTH: files, or folders matched by file name.

    Rasters (GeoTIFF, PNG, JPEG: probabilities, masks or class maps) and vector lines (GeoPackage,
    GeoJSON, FlatGeobuf, Shapefile) can be mixed. APLS and TOPO compare road graphs: vector lines
    are turned into graphs, georeferenced rasters are vectorised first.
    """
    check_snap_m(graph_snap_m, "--graph-snap-m")  # before any file is read
    apls_params = APLSParams(snap_m=apls_snap_m, spacing_m=apls_spacing_m, min_path_m=apls_min_path_m, max_points=apls_max_points)
    topo_params = TopoParams(radius_m=topo_radius_m, interval_m=topo_interval_m, hole_m=topo_hole_m, max_seeds=topo_max_seeds)
    if json_path is not None:
        check_not_input(json_path, [*(path for pair in match_files(pred, truth) for path in pair), *([aoi] if aoi is not None else [])])
        check_writable(json_path, overwrite=overwrite, example="scores.json")
    result = evaluate(
        pred, truth, threshold=threshold, tolerance_px=tolerance_px, buffer_m=buffer_m,
        classes=_parse_classes(classes), line_width_m=line_width_m, graph_metrics=graph_metrics,
        graph_snap_m=graph_snap_m, apls_params=apls_params, topo_params=topo_params, aoi=aoi,
    )
    click.echo(result.format_table())
    if json_path is not None:
        with atomic_path(json_path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        say(f"wrote {json_path}", err=True)  # stdout carries the table
