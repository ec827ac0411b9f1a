"""``geoccseg info SCENE``: what a scene holds and how many chips it yields."""

from __future__ import annotations

from pathlib import Path

import click

from geoccseg.data.scenes import SceneTrainingData, describe_scene


@click.command("info")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--labels", type=click.Path(path_type=Path), help="Vector or raster labels, any CRS.")
@click.option("--aoi", type=click.Path(path_type=Path), help="Polygons where the labels are complete.")
@click.option("--val-aoi", type=click.Path(path_type=Path), help="Polygons held apart for validation.")
@click.option("--classes", default="road", show_default=True, help="Comma-separated foreground class names.")
@click.option("--class-column", help="Label column holding class names.")
@click.option("--width-m", type=float, help="Width of line labels in metres (default per class: road 6 m).")
@click.option("--bands", help="Comma-separated 1-based input bands (default: all but alpha).")
@click.option("--tile-px", default=256, show_default=True, help="Chip edge in pixels.")
def command(scene, labels, aoi, val_aoi, classes, class_column, width_m, bands, tile_px) -> None:
    """Print size, bands, CRS, pixel size and nodata share of SCENE, and the chips it yields."""
    band_list = [int(b) for b in bands.split(",")] if bands else None
    facts = describe_scene(scene, band_list)
    data = None
    if labels or aoi:  # validated before anything is printed, so errors stay one line
        data = SceneTrainingData(
            [scene], labels=labels, aoi=aoi, val_aoi=val_aoi, classes=classes.split(","), class_column=class_column,
            width_m=width_m, bands=band_list, tile_px=tile_px,
        )
    x_m, y_m = facts["pixel_size_m"]
    click.echo(f"scene:       {facts['path']}")
    click.echo(f"size:        {facts['width']} x {facts['height']} pixels")
    click.echo(f"bands:       {facts['band_count']} ({', '.join(facts['dtypes'])}); input bands {facts['input_bands']}")
    click.echo(f"crs:         {facts['crs']}")
    click.echo(f"pixel size:  {x_m:.3f} m x {y_m:.3f} m")
    click.echo(f"valid mask:  {facts['mask']}; nodata share {100 * facts['nodata_share']:.1f} %")
    if data is not None:
        n_lab = len(data.labeled_queries()) if labels else 0
        n_unl = len(data.unlabeled_queries())
        n_val = len(data.validation_items()) if val_aoi else 0
        click.echo(f"chips:       {n_lab} labeled, {n_unl} unlabeled" + (f", {n_val} validation" if val_aoi else "") + f" ({tile_px} px, non-overlapping grid)")
