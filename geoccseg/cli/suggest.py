"""``geoccseg suggest``: where to label next, as squares of scenes (GIS polygons) or ranked photos (CSV)."""

from __future__ import annotations

import glob
from pathlib import Path

import click

from geoccseg.cli.kinds import refuse_options
from geoccseg.errors import GeoccsegError
from geoccseg.cli.run_options import run_options
from geoccseg.cli.verbosity import say, show_progress, verbosity_options
from geoccseg.suggest.select import EMBEDDINGS, STRATEGIES

SCENE_ONLY = ("aoi", "size_m", "block_px", "workers", "scheduler")


@click.command("suggest")
@click.argument("inputs", nargs=-1, required=True, metavar="SCENE... | FOLDER | PHOTO... | 'GLOB'")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Scenes: the squares (.gpkg, .geojson, .fgb or .shp). Photos: the ranking (.csv).")
@click.option("--model", help="Shipped model (road, crack) or a bundle folder [road for scenes, crack for photos].")
@click.option("-n", "--count", "n", type=int, default=5, show_default=True, help="How many areas (or photos) to suggest.")
@click.option("--size-m", type=float, help="Scenes: edge of the squares in metres [2 training chips of the model].")
@click.option("--aoi", type=click.Path(path_type=Path), help="Scenes: polygons already labeled; no square overlapping them is suggested.")
@click.option("--labels", type=click.Path(path_type=Path),
              help="Scenes: labels already drawn (no square holding one is suggested). Photos: folder of the masks of the photos already labeled.")
@run_options("Scenes", tile_floor=256)
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Scoring engine: onnx (ONNX Runtime, CPU; the network's scoring graph, exported once per model into the user "
                   "cache) or torch (PyTorch); auto: onnx on the CPU, torch on CUDA.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="acquisition: the score (what labels would teach the model); coverage: the most typical area or photo "
                   "of each kind not yet labeled (embedding clusters, no score); random: the baseline "
                   "[acquisition for scenes, coverage for photos].")
@click.option("--embedding", type=click.Choice(EMBEDDINGS),
              help="Photos: whose view of a photo the coverage clusters and compares: model (8 channels of the model's features) "
                   "or imagenet (the frozen ImageNet encoder's, the same whatever the labels; ahead on aerial road crops, "
                   "the model's on crack photos: README, Where to label next) [model].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the coverage clustering and of the random draw.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.pass_context
@verbosity_options
def command(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: Path,
    model: str | None,
    n: int,
    size_m: float | None,
    aoi: Path | None,
    labels: Path | None,
    tile_px: int | None,
    overlap_px: int,
    block_px: int,
    batch_size: int | None,
    device: str,
    engine: str,
    workers: int | None,
    scheduler: str | None,
    strategy: str | None,
    embedding: str | None,
    seed: int,
    overwrite: bool,
) -> None:
    """Suggest where to label next.

    Georeferenced scenes (GeoTIFFs with a CRS) give the best N squares outside the labeled AOI,
    ranked by what their labels would teach the model (low confidence on and near likely roads,
    disagreement of a flipped view, road density, spread and novelty), as polygons with rank,
    score and its parts; --strategy coverage chooses the most typical area of each kind not yet
    labeled instead. Photos (a folder, files or a quoted glob pattern) give a CSV with one row
    per photo, ranked, the best N marked suggested; photos are chosen by coverage unless
    --strategy says otherwise (measured: the score lost to random photos, coverage did not).
    """
    # PyTorch and the scoring stack: not for --help or a mistyped option
    from geoccseg.data.photos import assign_crs_hint, find_photos, tiff_read_as_photo
    from geoccseg.inference.pipeline import is_scene
    from geoccseg.io.scene import is_gdal_path
    from geoccseg.inference.predict import PredictOptions
    from geoccseg.suggest import SuggestParams, suggest_areas, suggest_photos

    options = PredictOptions(tile_px=tile_px, overlap_px=overlap_px, block_px=block_px, batch_size=batch_size, device=device,
                             engine=engine, workers=workers, scheduler=scheduler)
    scenes = [is_scene(item) for item in inputs]
    if any(scenes) and not all(scenes):
        other = next(item for item, scene in zip(inputs, scenes) if not scene)
        if not is_gdal_path(other) and not glob.has_magic(str(other)) and not Path(other).exists():  # mistyped, most likely
            raise GeoccsegError(f"{other} does not exist; check its name")
        raise GeoccsegError(f"{other} is not a georeferenced scene (a GeoTIFF or VRT with a CRS) while "
                            f"{inputs[scenes.index(True)]} is; give scenes only or photos only")
    if all(scenes):
        refuse_options(ctx, ("embedding",), "photos", " for scenes (squares are compared by the model's embedding)")
        strategy = strategy or "acquisition"
        result = suggest_areas(inputs, output, model=model or "road", n=n, size_m=size_m, aoi=aoi, labels=labels,
                               options=options, strategy=strategy, seed=seed, overwrite=overwrite, progress=show_progress())
        for row in result.areas.itertuples():
            if strategy == "acquisition":
                say(f"{row.rank}. score {row.score:.3f} (low confidence {row.low_confidence:.3f}, disagreement "
                    f"{row.disagreement:.3f}, density {row.density:.3f}, spread {row.spread:.2f}, novelty {row.novelty:.2f})")
            else:
                say(f"{row.rank}. acquisition {row.acquisition:.3f}, typicality {row.typicality:.2f} ({strategy})")
        if len(result.areas) < n:
            say(f"note: only {len(result.areas)} of {n} squares of {result.size_m:g} m fit outside the labeled areas and nodata "
                f"({result.candidates} candidates)", err=True)
        click.echo(f"wrote {result.path} ({len(result.areas)} squares of {result.size_m:g} m) in {result.seconds:.1f} s")
        return
    photo_files = find_photos(inputs)  # a mistyped scene path: "does not exist" comes before the options
    tiff = tiff_read_as_photo(photo_files)
    refuse_options(ctx, SCENE_ONLY, "georeferenced scenes",
                   f" for photos; {tiff} has no CRS and is read as a photo: if it is a scene, {assign_crs_hint(tiff)}" if tiff else " for photos")
    photos = suggest_photos(photo_files, output, model=model or "crack", n=n, labels=labels,
                            options=options, params=SuggestParams(embedding=embedding) if embedding else None,
                            strategy=strategy or "coverage", seed=seed, overwrite=overwrite, progress=show_progress())
    for name in photos.suggested:
        say(name)
    click.echo(f"wrote {photos.path} ({len(photos.table)} photos, {len(photos.suggested)} suggested) in {photos.seconds:.1f} s")
