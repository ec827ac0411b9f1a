"""``geoccseg demo``: predict the shipped sample scene with the shipped road model."""

from __future__ import annotations

import click

from geoccseg.demo import run_demo


@click.command("demo")
@click.option("-o", "--out", "out_dir", default="geoccseg-demo", show_default=True, help="Output folder (its demo files are replaced).")
@click.option("--model", default="road", show_default=True, help="Shipped model name (road, crack) or a bundle folder.")
def command(out_dir: str, model: str) -> None:
    """Run the main job on the sample scene: probability COG, roads.gpkg and preview.png."""
    result = run_demo(out_dir, model=model)
    click.echo(result.summary())
