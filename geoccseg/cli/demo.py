"""``geoccseg demo``: the shipped road model on the sample scene, then "label a strip, map the rest"."""

from __future__ import annotations

import sys

import click

from geoccseg.cli.verbosity import show_progress, verbosity_options
from geoccseg.demo import STEPS
from geoccseg.train.signals import TrainingStopped


@click.command("demo")
@click.option("-o", "--out", "out_dir", default="geoccseg-demo", show_default=True,
              help="Output folder (created); files of an earlier demo in it are replaced only with --overwrite.")
@click.option("--quick", is_flag=True, help="Only the shipped road model on the sample (seconds; no fine-tuning).")
@click.option("--model", default="road", show_default=True, help="Road model to run and fine-tune: shipped name or a bundle folder.")
@click.option("--steps", type=int, default=STEPS, show_default=True, help="Fine-tuning steps on the labeled strip.")
@click.option("--overwrite", is_flag=True, help="Replace the demo's files where the folder already holds them.")
@verbosity_options
def command(out_dir: str, quick: bool, model: str, steps: int, overwrite: bool) -> None:
    """Map the sample scene's roads with the shipped model, then label its western 40 %, fine-tune
    on it and map the rest (1-2 minutes on 2 CPU cores); print both scores on the unlabeled 60 %.
    Writes roads.gpkg, road_probability.tif, labeled_strip.gpkg, roads_fine_tuned.gpkg and preview.png
    (with --quick: roads.gpkg, road_probability.tif and preview.png)."""
    from geoccseg.demo import run_demo  # PyTorch and Lightning: only when the demo runs, not for --help

    try:
        result = run_demo(out_dir, quick=quick, model=model, steps=steps, progress=show_progress(), overwrite=overwrite)
    except TrainingStopped as exc:  # SIGINT / SIGTERM while fine-tuning: one line, the shell's status for it
        click.echo(f"geoccseg: demo stopped while fine-tuning (signal {exc.signum}); the fine-tuned model was not kept", err=True)
        sys.exit(exc.exit_code)
    click.echo(result.summary())
