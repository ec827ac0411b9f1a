"""The design of the quality benchmark: compute budgets, ablation arms, datasets and runs.

A benchmark trains every arm of :data:`ARMS` (each changing one switch of the method) with the
same :class:`Profile` (steps, batch, tile) for several seeds and labeled fractions; a run is one
:class:`RunSpec`, and :func:`train_config` turns it into the trainer's :class:`TrainConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from geoccseg.errors import GeoccsegError
from geoccseg.train import TrainConfig


@dataclass(frozen=True)
class Profile:
    """A compute budget, identical for every arm of a benchmark.

    Attributes:
        name: recorded with every result; one output folder holds the runs of one profile.
        tile_px: edge of the training chips, in pixels.
        batch_size: labeled chips per step.
        unlabeled_batch_size: unlabeled chips per step (semi-supervised arms only).
        max_steps: optimiser steps of every arm.
        val_every: steps between two scorings of the select set (checkpoint choice).
        max_minutes: wall-clock safety cap of one run, in minutes; a run it stops records fewer
            steps than ``max_steps``.
        max_test_images: score only the first N test images (sorted by stem); None scores all.
        encoder: network encoder (:data:`geoccseg.models.config.ENCODERS`).
        train: further :class:`TrainConfig` options, e.g. shorter ramp-ups for a tiny budget.
    """

    name: str
    tile_px: int
    batch_size: int
    unlabeled_batch_size: int
    max_steps: int
    val_every: int
    max_minutes: float
    max_test_images: int | None = None
    encoder: str = "light"
    train: dict = field(default_factory=dict)

    def with_steps(self, max_steps: int) -> Profile:
        """This budget with ``max_steps`` steps (named ``<name>+<N>steps``; validation at least once)."""
        return replace(self, name=f"{self.name}+{max_steps}steps", max_steps=max_steps, val_every=min(self.val_every, max_steps))


#: The budgets. ``quick``: the whole pipeline in about half a minute per arm on 2 CPU cores, for
#: tests (the unlabeled terms start at step 2 so that every loss term runs; 4 test images are
#: scored, whole photos cost about 0.5 s each on 2 cores; the numbers mean nothing).
#: ``cpu``: the most that is meaningful in about 15 minutes per semi-supervised arm on 2 cores
#: (a step of 8 labeled + 8 unlabeled 256 px chips takes about 1.5-2 s there, a supervised step
#: about 0.7 s); the trainer's method defaults (ramp-ups, thresholds) are kept. Its 60-minute cap
#: is a safety net, not a budget: a machine shared with other jobs runs 2-5x slower, and a run the
#: cap stops records fewer steps than its arms (seen at 30 minutes). ``gpu``: the
#: full-size setting for one GPU.
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", tile_px=128, batch_size=2, unlabeled_batch_size=2, max_steps=10, val_every=10, max_minutes=5.0, max_test_images=4,
        train={"unlabeled_start_steps": 2, "rampup_steps": 4, "ema_warmup_steps": 2,
               "anchors_per_class": 64, "negatives_per_class": 128, "queue_size": 64},
    ),
    "cpu": Profile(name="cpu", tile_px=256, batch_size=8, unlabeled_batch_size=8, max_steps=450, val_every=150, max_minutes=60.0),
    "gpu": Profile(name="gpu", tile_px=384, batch_size=16, unlabeled_batch_size=16, max_steps=8000, val_every=500, max_minutes=240.0),
}


@dataclass(frozen=True)
class Arm:
    """One row of the ablation: the method switches it sets.

    Attributes:
        loss: ``ce`` or ``imbalance``.
        pseudo: pseudo-label loss on unlabeled images.
        contrastive: confidence-level contrastive loss.
        fusion: ``multi`` or ``single``.
        all_labeled: label every training image (labeled fraction 1.0).
        train: further :class:`TrainConfig` options of the arm, e.g. a candidate remedy of the
            unlabeled terms (``distribution_alignment``, ``bg_margin_px``).
    """

    loss: str
    pseudo: bool
    contrastive: bool
    fusion: str = "multi"
    all_labeled: bool = False
    train: dict = field(default_factory=dict)


#: Options every arm starts from, where a later default of ``geoccseg train`` differs from what the
#: recorded arms ran with: ``full`` and every remedy arm ran without the centreline band, which
#: became the default once ``full_centreline`` beat ``full`` on both datasets (its own arm sets it).
#: The own-scene and scene-suggest benchmarks (``pipelines/``) train with it too, for the same reason.
RECORDED = {"pseudo_centreline_px": 0.0}

ARMS: dict[str, Arm] = {
    "sup_ce": Arm(loss="ce", pseudo=False, contrastive=False),
    "sup_imbalance": Arm(loss="imbalance", pseudo=False, contrastive=False),
    "pseudo": Arm(loss="imbalance", pseudo=True, contrastive=False),
    "full": Arm(loss="imbalance", pseudo=True, contrastive=True),
    "full_da": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"distribution_alignment": True}),
    "full_margin": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"bg_margin_px": 4}),
    "full_late": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"unlabeled_start_steps": 100, "lambda_pl": 0.5}),
    # the other direction: full_late lost to full (seed 0, select F1 0.547 against 0.582), so the
    # unlabeled terms start at step 20 and reach full weight by about step 120 instead of 250
    "full_early": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"unlabeled_start_steps": 20, "rampup_steps": 100}),
    # pseudo-labels under plain cross-entropy, and a stricter background threshold (issue 12)
    "full_plce": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"pseudo_loss": "ce"}),
    "full_tbg99": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"tau_high": 0.99}),
    # the ramp-up of the unlabeled terms fixed at steps 50-250 (the default before it scaled with the
    # budget; at 300 steps the two are the same run): for budgets other than 300 steps
    "full_fixed_ramp": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"unlabeled_start_steps": 50, "rampup_steps": 200}),
    # confident road/crack pseudo-labels only from p >= 0.95 instead of 0.8, against the false roads
    # of the teacher (its confident road labels were 58-63 % right on Massachusetts)
    "full_tfg95": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"tau_high_fg": 0.95}),
    # the pretrained encoder fine-tuned at a tenth of the learning rate (the decoder at the full rate)
    "sup_imbalance_enc01": Arm(loss="imbalance", pseudo=False, contrastive=False, train={"encoder_lr_scale": 0.1}),
    "full_enc01": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"encoder_lr_scale": 0.1}),
    # a second pseudo-label stream: the teacher's weak view through the student with half the encoder's
    # channels dropped (UniMatch's feature perturbation), against the teacher's false roads being copied
    "full_fp": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"feature_perturbation": 0.5}),
    # confident road pseudo-labels cut to a band of the masks' half-width around their skeleton: the
    # road edges the teacher marks and the masks leave out are not taught as road
    "full_centreline": Arm(loss="imbalance", pseudo=True, contrastive=True, train={"pseudo_centreline_px": 3.0}),
    "full_single_fusion": Arm(loss="imbalance", pseudo=True, contrastive=True, fusion="single"),
    "fully_supervised": Arm(loss="imbalance", pseudo=False, contrastive=False, all_labeled=True),
}
#: Arms of the label-fraction sweep (at fraction 1.0 both are ``fully_supervised``).
SWEEP_ARMS = ("sup_imbalance", "full")
#: Arms whose predictions ``examples.png`` shows, when they were run.
EXAMPLE_ARMS = ("sup_ce", "sup_imbalance", "full", "fully_supervised")


@dataclass(frozen=True)
class DatasetSpec:
    """What the benchmark needs to know of a dataset.

    Attributes:
        classes: foreground class names.
        pixel_size_m: declared pixel size in metres (None: unknown, e.g. close-range photos).
        tolerance_px: relaxed-metric tolerance rho in pixels (None: not reported).
    """

    classes: tuple[str, ...]
    pixel_size_m: float | None
    tolerance_px: float | None


DATA_ENV = "GEOCCSEG_DATA"
"""Environment variable naming the folder of the real data the benchmarks and tests read."""


def data_root(checkout: Path) -> Path:
    """The real data's folder: ``$GEOCCSEG_DATA`` if set, else ``shared/data`` beside the
    repository ``checkout`` (``../shared/data`` from its root), resolved; it may not exist (callers
    say so). The checkout is the caller's (a pipeline's or the tests' folder's parent), not this
    package's, which may be installed elsewhere."""
    return Path(os.environ.get(DATA_ENV, checkout.parent / "shared" / "data")).resolve()


DATASETS: dict[str, DatasetSpec] = {
    "deepcrack": DatasetSpec(classes=("crack",), pixel_size_m=None, tolerance_px=None),
    "cfd": DatasetSpec(classes=("crack",), pixel_size_m=None, tolerance_px=None),
    "massachusetts": DatasetSpec(classes=("road",), pixel_size_m=1.0, tolerance_px=3.0),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run: an arm at a labeled fraction with a seed."""

    arm: str
    labeled_fraction: float
    seed: int

    def name(self, dataset: str) -> str:
        """Folder name of the run, e.g. ``deepcrack_full_0.035_s0``."""
        return f"{dataset}_{self.arm}_{self.labeled_fraction:g}_s{self.seed}"


def plan_runs(arms: Sequence[str], labeled_fraction: float, seeds: Sequence[int], sweep: bool = False,
              fractions: Sequence[float] = ()) -> list[RunSpec]:
    """The runs of a benchmark, seed by seed (so an interrupted benchmark holds whole seeds), without duplicates.

    ``fully_supervised`` always runs at fraction 1.0; with ``sweep``, :data:`SWEEP_ARMS` run at each
    of ``fractions`` and a fraction of 1.0 means the ``fully_supervised`` run.

    Raises:
        GeoccsegError: an unknown arm or a fraction outside (0, 1].
    """
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise GeoccsegError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    for f in [labeled_fraction, *(fractions if sweep else ())]:
        if not 0 < f <= 1:
            raise GeoccsegError(f"labeled fraction {f} must be in (0, 1], e.g. 0.035 for 3.5 %")
    runs: list[RunSpec] = []
    for seed in seeds:
        wanted = [(arm, 1.0 if ARMS[arm].all_labeled else labeled_fraction) for arm in arms]
        if sweep:
            wanted += [("fully_supervised", 1.0) if f >= 1 else (arm, f) for f in fractions for arm in SWEEP_ARMS]
        for arm, fraction in wanted:
            spec = RunSpec(arm, float(fraction), int(seed))
            if spec not in runs:
                runs.append(spec)
    return runs


def train_config(spec: RunSpec, dataset: str, profile: Profile, folders: dict[str, Path], labeled: list[str],
                 unlabeled: list[Path], out: Path, **overrides: object) -> TrainConfig:
    """The :class:`TrainConfig` of one run: the profile's budget with the arm's switches, then
    ``overrides`` (any TrainConfig fields; the loss ablation's variants).

    Args:
        spec: the run.
        dataset: a key of :data:`DATASETS`.
        profile: the compute budget.
        folders: ``train`` and ``select`` folders, each with ``images/`` and ``masks/``.
        labeled: stems of the training images that carry labels.
        unlabeled: folders of further unlabeled images.
        out: the run's bundle folder.
        overrides: further :class:`TrainConfig` fields.
    """
    arm, ds = ARMS[spec.arm], DATASETS[dataset]
    common = dict(
        out=str(out), images=str(folders["train"] / "images"), masks=str(folders["train"] / "masks"),
        val_images=str(folders["select"] / "images"), val_masks=str(folders["select"] / "masks"),
        unlabeled=[str(p) for p in unlabeled], labeled_fraction=spec.labeled_fraction, labeled_names=labeled,
        seed=spec.seed, classes=list(ds.classes), pixel_size_m=ds.pixel_size_m, tile_px=profile.tile_px,
        encoder=profile.encoder, fusion=arm.fusion, loss=arm.loss, pseudo=arm.pseudo, contrastive=arm.contrastive,
        batch_size=profile.batch_size, unlabeled_batch_size=profile.unlabeled_batch_size, max_steps=profile.max_steps,
        max_minutes=profile.max_minutes, val_every=profile.val_every, progress=False,
    )
    # the profile's settings of a term the arm switches off (the quick profile's contrastive sizes) are left out
    inert = TrainConfig(**common, **(RECORDED | arm.train)).inert_options()
    profile_train = {key: value for key, value in profile.train.items() if key not in inert}
    config = TrainConfig(**common, **(profile_train | RECORDED | arm.train))
    return replace(config, **overrides)


def train_options(items: Sequence[str]) -> dict:
    """The training options of a pipeline's ``--option KEY=VALUE`` (each value read as YAML), each
    of the type its option takes (``unlabeled=FOLDER`` without brackets is refused, not read as a
    list of letters).

    Raises:
        GeoccsegError: an item that is not ``KEY=VALUE`` with a training option as key, or a value
            its option cannot take.
    """
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in {f.name for f in fields(TrainConfig)}:
            raise GeoccsegError(f"--option takes KEY=VALUE with KEY a training option, got {item!r}")
        options[key] = yaml.safe_load(value)
    typed = TrainConfig.from_dict(options, where="--option")
    return {key: getattr(typed, key) for key in options}
