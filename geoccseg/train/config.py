"""Every training option in one dataclass, readable from YAML and overridable from the CLI.

The effective configuration is saved next to the model (``config.yaml``) so any run can be
repeated with ``geoccseg train --config model_dir/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from geoccseg.errors import GeoccsegError
from geoccseg.models.config import ModelConfig, check_tile_px

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
"""Lightning precision settings accepted by ``--precision``."""
REFUSED_PRECISIONS = {
    p: f"{p} holds the EMA teacher (the model saved) in {p.split('-')[0]}, where its small updates round to nothing; use {p.split('-')[0]}-mixed"
    for p in ("bf16-true", "16-true")
}
"""Lightning precisions refused, with why: the EMA teacher (the saved model) would be held in them."""
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
"""Accelerators accepted by ``--accelerator`` (``auto``: CUDA when PyTorch sees a GPU, else the CPU;
``gpu`` is ``cuda``). Not Apple's MPS: the trainer keeps float64 counts, which MPS has not."""


@dataclass
class TrainConfig:
    """Options of :func:`geoccseg.train.train`. Units are in the names (``_px``, ``_m``, ``_minutes``)."""

    # -- output
    out: str | None = None
    resume: bool = False
    # -- GeoTIFF scenes
    scenes: list[str] = field(default_factory=list)
    labels: str | None = None
    aoi: str | None = None
    val_aoi: str | None = None
    class_column: str | None = None
    width_m: float | None = None
    bands: list[int] | None = None
    # -- photo folders
    # photo folders: one or more, each with its mask folder (same order) and, optionally, its pixel
    # size; folders of another pixel size than ``pixel_size_m`` are resampled to it
    images: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    images_pixel_size_m: list[float] = field(default_factory=list)
    val_images: str | None = None
    val_masks: str | None = None
    unlabeled: list[str] = field(default_factory=list)
    labeled_fraction: float = 1.0
    labeled_names: list[str] | None = None
    val_fraction: float = 0.1
    # -- both
    classes: list[str] | None = None
    pixel_size_m: float | None = None
    tile_px: int = 256
    # -- model
    # Fine-tune: start from this bundle (a shipped name such as "road", or a folder) with its weights,
    # architecture, normalisation and pixel size; the encoder options below are then ignored.
    init_from: str | None = None
    # efficientnet-lite0 (ImageNet-pretrained) is the default: with the same labels and steps it
    # beat the light encoder trained from scratch on both benchmarks (README, Results)
    encoder: str = "efficientnet-lite0"
    # ImageNet weights for the encoder (efficientnet-lite0 has them, from a pip package); None: use
    # them when the encoder has them. Never read when fine-tuning (init_from) or predicting.
    pretrained: bool | None = None
    # Build efficientnet-lite0 as TensorFlow trained its ImageNet weights (BatchNorm eps 1e-3,
    # 'SAME' padding) instead of timm's build (eps 1e-5, symmetric padding); recorded in the bundle
    encoder_tf_same: bool = False
    fusion: str = "multi"
    decoder_channels: int = 64
    embed_dim: int = 64
    # Photometric jitter and intensity inversion of the labelled images too, for models that must
    # carry over to other regions and sensors (the shipped road model); off for in-domain work.
    appearance_augment: bool = False
    # Probability of the intensity inversion within appearance_augment (per labeled chip): dark
    # asphalt among light roofs and the reverse (roads); 0 for cracks, which are always darker than
    # their surface.
    appearance_invert_p: float = 0.3
    # Normalise each photo by its own 2nd/98th percentiles, in training and in prediction, instead
    # of the training set's (geoccseg/io/normalize.py): for photos whose brightness and contrast
    # differ between sets (the shipped crack model; README, Cracks in photos). Photo folders only.
    per_image_norm: bool = False
    # Largest area of the random crop as a fraction of the chip (smallest: 0.5); above 1 also
    # zooms out, so objects shrink by up to 1/sqrt(crop_area_max): for thinner cracks or roads
    # than the labeled ones.
    crop_area_max: float = 1.0
    # Share of each batch's labeled chips drawn to hold a labeled road or crack pixel (at a random
    # place in the chip), the rest anywhere: nnU-Net's foreground oversampling (a third there).
    # With few labeled images, some of them without any road, uniform chips can be mostly
    # background and the model learn to mark almost nothing (README, Results). 0: off.
    foreground_share: float = 0.0
    # -- method (each term can be switched off for the ablations)
    loss: str = "imbalance"  # imbalance | ce
    class_weighting: str = "effective"  # effective | inv_sqrt | none
    class_weight_beta: float = 0.98  # effective number: larger favours rare classes more (0.98: ~2.3x for a 3 % class)
    region: str = "dice"  # dice | tversky | none
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    pseudo: bool = True
    contrastive: bool = True
    # Rescale the teacher's probabilities so pseudo-labels hold each class in its labeled share
    # (geoccseg/losses/alignment.py), against a teacher that misses the rare class. Off: on the
    # Massachusetts select images it scored below the method without it (benchmark arm full_da).
    distribution_alignment: bool = False
    # Background pseudo-labels only where the teacher sees no foreground (p_fg < 1 - tau_high) within
    # this many pixels: a road the teacher half-finds is not taught as background next to it. 0: off.
    bg_margin_px: int = 0
    # Loss of the pseudo-labels: the same as the labels' (imbalance), or plain cross-entropy ("ce"),
    # since the teacher trained with class weights already leans towards the rare class and
    # weighting its pseudo-labels again compounds that lean step after step (wider crack maps).
    pseudo_loss: str = "imbalance"  # imbalance | ce
    # Confident foreground pseudo-labels only within this many pixels of the skeleton of the confident
    # foreground (geoccseg/train/centreline.py): the labels' half-width (Massachusetts lines: about
    # 3.2 px), so the edges of a road the teacher sees whole are left out, not taught as road.
    # "auto": measured on the labeled chips (recorded in the bundle). 0: off. 3 (the default): it
    # beat the method without it on the select images of both benchmarks, 3 seeds each (arm
    # full_centreline; README, Results); for labels much wider than ~6 px use auto.
    pseudo_centreline_px: float | str = 3.0
    # Perturbed-feature stream (UniMatch, Yang et al. CVPR 2023): the student also segments the
    # teacher's own weak view with this share of the encoder's channels dropped, and learns the
    # same pseudo-labels there; the pseudo-label term is then the mean of the strong-view and the
    # perturbed-feature losses. 0: off.
    feature_perturbation: float = 0.0
    tau_high: float = 0.95
    tau_high_fg: float = 0.8
    tau_low: float = 0.6
    temperature: float = 0.2
    anchors_per_class: int = 256
    negatives_per_class: int = 512
    queue_size: int = 256
    lambda_pl: float = 1.0
    lambda_con: float = 0.1  # 0.5 let L_con (near its chance value) dominate the loss; see pipelines/ablate_loss.py
    # The unlabeled terms start after unlabeled_start_steps and reach full weight rampup_steps later.
    # None (the default): scaled to the budget, max_steps / 6 and 2 max_steps / 3 (50 and 200 at the
    # 300 steps of every recorded benchmark run), so they reach full weight late in the cosine decay
    # of the learning rate (13 % of its peak). Fixed at 50 and 200, a 600-step run reached full
    # weight at 73 % of the peak rate and collapsed (Massachusetts select F1 0.555 at step 150,
    # 0.047 at step 300; README, Results).
    unlabeled_start_steps: int | None = None
    rampup_steps: int | None = None
    ema_momentum: float = 0.99
    ema_warmup_steps: int = 20
    # -- optimisation and budget
    batch_size: int = 8
    unlabeled_batch_size: int = 8
    lr: float = 2e-3
    # Learning rate of the encoder as a share of lr (the decoder and heads take lr itself)
    encoder_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    max_steps: int = 1000
    max_minutes: float | None = None
    val_every: int = 100
    checkpoint_every: int = 50  # steps between checkpoints for --resume (every validation step is one too)
    checkpoint_minutes: float | None = 10.0  # ... and at least every this many minutes
    seed: int = 0
    # data loader worker processes; None: 0 on the CPU, up to 4 per GPU on CUDA (run.loader_workers)
    num_workers: int | None = None
    # -- hardware
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str | None = None
    progress: bool = True

    @property
    def use_pretrained(self) -> bool:
        """Whether training starts the encoder from ImageNet weights (never when fine-tuning a bundle)."""
        if self.init_from:
            return False
        from geoccseg.models.pretrained import SOURCES

        if self.pretrained is None:
            return self.encoder in SOURCES
        if self.pretrained and self.encoder not in SOURCES:
            raise GeoccsegError(f"encoder {self.encoder!r} has no pretrained weights (pretrained: {', '.join(SOURCES)}); pass --no-pretrained")
        return self.pretrained

    @property
    def unlabeled_schedule(self) -> tuple[int, int]:
        """(start, ramp-up length) of the unlabeled terms, in optimiser steps (None options scaled to max_steps)."""
        return self.unlabeled_schedule_over(self.max_steps)

    def unlabeled_schedule_over(self, steps: int) -> tuple[int, int]:
        """:attr:`unlabeled_schedule` of a run whose schedule spans ``steps`` (a resumed run's first budget)."""
        start = round(steps / 6) if self.unlabeled_start_steps is None else self.unlabeled_start_steps
        length = round(2 * steps / 3) if self.rampup_steps is None else self.rampup_steps
        return start, length

    @property
    def semi_supervised(self) -> bool:
        return self.pseudo or self.contrastive

    def __post_init__(self) -> None:
        # one folder may be given as a plain path (Python callers, configs of earlier versions)
        for key in ("images", "masks"):
            if isinstance(getattr(self, key), (str, os.PathLike)):
                setattr(self, key, [str(getattr(self, key))])

    @property
    def source(self) -> str:
        if self.scenes and self.images:
            raise GeoccsegError("give either --scene (GeoTIFF scenes) or --images/--masks (photo folders), not both")
        if self.scenes:
            if not self.labels:
                raise GeoccsegError("training on scenes needs --labels (road or crack lines, polygons or a label raster) "
                                    "for the labeled part; the rest of the scenes is the method's unlabeled data")
            return "scenes"
        if self.images:
            if len(self.masks) != len(self.images):
                raise GeoccsegError(f"{len(self.images)} --images folder(s) need as many --masks folders, in the same order (got {len(self.masks)}); masks are matched by file name")
            if self.images_pixel_size_m and len(self.images_pixel_size_m) != len(self.images):
                raise GeoccsegError(f"give --images-pixel-size-m once per --images folder ({len(self.images)}), or not at all (got {len(self.images_pixel_size_m)})")
            if self.images_pixel_size_m and (self.pixel_size_m is None or min(self.images_pixel_size_m) <= 0):
                raise GeoccsegError("--images-pixel-size-m needs positive sizes and --pixel-size-m, the pixel size every folder is resampled to")
            resampled = any(size != self.pixel_size_m for size in self.images_pixel_size_m)
            # which --images folder's pixel size they have is unknown (a run begun before this check resumes as it trained)
            if resampled and (self.val_images or self.unlabeled) and not self.resume:
                raise GeoccsegError("--images-pixel-size-m resamples the --images folders only: --val-images and --unlabeled photos "
                                    "would be read at their own, unknown scale; leave them out (--val-fraction holds validation "
                                    "photos out of the --images folders), or resample them to --pixel-size-m beforehand")
            return "photos"
        raise GeoccsegError("no training data: give --scene with --labels, or --images with --masks")

    def validate(self) -> TrainConfig:
        """Check values; one-line errors for bad ones."""
        choices = {
            "loss": ("imbalance", "ce"), "pseudo_loss": ("imbalance", "ce"), "class_weighting": ("effective", "inv_sqrt", "none"),
            "region": ("tversky", "dice", "none"), "fusion": ("multi", "single"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise GeoccsegError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        from geoccseg.losses.confidence import check_thresholds  # torch: only when a run is checked

        check_thresholds(self.tau_low, self.tau_high, self.tau_high_fg)
        check_tile_px(self.tile_px)
        if self.tile_px < 64:  # the deepest features of a 32-px chip are one pixel: batch norm cannot train on a batch of one
            raise GeoccsegError(f"training needs chips of at least 64 px (--tile-px {self.tile_px}); a chip of "
                                f"{self.tile_px} px holds too little around a road or crack, and its deepest features are one pixel")
        if self.encoder_tf_same and self.encoder != "efficientnet-lite0":
            raise GeoccsegError(f"encoder_tf_same is a build of the efficientnet-lite0 encoder; the encoder is {self.encoder}")
        if self.precision in REFUSED_PRECISIONS:
            raise GeoccsegError(REFUSED_PRECISIONS[self.precision])
        if self.precision is not None and self.precision not in PRECISIONS:
            raise GeoccsegError(f"precision must be one of {', '.join(PRECISIONS)} (or unset for the device's default), got {self.precision!r}")
        if self.accelerator not in ACCELERATORS:
            raise GeoccsegError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        for key in ("num_workers", "bg_margin_px", "unlabeled_start_steps", "rampup_steps", "unlabeled_batch_size", "ema_warmup_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise GeoccsegError(f"{key} must be 0 or more, got {getattr(self, key)}")
        for key in ("devices", "num_nodes", "batch_size", "val_every", "anchors_per_class", "negatives_per_class", "queue_size"):
            if getattr(self, key) < 1:
                raise GeoccsegError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0 <= self.appearance_invert_p <= 1:
            raise GeoccsegError(f"appearance_invert_p must be between 0 and 1 (a probability), got {self.appearance_invert_p}")
        if not 0 <= self.foreground_share <= 1:
            raise GeoccsegError(f"foreground_share must be between 0 and 1 (a share of each batch's labeled chips), got {self.foreground_share}")
        if not 0.5 <= self.crop_area_max <= 16:
            raise GeoccsegError(f"crop_area_max must be between 0.5 and 16 (area fraction of the chip; above 1 zooms out), got {self.crop_area_max}")
        if self.pseudo_centreline_px != "auto" and (isinstance(self.pseudo_centreline_px, str) or self.pseudo_centreline_px < 0):
            raise GeoccsegError(f"pseudo_centreline_px must be 0 (off), a half-width in pixels or auto (the labels' own), "
                                f"got {self.pseudo_centreline_px!r}")
        if not 0 <= self.feature_perturbation < 1:
            raise GeoccsegError(f"feature_perturbation must be at least 0 and below 1 (a dropout probability; 0: off), got {self.feature_perturbation}")
        if not 0 < self.encoder_lr_scale <= 1:
            raise GeoccsegError(f"encoder_lr_scale must be above 0 and at most 1 (a share of lr), got {self.encoder_lr_scale}")
        if self.max_steps < 1:
            raise GeoccsegError("max_steps must be at least 1")
        for key in ("lr", "temperature"):  # above 0
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise GeoccsegError(f"{key} must be a number above 0, got {getattr(self, key)}")
        for key in ("weight_decay", "lambda_pl", "lambda_con", "tversky_alpha", "tversky_beta"):  # 0 or more
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise GeoccsegError(f"{key} must be a number of at least 0, got {getattr(self, key)}")
        if self.loss == "imbalance" and self.region == "tversky" and not self.tversky_alpha + self.tversky_beta > 0:
            raise GeoccsegError("tversky_alpha and tversky_beta weigh the Tversky term's false positives and negatives; "
                                f"they cannot both be 0 (got {self.tversky_alpha} and {self.tversky_beta})")
        if not self.init_from:  # the network's settings, before any data is read (a bundle fine-tuned keeps its own)
            ModelConfig(encoder=self.encoder, fusion=self.fusion, decoder_channels=self.decoder_channels, embed_dim=self.embed_dim,
                        tf_same=self.encoder_tf_same)
        if not 0 <= self.class_weight_beta < 1:
            raise GeoccsegError(f"class_weight_beta must be at least 0 and below 1 (effective number of samples), got {self.class_weight_beta}")
        if not 0 <= self.ema_momentum < 1:
            raise GeoccsegError(f"ema_momentum must be at least 0 and below 1 (the teacher's share of itself per step), got {self.ema_momentum}")
        if not 0 <= self.seed < 2**32:
            raise GeoccsegError(f"seed must be a whole number from 0 to {2**32 - 1}, got {self.seed}")
        for key in ("max_minutes", "width_m", "pixel_size_m"):  # unset, or above 0
            if getattr(self, key) is not None and not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise GeoccsegError(f"{key} must be above 0 (or left unset), got {getattr(self, key)}")
        if self.checkpoint_every < 1 or (self.checkpoint_minutes is not None and not self.checkpoint_minutes > 0):
            raise GeoccsegError("checkpoint_every must be at least 1 step and checkpoint_minutes above 0 (or null)")
        if self.out is None:
            raise GeoccsegError("no output folder; pass -o/--out MODEL_DIR")
        if self.per_image_norm and self.source == "scenes":
            raise GeoccsegError("--per-image-norm applies to photo folders (--images/--masks); scenes are normalised with the "
                                "training scenes' statistics, drop the option")
        self._check_nothing_ignored()
        _ = self.source
        _ = self.use_pretrained
        return self

    def inert_options(self) -> dict[str, str]:
        """The options that the other options leave without effect, each with why (``"<key> <why>"``
        is the refusal of a value other than its default). A resumed run does not compare them
        (:func:`~geoccseg.train.checkpoint.run_identity`): a run recorded by an older version with
        such a value resumes once the line is dropped from its config.yaml."""
        inert: dict[str, str] = {}
        if self.source == "scenes":
            for key in ("images_pixel_size_m", "val_images", "val_masks", "unlabeled", "labeled_fraction", "labeled_names", "val_fraction"):
                inert[key] = "applies to photo folders (--images/--masks), and this run trains on scenes: drop it"
        else:
            for key in ("labels", "aoi", "val_aoi", "class_column", "width_m", "bands"):
                inert[key] = "applies to GeoTIFF scenes (--scene), and this run trains on photo folders: drop it"
            if self.val_images:
                inert["val_fraction"] = "holds photos of --images apart for validation, and --val-images gives the validation photos: drop one"
        if self.init_from and not self.resume:  # the bundle's model section records the network fine-tuned (a run of
            # before 2 December may record encoder: light, the default then, in its config.yaml: it resumes)
            for key in ("encoder", "pretrained", "encoder_tf_same", "fusion", "decoder_channels", "embed_dim"):
                inert[key] = ("shapes a network built from scratch, and --init-from fine-tunes the starting model's network as "
                              "it is: drop it")
        if not self.pseudo:
            for key in ("feature_perturbation", "bg_margin_px", "pseudo_loss", "lambda_pl"):
                inert[key] = "acts on the pseudo-labels, which --no-pseudo turns off: drop it or the --no-pseudo"
        if not self.contrastive:
            for key in ("temperature", "anchors_per_class", "negatives_per_class", "queue_size", "lambda_con"):
                inert[key] = "acts on the contrastive term, which --no-contrastive turns off: drop it or the --no-contrastive"
        if not self.semi_supervised:  # it also shapes the contrastive term's confidence levels
            inert["distribution_alignment"] = ("acts on the teacher's probabilities over unlabeled chips, which --no-pseudo "
                                               "--no-contrastive leave unused: drop it or one of those")
        if self.loss == "ce":
            for key in ("class_weighting", "class_weight_beta", "region", "tversky_alpha", "tversky_beta"):
                inert[key] = "is an option of the imbalance loss, and loss is ce (plain cross-entropy): drop it or use --loss imbalance"
        if self.region != "tversky":
            for key in ("tversky_alpha", "tversky_beta"):
                inert.setdefault(key, f"weighs the Tversky region term, and region is {self.region}: drop it or use --region tversky")
        return inert

    def _check_nothing_ignored(self) -> None:
        """Refuse an option that the other options leave without effect (it would be recorded in the
        bundle as if it had trained the model)."""
        default = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default for f in dataclasses.fields(self)}
        if self.semi_supervised and self.unlabeled_batch_size == 0:
            raise GeoccsegError("unlabeled_batch_size 0 leaves the method's unlabeled terms (pseudo-labels, contrastive) "
                                "nothing to learn from: give 1 or more, or train supervised with --no-pseudo --no-contrastive")
        for key, why in self.inert_options().items():
            value = getattr(self, key)
            if (list(value) if isinstance(value, tuple) else value) != default[key]:  # the CLI gives lists as tuples
                raise GeoccsegError(f"{key} {why}")

    # -- YAML ---------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise GeoccsegError(f"unknown {where} key(s) {', '.join(unknown)}; valid keys: {', '.join(cls.keys())}")
        hints = typing.get_type_hints(cls)
        values = {key: [value] if key in ("images", "masks") and isinstance(value, str) else value for key, value in values.items()}
        values = {key: _typed(key, value, hints[key], where) for key, value in values.items()}
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
        """Read a YAML file of options, then apply ``overrides`` (CLI flags that were given)."""
        path = Path(path)
        if not path.is_file():
            raise GeoccsegError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise GeoccsegError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise GeoccsegError(f"config file {path} is not text; give the config.yaml a run wrote (or one of your own)") from None
        except OSError as exc:
            raise GeoccsegError(f"cannot read config file {path} ({exc.strerror or exc})") from None
        if not isinstance(values, dict):
            raise GeoccsegError(f"config file {path} must be a mapping of option: value")
        return cls.from_dict({**values, **(overrides or {})}, where=f"config file {path.name}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_LIST_NAMES = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def _typed(key: str, value, annotation, where: str):
    """``value`` checked against the field's annotation (ints accepted as floats).

    Raises:
        GeoccsegError: naming the key, the expected type and the value.
    """
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if value is None and optional:
            return None
        if len(args) > 1:  # e.g. float | str: the first type the value fits (a number before a word)
            fitting = next((a for a in args if _fits(value, a)), None)
            if fitting is None:
                raise GeoccsegError(f"{where}: {key} must be {' or '.join(_NAMES[a] for a in args)}, got {value!r}")
            return _as(value, fitting)
        (annotation,) = args
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, list) and all(_fits(v, item) for v in value):
            return [_as(v, item) for v in value]
        expected = f"a list of {_LIST_NAMES[item]}"
    elif _fits(value, annotation):
        return _as(value, annotation)
    else:
        expected = _NAMES[annotation]
    raise GeoccsegError(f"{where}: {key} must be {expected}{' or null' if optional else ''}, got {value!r}")


def _fits(value, tp) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
            try:
                return math.isfinite(float(value))
            except ValueError:
                return False
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _as(value, tp):
    return float(value) if tp is float else value
