"""``geoccseg train``: every :class:`TrainConfig` field is a flag; flags override ``--config`` YAML.

``geoccseg train --help`` lists the flags under the headings of :data:`SECTIONS`, each with a
sentence, its unit and its real default (the dataclass default, or what an unset option means).
"""

from __future__ import annotations

import dataclasses
import sys
import typing

import click

from geoccseg.cli.sections import SectionedCommand
from geoccseg.cli.verbosity import detail, say, show_progress, verbosity_options
from geoccseg.io.labels import DEFAULT_WIDTH_M
from geoccseg.io.scene import parse_bands
from geoccseg.train.config import ACCELERATORS, PRECISIONS, TrainConfig
from geoccseg.train.signals import TrainingStopped

# flags whose names differ from the config field, or that take several values
RENAMED = {"scenes": "--scene", "out": "--out", "unlabeled": "--unlabeled"}
MULTIPLE = {"scenes", "unlabeled", "images", "masks", "images_pixel_size_m"}
COMMA_LISTS = {"classes": str, "bands": int, "labeled_names": str}
#: Fields the command sets itself rather than from a flag: progress bars follow -q and the terminal.
NOT_FLAGS = {"progress"}

_WIDTHS = ", ".join(f"{name} {width:g} m" for name, width in DEFAULT_WIDTH_M.items())

#: Heading of ``train --help`` -> {field: (help sentence with its unit, default as shown)}. A default of None is
#: the dataclass default (shown unless it is empty); a string says what an unset option means.
SECTIONS: dict[str, dict[str, tuple[str, str | None]]] = {
    "Data: GeoTIFF scenes": {
        "scenes": ("GeoTIFF scene with a CRS (repeatable; all with the same bands).", None),
        "labels": ("Vector (lines or polygons) or raster labels, in any CRS.", None),
        "aoi": ("Polygons where the labels are complete; chips outside them are unlabeled.",
                "the labels are complete over every scene they overlap"),
        "val_aoi": ("Polygons held apart for validation (never used for training chips).", "no validation"),
        "class_column": ("Label column holding class names.", "every feature is the first class"),
        "width_m": ("Width of line labels when they are burnt into masks, metres.", f"{_WIDTHS}, other classes 3 m"),
        "bands": ("Comma-separated 1-based input bands.", "all bands but alpha"),
    },
    "Data: photo folders": {
        "images": ("Folder of photos; repeat for several sources.", None),
        "masks": ("Folder of masks matched to --images by file name; one per --images, in the same order.", None),
        "images_pixel_size_m": ("Pixel size of each --images folder, metres, in the same order; each is resampled "
                                "to --pixel-size-m (not with --val-images or --unlabeled, which are not).", "every folder at --pixel-size-m"),
        "val_images": ("Folder of validation photos (with --val-masks); replaces --val-fraction.", "--val-fraction of --images"),
        "val_masks": ("Folder of the masks of --val-images.", None),
        "unlabeled": ("Extra folder of unlabeled photos (repeatable).", None),
        "labeled_fraction": ("Share of the (non-validation) photos whose masks are used, 0-1, e.g. 0.035.", None),
        "labeled_names": ("Comma-separated file stems to use as the labeled photos (overrides --labeled-fraction).",
                          "chosen by --labeled-fraction and --seed"),
        "val_fraction": ("Share of the photos held apart for validation, 0-1 (chosen with --seed).", None),
    },
    "Data: both kinds": {
        "classes": ("Comma-separated foreground class names (class index 1, 2, ...).", "road for scenes, crack for photos"),
        "pixel_size_m": ("Train at this pixel size, metres (scenes are resampled; photos: their declared size).",
                         "the scenes' own (scenes more than 1.5x apart need it); photos: unknown; with --init-from the starting model's"),
        "tile_px": ("Chip edge, pixels (a multiple of 32, at least 64).", None),
    },
    "Model": {
        "init_from": ("Fine-tune a model: a shipped name (road, crack) or a bundle folder; keeps its architecture, "
                      "normalisation and pixel size (the options below are then refused).", "train from scratch"),
        "encoder": ("light (small net trained from scratch), efficientnet-lite0 (ImageNet-pretrained, from a pip "
                    "package) or resnet18/34/50 (from scratch).", None),
        "pretrained": ("Start the encoder from its ImageNet weights.", "yes when the encoder has them"),
        "encoder_tf_same": ("Build efficientnet-lite0 as TensorFlow trained its ImageNet weights (BatchNorm eps 1e-3, "
                            "'SAME' padding) instead of timm's build (experimental).", None),
        "fusion": ("multi (all encoder stages fused) or single (last stage only, for the ablation).", None),
        "decoder_channels": ("Channels each encoder stage is projected to in the fusion decoder.", None),
        "embed_dim": ("Size of the projection embeddings of the contrastive loss.", None),
    },
    "Method": {
        "loss": ("imbalance (class-balanced CE + region term) or ce (plain cross-entropy, for the ablation).", None),
        "class_weighting": ("Class weights of the cross-entropy: effective (effective number), inv_sqrt or none.", None),
        "class_weight_beta": ("Beta of the effective number, 0-1: larger favours rare classes more.", None),
        "region": ("Region term of the imbalance loss: dice, tversky or none.", None),
        "tversky_alpha": ("Tversky weight of false positives, 0-1.", None),
        "tversky_beta": ("Tversky weight of false negatives, 0-1.", None),
        "pseudo": ("Pseudo-label loss on the teacher's high-confidence pixels of unlabeled chips.", None),
        "contrastive": ("Confidence-level contrastive loss.", None),
        "distribution_alignment": ("Rescale the teacher's probabilities so pseudo-labels hold each class in its labeled "
                                   "share.", None),
        "bg_margin_px": ("Background pseudo-labels only where no foreground is within this distance, pixels; 0: off.", None),
        "pseudo_loss": ("Loss of the pseudo-labels: imbalance (as the labels') or ce (plain cross-entropy).", None),
        "pseudo_centreline_px": ("Confident foreground pseudo-labels only within this many pixels of their skeleton (the "
                                 "labels' half-width); auto: measured on the labeled chips; 0: off.", None),
        "feature_perturbation": ("Channel dropout (0-1) of a second student pass on the teacher's view, trained on the "
                                 "same pseudo-labels; 0: off.", None),
        "tau_high": ("Confidence (probability 0-1) from which the background is high-confidence.", None),
        "tau_high_fg": ("Confidence (probability 0-1) from which a foreground class is high-confidence.", None),
        "tau_low": ("Confidence (probability 0-1) from which a pixel is low-confidence (below: unreliable).", None),
        "temperature": ("Temperature of the contrastive InfoNCE loss.", None),
        "anchors_per_class": ("Contrastive anchors sampled per class and step (embeddings at stride 4).", None),
        "negatives_per_class": ("Contrastive negatives sampled per class and step (embeddings at stride 4).", None),
        "queue_size": ("Teacher embeddings kept per class across steps for the prototypes.", None),
        "lambda_pl": ("Weight of the pseudo-label loss after its ramp-up.", None),
        "lambda_con": ("Weight of the contrastive loss after its ramp-up.", None),
        "unlabeled_start_steps": ("Optimiser steps on the labels alone before the unlabeled terms start.", "max-steps / 6"),
        "rampup_steps": ("Length of the sigmoid ramp-up of the unlabeled terms, in optimiser steps.", "2 x max-steps / 3"),
        "ema_momentum": ("Momentum of the EMA teacher, 0-1.", None),
        "ema_warmup_steps": ("Optimiser steps at the start during which the teacher copies the student.", None),
        "appearance_augment": ("Photometric jitter and random inversion of the labeled images too (for models meant "
                               "for other regions or sensors).", None),
        "appearance_invert_p": ("Probability of the inversion within --appearance-augment, 0-1; give 0 for cracks (darker than their surface in every photo).", None),
        "per_image_norm": ("Normalise each photo by its own 2nd/98th percentiles (training and prediction), for photos "
                           "whose brightness differs between sets.", None),
        "crop_area_max": ("Largest area of the random crop as a fraction of the chip, 0.5-16 (above 1 zooms out).", None),
        "foreground_share": ("Share of each step's labeled chips drawn to hold a labeled road or crack, 0-1 (few "
                             "labeled images, some without any).", None),
    },
    "Optimisation": {
        "batch_size": ("Labeled chips per step.", None),
        "unlabeled_batch_size": ("Unlabeled chips per step.", None),
        "lr": ("Peak learning rate of AdamW (linear warm-up, cosine decay to 5 %).", None),
        "encoder_lr_scale": ("Learning rate of the encoder as a share of --lr, 0-1 (the decoder takes --lr).", None),
        "weight_decay": ("Weight decay of AdamW.", None),
        "seed": ("Random seed of the labeled choice, the sampling and the augmentations.", None),
    },
    "Budget": {
        "max_steps": ("Length of the training, in optimiser steps.", None),
        "max_minutes": ("Wall-clock limit of this command, minutes (training stops at whichever of this and --max-steps comes first; a resumed run gets its full minutes again; the schedule is laid over --max-steps, and a limit that ends the run well before it is warned about).", "no limit"),
        "val_every": ("Optimiser steps between validations, the last step validated too (the bundle keeps the best).", None),
    },
    "Hardware": {
        "accelerator": (f"Where training runs: {', '.join(ACCELERATORS)}.", None),
        "devices": ("Devices per node (DDP when more than one).", None),
        "num_nodes": ("Machines (DDP when more than one).", None),
        "precision": (f"Lightning precision: {', '.join(PRECISIONS)}.", "bf16-mixed on CUDA, else 32-true"),
        "num_workers": ("Data loader worker processes; 0 reads chips in the training process.", "0 on the CPU, up to 4 per GPU on CUDA"),
    },
    "Output": {
        "out": ("Output folder for the model bundle, metrics and checkpoints.", None),
        "resume": ("Continue the run in --out from its last checkpoint (never unpickled).", None),
        "checkpoint_every": ("Optimiser steps between checkpoints for --resume.", None),
        "checkpoint_minutes": ("Also a checkpoint at least this often, minutes (whichever of the two comes first).", None),
    },
}


class NumberOrAuto(click.ParamType):
    """A number, or the word ``auto`` (a ``float | str`` field such as ``pseudo_centreline_px``)."""

    name = "NUMBER|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, float):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor auto", param, ctx)


def _base_type(tp):
    """The click type of a field: its type, or :class:`NumberOrAuto` for ``float | str``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp if not args else args[0] if len(args) == 1 else NumberOrAuto()


def _help(name: str, default) -> str:
    """The help of field ``name``: its sentence and its default (:data:`SECTIONS`)."""
    sentence, shown = next(fields[name] for fields in SECTIONS.values() if name in fields)
    if shown is None:
        if default in (None, [], dataclasses.MISSING):
            return sentence
        shown = ("yes" if default else "no") if isinstance(default, bool) else f"{default:g}" if isinstance(default, float) else default
    return f"{sentence}  [default: {shown}]"


def _options(func):
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        name = f.name
        if name in NOT_FLAGS:
            continue
        flag = RENAMED.get(name, "--" + name.replace("_", "-"))
        tp = _base_type(hints[name])
        help_text = _help(name, f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
        if name in MULTIPLE:
            opt = click.option(flag, name, multiple=True, type=tp, help=help_text)
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


@click.command("train", cls=SectionedCommand, sections={title: list(fields) for title, fields in SECTIONS.items()},
               context_settings={"max_content_width": 120})
@click.option("--config", "config_path", type=click.Path(), help="YAML file of options; flags override it.")
@_options
@verbosity_options
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
            value = [COMMA_LISTS[key](v.strip()) for v in value.split(",") if v.strip()]  # "road, crack"
        elif key in MULTIPLE:
            value = list(value)
        given[key] = value
    given["progress"] = show_progress()
    config = TrainConfig.from_yaml(config_path, given) if config_path else TrainConfig.from_dict(given)
    detail("effective configuration:\n" + config.to_yaml().rstrip())
    from geoccseg.train.run import train  # PyTorch and Lightning: not for --help or a mistyped option

    try:
        result = train(config)
    except TrainingStopped as exc:  # SIGINT / SIGTERM: one line, and the shell's status for that signal
        click.echo(f"geoccseg: {exc}", err=True)
        sys.exit(exc.exit_code)
    if result.validation:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in result.validation.items() if k.startswith(("f1_", "iou_")) and k != "f1_at_threshold")
        chosen = result.validation.get("threshold")
        say(f"validation (EMA teacher): {scores}" + ("" if chosen is None else f"; decision threshold {chosen:.2f} (F1 "
            f"{result.validation['f1_at_threshold']:.3f} there), chosen on the validation images and kept in the bundle"))
    click.echo(f"trained {result.steps} steps in {result.seconds:.0f} s on {result.device}; bundle in {result.out}")
