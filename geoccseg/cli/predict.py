"""``geoccseg predict``: a scene to a probability COG and GIS polylines, or photos to a folder of
crack probabilities, measurements and a summary."""

from __future__ import annotations

from pathlib import Path

import click

from geoccseg.cli.kinds import refuse_options
from geoccseg.cli.run_options import run_options
from geoccseg.cli.vectorize_options import NAMES as VECTORIZER_OPTIONS, graph_options, vectorize_options
from geoccseg.cli.verbosity import detail, say, show_progress, verbosity_options
from geoccseg.inference.choices import ENGINES, OVERLAY_AUTO_MAX, PRECISIONS, PROB_DTYPE_ALIASES, PROB_DTYPES
from geoccseg.vectorize.network import DEFAULT_SNAP_M

SCENE_ONLY = ("prob_out", "prob_dtype", "block_px", "workers", "scheduler", "graph", "graph_snap_m", "confidence_out",
              *(name for name in VECTORIZER_OPTIONS if name != "threshold"))
PHOTO_ONLY = ("pixel_size_mm", "overlay", "keep_going", "resume", "confidence")


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True, metavar="SCENE | PHOTO... | FOLDER | 'GLOB'")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Scene: the lines file (.gpkg one layer per class, .geojson, .fgb or .shp). Photos: the output folder.")
@click.option("--model", help="Shipped model (road, crack) or a bundle folder written by `geoccseg train` [road for a scene, crack for photos].")
@click.option("--prob-out", type=click.Path(path_type=Path),
              help="Scene: also keep the probability Cloud-Optimised GeoTIFF here (.tif or .tiff).")
@click.option("--prob-dtype", type=click.Choice(PROB_DTYPES + tuple(PROB_DTYPE_ALIASES)), default="uint8", show_default=True,
              help="Scene: probability raster type: uint8 (p x 255) or float32 (float16 is accepted as another name of float32).")
@click.option("--confidence-out", type=click.Path(path_type=Path),
              help="Scene: also write the model's confidence COG here (.tif): max class probability x 255 and level 0 high / 1 low / 2 unreliable.")
@run_options("Scene", tile_floor=512)
@click.option("--engine", default="auto", show_default=True, metavar="|".join(ENGINES),
              help="Inference engine: torch (PyTorch), onnx (ONNX Runtime, CPU; the network is exported once per model into "
                   "the user cache) or openvino (OpenVINO, CPU, the same export; pip install 'geoccseg[openvino]'); "
                   "auto: torch on CUDA, onnx on the CPU (openvino at bf16 where installed).")
@click.option("--precision", default="fp32", show_default=True, metavar="|".join(PRECISIONS),
              help="CPU precision (experimental): bf16 runs the network in bfloat16 on the openvino engine (else torch "
                   "autocast), int8 a quantised export on the onnx engine (calibrated on the shipped sample); CUDA always runs bf16 autocast.")
@click.option("--pixel-size-mm", type=float, help="Photos: size of one photo pixel in millimetres, for the *_mm columns [the model's, else empty].")
@click.option("--overlay/--no-overlay", default=None, help=f"Photos: draw the cracks over each photo in OUT_DIR/overlay [on for up to {OVERLAY_AUTO_MAX} photos].")
@click.option("--confidence", is_flag=True, help="Photos: also write OUT_DIR/confidence/<stem>.png, the level of each pixel (0 high, 1 low, 2 unreliable).")
@click.option("--keep-going/--no-keep-going", default=True, show_default=True,
              help="Photos: skip an unreadable photo (its reason in the summary and on stderr; exit status 1) instead of stopping.")
@click.option("--resume", is_flag=True, help="Photos: keep the photos whose outputs are complete, predict the others.")
@graph_options(prefix="Scene: ")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (photos: redo every photo).")
@vectorize_options(prefix="Scene: ")
@click.pass_context
@verbosity_options
def command(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: Path,
    model: str | None,
    prob_out: Path | None,
    prob_dtype: str,
    confidence_out: Path | None,
    tile_px: int | None,
    overlap_px: int,
    block_px: int,
    batch_size: int | None,
    device: str,
    engine: str,
    precision: str,
    workers: int | None,
    scheduler: str | None,
    vectorizer: dict[str, float],
    pixel_size_mm: float | None,
    overlay: bool | None,
    confidence: bool,
    keep_going: bool,
    resume: bool,
    graph_snap_m: float | None,
    overwrite: bool,
) -> None:
    """Predict roads or cracks.

    A georeferenced scene (GeoTIFF with a CRS) gives polylines in OUTPUT. Photos (JPEG, PNG, TIFF
    without georeferencing), folders of photos or quoted glob patterns give the folder OUTPUT:
    probability/<stem>.png, cracks.gpkg (one line per crack branch, pixel coordinates),
    summary.csv and summary.json (one row per photo) and overlay/<stem>.jpg (by default for up to
    500 photos, see --overlay).
    """
    # PyTorch and the prediction stack: not for --help or a mistyped option
    from geoccseg.data.photos import assign_crs_hint, find_photos, tiff_read_as_photo
    from geoccseg.inference.photos import output_folders, predict_photos
    from geoccseg.inference.pipeline import is_scene, run_predict
    from geoccseg.inference.predict import PredictOptions
    from geoccseg.vectorize import VectorizeParams

    if is_scene(inputs):
        refuse_options(ctx, PHOTO_ONLY, "photos")
        if prob_dtype in PROB_DTYPE_ALIASES:
            say(f"note: --prob-dtype {prob_dtype} is written as {PROB_DTYPE_ALIASES[prob_dtype]} "
                "(GeoTIFF Float16 needs GDAL 3.11 or later)", err=True)
        options = PredictOptions(
            tile_px=tile_px, overlap_px=overlap_px, block_px=block_px, batch_size=batch_size, device=device, engine=engine,
            precision=precision, workers=workers, scheduler=scheduler, prob_dtype=prob_dtype,
        )
        threshold, low_threshold = vectorizer.pop("threshold", None), vectorizer.pop("low_threshold", None)
        result = run_predict(
            inputs[0], output, model=model or "road", prob_out=prob_out, options=options, params=VectorizeParams(**vectorizer),
            threshold=threshold, low_threshold=low_threshold, overwrite=overwrite,
            graph=graph_snap_m is not None, graph_snap_m=DEFAULT_SNAP_M if graph_snap_m is None else graph_snap_m,
            confidence_out=confidence_out, progress=show_progress(),
        )
        detail(f"vectoriser: {result.params}")
        for name, count in result.lines.items():
            say(f"{name}: {count} lines")
        say(f"total length: {result.length_km:.3f} km")
        if result.probabilities is not None:
            say(f"wrote {result.probabilities}")
        if confidence_out is not None:
            say(f"wrote {confidence_out}")
        click.echo(f"wrote {result.vectors} in {result.seconds:.1f} s")
        return
    photo_files = find_photos(inputs, exclude=output_folders(output))  # what is wrong with the inputs comes before the options
    tiff = tiff_read_as_photo(photo_files)
    refuse_options(ctx, SCENE_ONLY, "georeferenced scenes",
                   f"; {tiff} has no CRS and is read as a photo: if it is a scene, {assign_crs_hint(tiff)}" if tiff
                   else "; photos get confidence/<stem>.png with --confidence" if confidence_out is not None else "")
    options = PredictOptions(tile_px=tile_px, overlap_px=overlap_px, batch_size=batch_size, device=device, engine=engine,
                             precision=precision)
    photos = predict_photos(
        photo_files, output, model=model or "crack", options=options, threshold=vectorizer.get("threshold"),
        pixel_size_mm=pixel_size_mm, overlay=overlay, confidence=confidence, keep_going=keep_going, resume=resume,
        overwrite=overwrite, progress=show_progress(),
        on_skip=lambda photo, reason: click.echo(f"geoccseg: skipped {photo}: {reason}", err=True),
    )
    say(f"photos: {len(photos.rows)} ({photos.predicted} predicted, {photos.resumed} resumed, {len(photos.skipped)} skipped)")
    say(f"crack branches: {photos.branches}, {photos.total_length_px:.1f} px long in all")
    click.echo(f"wrote {output} in {photos.seconds:.1f} s")
    if photos.skipped:
        ctx.exit(1)
