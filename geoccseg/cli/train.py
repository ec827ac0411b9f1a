"""``geoccseg train``: every :class:`TrainConfig` field is a flag; flags override ``--config`` YAML."""

from __future__ import annotations

import dataclasses
import sys
import typing

import click

from geoccseg.io.scene import parse_bands
from geoccseg.train import TrainConfig, train
from geoccseg.train.signals import TrainingStopped

# flags whose names differ from the config field, or that take several values
RENAMED = {"scenes": "--scene", "out": "--out", "unlabeled": "--unlabeled"}
MULTIPLE = {"scenes", "unlabeled", "images", "masks", "images_pixel_size_m"}
COMMA_LISTS = {"classes": str, "bands": int, "labeled_names": str}
HELP = {
    "scenes": "GeoTIFF scene (repeatable).",
    "labels": "Vector or raster labels (any CRS).",
    "aoi": "Polygons where labels are complete (default: the whole scene).",
    "val_aoi": "Polygons held apart for validation.",
    "images": "Folder of photos (photo-folder training); repeat for several sources.",
    "masks": "Folder of masks matched to --images by file name; one per --images, in the same order.",
    "images_pixel_size_m": "Pixel size of each --images folder, metres, in the same order; each is resampled to --pixel-size-m.",
    "labeled_fraction": "Share of the photos that carry labels, e.g. 0.035.",
    "out": "Output folder for the model bundle, metrics and checkpoints.",
    "resume": "Continue the run in --out from its last checkpoint (never unpickled).",
    "checkpoint_every": "Steps between checkpoints for --resume (default: 50).",
    "checkpoint_minutes": "Minutes between checkpoints for --resume, whichever comes first (default: 10).",
    "max_steps": "Optimiser steps budget.",
    "max_minutes": "Wall-clock budget in minutes.",
    "pixel_size_m": "Train at this pixel size (metres); photos: their declared pixel size.",
    "classes": "Comma-separated foreground class names.",
    "bands": "Comma-separated 1-based input bands.",
    "loss": "imbalance (class-balanced CE + Dice) or ce (plain, for the ablation).",
    "fusion": "multi (all encoder stages) or single (last stage only).",
    "encoder": "light (small net trained from scratch), efficientnet-lite0 (ImageNet-pretrained, from a pip package), resnet18/34/50 (from scratch).",
    "pretrained": "Start the encoder from its ImageNet weights (default: yes when the encoder has them).",
    "init_from": "Fine-tune a model: a shipped name (road, crack) or a bundle folder; keeps its architecture, normalisation and pixel size.",
    "devices": "Devices per node (DDP when more than one).",
}


def _base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _options(func):
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        name = f.name
        flag = RENAMED.get(name, "--" + name.replace("_", "-"))
        tp = _base_type(hints[name])
        help_text = HELP.get(name, f"(default: {f.default if f.default is not dataclasses.MISSING else '[]'})")
        if name in MULTIPLE:
            item = typing.get_args(tp)[0] if typing.get_args(tp) else str
            opt = click.option(flag, name, multiple=True, type=item, help=help_text)
        elif name in COMMA_LISTS:
            opt = click.option(flag, name, type=str, default=None, help=help_text)
        elif tp is bool:
            opt = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        else:
            opt = click.option(flag, name, type=tp, default=None, help=help_text)
        if name == "out":
            opt = click.option("-o", "--out", "out", type=str, default=None, help=help_text)
        func = opt(func)
    return func


@click.command("train", context_settings={"max_content_width": 120})
@click.option("--config", "config_path", type=click.Path(), help="YAML file of options; flags override it.")
@_options
def command(config_path, **flags) -> None:
    """Train a model with few labels (semi-supervised) and write a model bundle.

    \b
    GeoTIFF scenes:  geoccseg train --scene a.tif --labels roads.gpkg --aoi labeled.gpkg -o model_dir
    photo folders:   geoccseg train --images DIR --masks DIR --labeled-fraction 0.035 -o model_dir
    """
    given = {}
    for key, value in flags.items():
        if value is None or (key in MULTIPLE and not value):
            continue
        if key == "bands":
            value = parse_bands(value)
        elif key in COMMA_LISTS:
            value = [COMMA_LISTS[key](v) for v in value.split(",") if v]
        elif key in MULTIPLE:
            value = list(value)
        given[key] = value
    config = TrainConfig.from_yaml(config_path, given) if config_path else TrainConfig.from_dict(given)
    try:
        result = train(config)
    except TrainingStopped as exc:  # SIGINT / SIGTERM: one line, and the shell's status for that signal
        click.echo(f"geoccseg: {exc}", err=True)
        sys.exit(exc.exit_code)
    if result.validation:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in result.validation.items() if k.startswith(("f1_", "iou_")))
        click.echo(f"validation (EMA teacher): {scores}")
    click.echo(f"trained {result.steps} steps in {result.seconds:.0f} s on {result.device}; bundle in {result.out}")
