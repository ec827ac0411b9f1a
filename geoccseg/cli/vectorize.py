"""``geoccseg vectorize``: probability GeoTIFF → polylines in a GIS file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from geoccseg.io.atomic import check_not_input, check_writable
from geoccseg.io.vector_write import vector_driver, write_vectors
from geoccseg.vectorize import VectorizeParams, vectorize_raster
from geoccseg.vectorize.blocks import recorded_threshold
from geoccseg.vectorize.network import DEFAULT_SNAP_M, check_graph_output, with_graph_layers

_DEFAULTS = VectorizeParams()


@click.command("vectorize")
@click.argument("prob", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file: .gpkg (one layer per class), .geojson, .fgb or .shp.")
@click.option("--threshold", type=float, default=None, help=f"Foreground probability [the model's, as predict recorded it in PROB, else {_DEFAULTS.threshold}].")
@click.option("--low-threshold", type=float, default=None, help="Hysteresis low threshold [off].")
@click.option("--min-length-m", type=float, default=None,
              help=f"Drop networks shorter than this, metres [{_DEFAULTS.min_length_m}].")
@click.option("--spur-m", type=float, default=None,
              help=f"Prune end branches shorter than this, metres [{_DEFAULTS.spur_m}].")
@click.option("--gap-m", type=float, default=None, help=f"Bridge gaps up to this, metres [{_DEFAULTS.gap_m}].")
@click.option("--simplify-m", type=float, default=None,
              help=f"Douglas-Peucker tolerance, metres [{_DEFAULTS.simplify_m}].")
@click.option("--block-px", type=int, default=4096, show_default=True, help="Block side in pixels (memory).")
@click.option("--graph", is_flag=True,
              help="Also write the road graph: <class>_nodes and <class>_edges layers (.gpkg only).")
@click.option("--graph-snap-m", type=float, default=DEFAULT_SNAP_M, show_default=True,
              help="With --graph: join line ends this close to other ends or lines, metres.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def command(
    prob: Path,
    output: Path,
    threshold: float | None,
    low_threshold: float | None,
    min_length_m: float | None,
    spur_m: float | None,
    gap_m: float | None,
    simplify_m: float | None,
    block_px: int,
    graph: bool,
    graph_snap_m: float,
    overwrite: bool,
) -> None:
    """Turn the probability GeoTIFF PROB into polylines written to OUTPUT."""
    check_writable(output, overwrite, example="roads.gpkg")
    vector_driver(output)
    if graph:
        check_graph_output(output)
    check_not_input(output, [prob])
    given = {
        "threshold": threshold, "low_threshold": low_threshold, "min_length_m": min_length_m,
        "spur_m": spur_m, "gap_m": gap_m, "simplify_m": simplify_m,
    }
    if threshold is None:  # the threshold of the model that wrote PROB, when predict recorded it
        given["threshold"] = recorded_threshold(prob)
    params = dataclasses.replace(_DEFAULTS, **{k: v for k, v in given.items() if v is not None})
    layers = vectorize_raster(prob, params=params, block_px=block_px)
    written = with_graph_layers(layers, snap_m=graph_snap_m) if graph else layers
    write_vectors(written, output, overwrite=overwrite)
    for name, lines in layers.items():
        click.echo(f"{name}: {len(lines)} lines, {lines['length_m'].sum() / 1000:.3f} km")
        if graph:
            click.echo(f"{name}: road graph of {len(written[f'{name}_nodes'])} nodes and {len(written[f'{name}_edges'])} edges")
    click.echo(f"wrote {output}")
