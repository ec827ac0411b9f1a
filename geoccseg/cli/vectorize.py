"""``geoccseg vectorize``: probability GeoTIFF → polylines in a GIS file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from geoccseg.cli.vectorize_options import graph_options, vectorize_options
from geoccseg.cli.verbosity import detail, say, show_progress, verbosity_options
from geoccseg.io.atomic import check_not_input
from geoccseg.io.scene import is_gdal_path
from geoccseg.io.vector_write import check_vector_crs, check_vector_output, write_vectors
from geoccseg.vectorize import VectorizeParams, vectorize_raster
from geoccseg.vectorize.blocks import BLOCK_PX, recorded_threshold
from geoccseg.vectorize.network import check_graph_output, with_graph_layers

_DEFAULTS = VectorizeParams()


@click.command("vectorize")
@click.argument("prob", metavar="PROB")  # a string: a Path would fold a URL's "//"
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file: .gpkg (one layer per class), .geojson, .fgb or .shp.")
@vectorize_options()
@click.option("--block-px", type=int, default=BLOCK_PX, show_default=True, help="Block side in pixels (memory).")
@graph_options()
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@verbosity_options
def command(
    prob: str,
    output: Path,
    vectorizer: dict[str, float],
    block_px: int,
    graph_snap_m: float | None,
    overwrite: bool,
) -> None:
    """Turn the probability GeoTIFF PROB into polylines written to OUTPUT.

    PROB is a file, or anything rasterio opens (https://..., /vsicurl/..., s3://...); OUTPUT is a local file.
    """
    check_vector_output(output, overwrite, example="roads.gpkg")
    check_vector_crs(output, prob)
    if graph_snap_m is not None:
        check_graph_output(output)
    check_not_input(output, [] if is_gdal_path(prob) else [prob])
    params = dataclasses.replace(_DEFAULTS, **vectorizer).resolved(recorded_threshold(prob))  # the model's, as predict recorded it in PROB
    detail(f"vectoriser: {params}")
    layers = vectorize_raster(prob, params=params, block_px=block_px, progress=show_progress())
    written = with_graph_layers(layers, snap_m=graph_snap_m) if graph_snap_m is not None else layers
    write_vectors(written, output, overwrite=overwrite)
    for name, lines in layers.items():
        say(f"{name}: {len(lines)} lines, {lines['length_m'].sum() / 1000:.3f} km")
        if graph_snap_m is not None:
            say(f"{name}: road graph of {len(written[f'{name}_nodes'])} nodes and {len(written[f'{name}_edges'])} edges")
    click.echo(f"wrote {output}")
