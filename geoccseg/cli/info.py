"""``geoccseg info SCENE``: what a scene holds and how many chips it yields."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoccseg.cli.kinds import refuse_options
from geoccseg.cli.verbosity import verbosity_options
from geoccseg.io.scene import describe_scene, parse_bands
from geoccseg.models.config import check_tile_px


LABEL_ONLY = ("val_aoi", "classes", "class_column", "width_m", "tile_px", "pixel_size_m")
"""Options that only change the chip and label counts (given with --labels)."""


@click.command("info")
@click.argument("scene", metavar="SCENE")  # a string: a Path would fold a URL's "//"
@click.option("--labels", type=click.Path(path_type=Path), help="Vector or raster labels, any CRS.")
@click.option("--aoi", type=click.Path(path_type=Path), help="Polygons where the labels are complete.")
@click.option("--val-aoi", type=click.Path(path_type=Path), help="Polygons held apart for validation.")
@click.option("--classes", default="road", show_default=True, help="Comma-separated foreground class names.")
@click.option("--class-column", help="Label column holding class names.")
@click.option("--width-m", type=float, help="Width of line labels in metres (default per class: road 6 m).")
@click.option("--bands", help="Comma-separated 1-based input bands (default: all but alpha).")
@click.option("--tile-px", default=256, show_default=True, help="Chip edge in pixels (a multiple of 32).")
@click.option("--pixel-size-m", type=float, help="Count chips and labeled pixels at this pixel size (default: the scene's).")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object on stdout.")
@verbosity_options
@click.pass_context
def command(ctx, scene, labels, aoi, val_aoi, classes, class_column, width_m, bands, tile_px, pixel_size_m, as_json) -> None:
    """Print size, bands, CRS, pixel size and nodata share of SCENE; with --labels, the chips it yields and the labeled pixels.

    SCENE is a GeoTIFF file, or anything rasterio opens (https://..., /vsicurl/..., s3://...).
    """
    band_list = parse_bands(bands)
    check_tile_px(tile_px)
    if not labels:  # they describe labeled chips, which only labels give (an AOI says where they are complete)
        refuse_options(ctx, ("aoi", *LABEL_ONLY), "counting labeled chips, with --labels", " or add --labels")
    facts = describe_scene(scene, band_list)
    if labels:  # validated before anything is printed, so errors stay one line
        from geoccseg.data.scenes import SceneTrainingData  # PyTorch and TorchGeo: only to count chips

        data = SceneTrainingData(
            [scene], labels=labels, aoi=aoi, val_aoi=val_aoi, classes=[c.strip() for c in classes.split(",") if c.strip()], class_column=class_column,
            width_m=width_m, bands=band_list, tile_px=tile_px, pixel_size_m=pixel_size_m,
        )
        facts.update(data.describe())
    if as_json:
        click.echo(json.dumps(facts))
        return
    x_m, y_m = facts["pixel_size_m"]
    click.echo(f"scene:       {facts['path']}")
    click.echo(f"size:        {facts['width']} x {facts['height']} pixels")
    click.echo(f"bands:       {facts['band_count']} ({', '.join(facts['dtypes'])}); input bands {facts['input_bands']}")
    click.echo(f"crs:         {facts['crs']}")
    click.echo(f"pixel size:  {x_m:.3f} m x {y_m:.3f} m")
    rule = f" (a pixel is missing where {facts['nodata_in']} holds the value)" if facts["nodata_in"] else ""
    click.echo(f"valid mask:  {facts['mask']}{rule}; nodata share {100 * facts['nodata_share']:.1f} %")
    if "chips" in facts:
        chips = facts["chips"]
        click.echo(
            f"chips:       {chips['labeled']} labeled, {chips['unlabeled']} unlabeled" + (f", {chips['validation']} validation" if val_aoi else "")
            + f" ({tile_px} px at {chips['pixel_size_m']:.2f} m, non-overlapping grid)"
            + ("; the labeled chips serve as unlabeled ones too" if chips["unlabeled_from_labeled"] else "")
        )
    if "label_pixels" in facts:
        counts = ", ".join(f"{name} {n:,}" for name, n in facts["label_pixels"].items())
        click.echo(f"labeled px:  {counts} (inside the labeled area, valid pixels at {facts['chips']['pixel_size_m']:.2f} m)")
