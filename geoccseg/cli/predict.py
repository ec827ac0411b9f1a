"""``geoccseg predict SCENE -o OUT.gpkg``: scene to probability COG to GIS polylines."""

from __future__ import annotations

from pathlib import Path

import click

from geoccseg.inference.cog import PROB_DTYPE_ALIASES, PROB_DTYPES
from geoccseg.inference.pipeline import run_predict
from geoccseg.inference.predict import PredictOptions
from geoccseg.vectorize import VectorizeParams

_DEFAULTS = VectorizeParams()


@click.command("predict")
@click.argument("scene", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Lines file: .gpkg (one layer per class), .geojson, .fgb or .shp.")
@click.option("--model", default="road", show_default=True, help="Shipped model (road, crack) or a bundle folder written by `geoccseg train`.")
@click.option("--prob-out", type=click.Path(path_type=Path),
              help="Also keep the probability Cloud-Optimised GeoTIFF here (.tif or .tiff).")
@click.option("--prob-dtype", type=click.Choice(PROB_DTYPES + tuple(PROB_DTYPE_ALIASES)), default="uint8", show_default=True,
              help="Probability raster type: uint8 (p x 255) or float32 (float16 is accepted as another name of float32).")
@click.option("--tile-px", type=int, help="Chip edge in model pixels [the bundle's training tile, at least 256].")
@click.option("--overlap-px", type=int, default=64, show_default=True, help="Overlap of neighbouring chips in pixels.")
@click.option("--block-px", type=int, default=2048, show_default=True, help="Block edge in pixels (one task each; memory).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Chips per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the model runs (mixed precision on CUDA).")
@click.option("--workers", type=int, help="Run blocks on a local Dask cluster of N worker processes.")
@click.option("--scheduler", help="Run blocks on an existing Dask cluster (tcp://host:8786).")
@click.option("--threshold", type=float, help=f"Foreground probability of the lines [{_DEFAULTS.threshold}].")
@click.option("--min-length-m", type=float, help=f"Drop networks shorter than this, metres [{_DEFAULTS.min_length_m}].")
@click.option("--graph", is_flag=True, help="Also write the road graph, <class>_nodes and <class>_edges layers (.gpkg only).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def command(
    scene: Path,
    output: Path,
    model: str,
    prob_out: Path | None,
    prob_dtype: str,
    tile_px: int | None,
    overlap_px: int,
    block_px: int,
    batch_size: int,
    device: str,
    workers: int | None,
    scheduler: str | None,
    threshold: float | None,
    min_length_m: float | None,
    graph: bool,
    overwrite: bool,
) -> None:
    """Predict roads or cracks on SCENE and write them as polylines to OUTPUT."""
    if prob_dtype in PROB_DTYPE_ALIASES:
        click.echo(f"note: --prob-dtype {prob_dtype} is written as {PROB_DTYPE_ALIASES[prob_dtype]} "
                   "(GeoTIFF Float16 needs GDAL 3.11 or later)", err=True)
    options = PredictOptions(
        tile_px=tile_px, overlap_px=overlap_px, block_px=block_px, batch_size=batch_size, device=device,
        workers=workers, scheduler=scheduler, prob_dtype=prob_dtype,
    )
    result = run_predict(
        scene, output, model=model, prob_out=prob_out, options=options, threshold=threshold,
        min_length_m=min_length_m, overwrite=overwrite, graph=graph,
    )
    for name, count in result.lines.items():
        click.echo(f"{name}: {count} lines")
    click.echo(f"total length: {result.length_km:.3f} km")
    if result.probabilities is not None:
        click.echo(f"wrote {result.probabilities}")
    click.echo(f"wrote {result.vectors} in {result.seconds:.1f} s")
