#!/usr/bin/env python
"""Quality benchmark: the ablation arms and the label-fraction sweep of the method on real photo data.

Run from the repository root, e.g.::

    python pipelines/benchmark_quality.py --dataset deepcrack --data ../shared/data/deepcrack/train \\
        --labeled-fraction 0.035 --profile cpu --seeds 0 1 2 --out ../bench/deepcrack-cpu

**Split.** The image stems of ``--data`` are shuffled once with :data:`HOLDOUT_SEED`, which does not
depend on ``--seeds``, so every arm, seed and fraction sees the same split (written to
``split.json``). The first :data:`TEST_FRACTION` of them form the *test* set, scored at the end; the
next :data:`SELECT_FRACTION` the *select* set, the trainer's validation folder, used only to choose
which checkpoint is saved; the rest are the *training* stems. Choosing the checkpoint on images
that are not scored keeps the reported numbers free of selection bias. With ``--test-dir`` the test
set is that folder (same ``images/`` + ``masks/`` layout) and only the select set is taken from
``--data``. Each part is given to the trainer as a temporary folder of symbolic links, so the
trainer never sees a held-out image, not even as an unlabeled one.

**Labels.** For each seed and labeled fraction, :func:`~geoccseg.data.photos.split_labeled` over the
training stems chooses the labeled stems once; every arm of that seed and fraction gets exactly
this list (``labeled_names``), and the other training stems (plus ``--data/unlabeled/`` if it
exists) are the unlabeled images of the semi-supervised arms. ``fully_supervised`` labels every
training stem.

**Arms** (:data:`ARMS`), each changing one thing, all with the same profile (steps, batch, tile)::

    sup_ce              labeled part alone, plain cross-entropy
    sup_imbalance       + data imbalance loss
    pseudo              + pseudo-labels on unlabeled images
    full                + confidence-level contrastive loss (the method)
    full_single_fusion  the method with single-stage fusion
    fully_supervised    every training image labeled, imbalance loss (the ceiling)

``--sweep`` adds ``sup_imbalance`` and ``full`` at each of ``--fractions``; at fraction 1.0 both
are the ``fully_supervised`` run. A run is named ``<dataset>_<arm>_<fraction>_s<seed>`` and is
trained once, however many of these ask for it; one output folder holds the runs of one profile.

**Scoring.** Each test image is predicted whole with the saved bundle (the EMA teacher of the best
select-set F1); the foreground probability (1 - background) gives pixel precision, recall, F1 and
IoU at 0.5, ODS and OIS F1 over a threshold grid and, for roads, relaxed F1 with a tolerance of
3 pixels. Counts are summed over the test images (micro average); OIS averages per-image best F1.

**Outputs** in ``--out``: ``results.json`` (one record per run, rewritten atomically after every
run; ``--resume`` skips the runs it holds), ``results.md`` (mean ± sample standard deviation over
seeds), ``f1_vs_fraction.png``, ``examples.png``, ``split.json``, ``examples/<run>.npz`` (the
foreground probabilities of the example images, as uint8 0..255) and ``runs/<run>/`` (the bundle
and training logs of each run; removed with ``--no-keep-bundles``; optimiser checkpoints are
always removed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geoccseg.data.photos import list_images, read_mask, read_photo, split_labeled  # noqa: E402
from geoccseg.errors import GeoccsegError  # noqa: E402
from geoccseg.evaluate.pixel import Counts, RelaxedCounts, ThresholdSweep, pixel_counts, relaxed_counts  # noqa: E402
from geoccseg.inference.array import predict_array  # noqa: E402
from geoccseg.io.atomic import atomic_path  # noqa: E402
from geoccseg.io.bundle import Bundle, load_bundle  # noqa: E402
from geoccseg.models.config import ENCODERS  # noqa: E402
from geoccseg.train import TrainConfig, train  # noqa: E402

#: Seed of the test / select / train split; independent of the training seeds, never change it.
HOLDOUT_SEED = 20240611
#: Share of the ``--data`` stems held out as the test set (without ``--test-dir``).
TEST_FRACTION = 0.10
#: Share of the ``--data`` stems held out as the select set (checkpoint choice during training).
SELECT_FRACTION = 0.05
#: Number of test images shown in ``examples.png``.
N_EXAMPLES = 3
#: Threshold on the foreground probability of the strict and relaxed metrics.
THRESHOLD = 0.5


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
#: about 0.7 s); the trainer's method defaults (ramp-ups, thresholds) are kept. ``gpu``: the
#: full-size setting for one GPU.
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", tile_px=128, batch_size=2, unlabeled_batch_size=2, max_steps=10, val_every=10, max_minutes=5.0, max_test_images=4,
        train={"unlabeled_start_steps": 2, "rampup_steps": 4, "ema_warmup_steps": 2,
               "anchors_per_class": 64, "negatives_per_class": 128, "queue_size": 64},
    ),
    "cpu": Profile(name="cpu", tile_px=256, batch_size=8, unlabeled_batch_size=8, max_steps=450, val_every=150, max_minutes=30.0),
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
    """

    loss: str
    pseudo: bool
    contrastive: bool
    fusion: str = "multi"
    all_labeled: bool = False


ARMS: dict[str, Arm] = {
    "sup_ce": Arm(loss="ce", pseudo=False, contrastive=False),
    "sup_imbalance": Arm(loss="imbalance", pseudo=False, contrastive=False),
    "pseudo": Arm(loss="imbalance", pseudo=True, contrastive=False),
    "full": Arm(loss="imbalance", pseudo=True, contrastive=True),
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


DATASETS: dict[str, DatasetSpec] = {
    "deepcrack": DatasetSpec(classes=("crack",), pixel_size_m=None, tolerance_px=None),
    "cfd": DatasetSpec(classes=("crack",), pixel_size_m=None, tolerance_px=None),
    "massachusetts": DatasetSpec(classes=("road",), pixel_size_m=1.0, tolerance_px=3.0),
}

#: Fields of every record of ``results.json``.
RECORD_FIELDS = (
    "run", "dataset", "arm", "labeled_fraction", "seed", "profile", "encoder", "tile_px", "max_steps", "steps",
    "train_seconds", "device", "n_labeled", "n_unlabeled", "n_test", "select_f1", "precision", "recall", "f1", "iou",
    "ods_f1", "ods_threshold", "ois_f1", "relaxed_precision", "relaxed_recall", "relaxed_f1", "labeled",
)

Pair = tuple[Path, Path]


# -- split ------------------------------------------------------------------------------------
def read_pairs(folder: str | os.PathLike, what: str = "data") -> dict[str, Pair]:
    """(image, mask) paths by stem of a folder holding ``images/`` and ``masks/``.

    Raises:
        GeoccsegError: a sub-folder is missing or an image has no mask.
    """
    folder = Path(folder)
    images = list_images(folder / "images", f"{what} images")
    masks = list_images(folder / "masks", f"{what} masks")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise GeoccsegError(f"{len(missing)} {what} image(s) have no mask in {folder / 'masks'} (e.g. {', '.join(missing[:3])}); masks are matched by file name stem")
    return {stem: (images[stem], masks[stem]) for stem in sorted(images)}


def split_stems(stems: Sequence[str], test_fraction: float = TEST_FRACTION, select_fraction: float = SELECT_FRACTION,
                seed: int = HOLDOUT_SEED) -> dict[str, list[str]]:
    """Split stems into ``test``, ``select`` and ``train`` (each sorted) with a fixed seed.

    ``floor(n * test_fraction)`` stems go to test and ``max(1, floor(n * select_fraction))`` to
    select, taken in this order from one seeded permutation of the sorted stems.

    Raises:
        GeoccsegError: if no training stem is left.
    """
    stems = sorted(stems)
    order = np.random.default_rng(seed).permutation(len(stems))
    shuffled = [stems[i] for i in order]
    n_test = int(len(stems) * test_fraction + 1e-9)
    n_select = max(1, int(len(stems) * select_fraction + 1e-9))
    if n_test + n_select >= len(stems):
        raise GeoccsegError(f"{len(stems)} images are too few to hold out {n_test} test and {n_select} select images and still train; add images")
    return {
        "test": sorted(shuffled[:n_test]),
        "select": sorted(shuffled[n_test:n_test + n_select]),
        "train": sorted(shuffled[n_test + n_select:]),
    }


def link_pairs(root: Path, pairs: dict[str, Pair]) -> Path:
    """Make ``root/images`` and ``root/masks`` hold symbolic links to the given pairs; return root."""
    for index, sub in enumerate(("images", "masks")):
        (root / sub).mkdir(parents=True)
        for pair in pairs.values():
            target = pair[index].resolve()
            (root / sub / target.name).symlink_to(target)
    return root


# -- scoring ----------------------------------------------------------------------------------
@dataclass
class Score:
    """Test-set metrics of one bundle (pixel counts summed over the images).

    Attributes:
        n_test: images scored.
        precision, recall, f1, iou: strict pixel metrics at :data:`THRESHOLD`.
        ods_f1, ods_threshold: best dataset F1 over the threshold grid, and its threshold.
        ois_f1: mean over images of each image's best F1.
        relaxed_precision, relaxed_recall, relaxed_f1: with the tolerance in pixels; None without one.
        examples: foreground probability (H, W) uint8 (0..255) of the requested example images, by stem.
    """

    n_test: int
    precision: float
    recall: float
    f1: float
    iou: float
    ods_f1: float
    ods_threshold: float
    ois_f1: float
    relaxed_precision: float | None
    relaxed_recall: float | None
    relaxed_f1: float | None
    examples: dict[str, np.ndarray] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int | None]:
        """Every field except the example probabilities."""
        return {k: v for k, v in self.__dict__.items() if k != "examples"}


def foreground_probability(bundle: Bundle, image: np.ndarray, device: str = "auto") -> np.ndarray:
    """(H, W) float32 probability that a pixel is not background, for a (C, H, W) uint8 image (one chip)."""
    return predict_array(bundle, image, device=device)[1:].sum(0)


def score_bundle(bundle: Bundle, pairs: dict[str, Pair], tolerance_px: float | None = None, device: str = "auto",
                 examples: Sequence[str] = ()) -> Score:
    """Score a bundle on (image, mask) pairs, one image at a time.

    Args:
        bundle: a loaded model bundle.
        pairs: (image, mask) paths by stem; masks are read as background (0) / foreground (> 0).
        tolerance_px: relaxed-metric tolerance in pixels (None: no relaxed metrics).
        device: ``auto``, ``cpu`` or ``cuda``.
        examples: stems whose probability maps are kept in :attr:`Score.examples`.

    Raises:
        GeoccsegError: if ``pairs`` is empty or an image and its mask differ in size.
    """
    if not pairs:
        raise GeoccsegError("no test image to score; check the test folder")
    counts, relaxed, sweep = Counts(), RelaxedCounts(), ThresholdSweep()
    kept: dict[str, np.ndarray] = {}
    for stem, (image_path, mask_path) in pairs.items():
        image, truth = read_photo(image_path), read_mask(mask_path) > 0
        if image.shape[1:] != truth.shape:
            raise GeoccsegError(f"mask {mask_path.name} is {truth.shape[1]}x{truth.shape[0]} but image {image_path.name} is {image.shape[2]}x{image.shape[1]}; masks must match their images")
        prob = foreground_probability(bundle, image, device)
        pred = prob >= THRESHOLD
        counts += pixel_counts(pred, truth)
        sweep.update(prob, truth)
        if tolerance_px is not None:
            relaxed += relaxed_counts(pred, truth, tolerance_px)
        if stem in examples:
            kept[stem] = np.round(prob * 255).astype(np.uint8)
    has_relaxed = tolerance_px is not None
    return Score(
        n_test=len(pairs), precision=counts.precision, recall=counts.recall, f1=counts.f1, iou=counts.iou,
        ods_f1=sweep.ods_f1, ods_threshold=sweep.ods_threshold, ois_f1=sweep.ois_f1,
        relaxed_precision=relaxed.precision if has_relaxed else None, relaxed_recall=relaxed.recall if has_relaxed else None,
        relaxed_f1=relaxed.f1 if has_relaxed else None, examples=kept,
    )


def pick_examples(pairs: dict[str, Pair], n: int = N_EXAMPLES) -> list[str]:
    """The ``n`` stems with the most foreground pixels (ties by stem): the most telling examples."""
    sizes = {stem: int(np.count_nonzero(read_mask(mask))) for stem, (_, mask) in pairs.items()}
    return sorted(sorted(sizes), key=lambda s: -sizes[s])[:n]


# -- runs -------------------------------------------------------------------------------------
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
    ``overrides`` (any TrainConfig fields; the loss ablation's variants)."""
    arm, ds = ARMS[spec.arm], DATASETS[dataset]
    config = TrainConfig(
        out=str(out), images=str(folders["train"] / "images"), masks=str(folders["train"] / "masks"),
        val_images=str(folders["select"] / "images"), val_masks=str(folders["select"] / "masks"),
        unlabeled=[str(p) for p in unlabeled], labeled_fraction=spec.labeled_fraction, labeled_names=labeled,
        seed=spec.seed, classes=list(ds.classes), pixel_size_m=ds.pixel_size_m, tile_px=profile.tile_px,
        encoder=profile.encoder, fusion=arm.fusion, loss=arm.loss, pseudo=arm.pseudo, contrastive=arm.contrastive,
        batch_size=profile.batch_size, unlabeled_batch_size=profile.unlabeled_batch_size, max_steps=profile.max_steps,
        max_minutes=profile.max_minutes, val_every=profile.val_every, progress=False, **profile.train,
    )
    return replace(config, **overrides)


def load_records(path: Path) -> list[dict]:
    """Records of a ``results.json`` (empty when it does not exist).

    Raises:
        GeoccsegError: if the file is not a JSON list of records.
    """
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GeoccsegError(f"{path} is not valid JSON ({exc}); remove it or choose another --out") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "run" in r for r in records):
        raise GeoccsegError(f"{path} is not a list of benchmark records; remove it or choose another --out")
    return records


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, atomically."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def run_benchmark(
    dataset: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    profile: str | Profile = "cpu",
    seeds: Sequence[int] = (0, 1, 2),
    labeled_fraction: float = 0.035,
    arms: Sequence[str] = tuple(ARMS),
    sweep: bool = False,
    fractions: Sequence[float] = (0.01, 0.035, 0.1, 1.0),
    test_dir: str | os.PathLike | None = None,
    resume: bool = False,
    keep_bundles: bool = True,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train and score every run of a benchmark; write results, table and plots into ``out``.

    Args:
        dataset: a key of :data:`DATASETS`.
        data: folder with ``images/`` and ``masks/`` (and optionally ``unlabeled/``).
        out: output folder (created).
        profile: a key of :data:`PROFILES`, or a :class:`Profile`.
        seeds: training seeds (labeled choice, initialisation, chips).
        labeled_fraction: share of the training images that carry labels in the ablation arms.
        arms: arms to run (keys of :data:`ARMS`).
        sweep: also run :data:`SWEEP_ARMS` at each of ``fractions``.
        fractions: labeled fractions of the sweep.
        test_dir: score on this folder (``images/`` + ``masks/``) instead of a held-out part of ``data``.
        resume: keep the records of ``out/results.json`` (same profile) and skip their runs.
        keep_bundles: keep each run's bundle under ``out/runs/<run>/``.
        device: scoring device (``auto``, ``cpu``, ``cuda``); training picks its own.
        log: receives one line per event (which run, its scores).

    Returns:
        All records of ``out/results.json`` (see :data:`RECORD_FIELDS`).

    Raises:
        GeoccsegError: bad options or data, or ``out`` holding results without ``resume``.
    """
    if dataset not in DATASETS:
        raise GeoccsegError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise GeoccsegError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    runs = plan_runs(arms, labeled_fraction, seeds, sweep, fractions)
    data, out = Path(data), Path(out)
    results_path = out / "results.json"
    if results_path.exists() and not resume:
        raise GeoccsegError(f"{out} already holds results.json; pass --resume to continue it, or choose another --out")
    records = load_records(results_path)
    others = sorted({str(r.get("profile")) for r in records} - {profile.name})
    if others:
        raise GeoccsegError(f"{results_path} holds runs of profile {', '.join(others)}, not {profile.name}; one --out folder holds one profile, choose another --out")
    pairs, split, test_pairs = make_split(data, test_dir)
    split_path = out / "split.json"
    if records and split_path.is_file() and json.loads(split_path.read_text()) != split:
        raise GeoccsegError(f"the data differs from the split in {split_path}; resume with the same --data and --test-dir, or choose another --out")
    for folder in (out / "runs", out / "examples"):
        folder.mkdir(parents=True, exist_ok=True)
    write_json(split_path, split)
    if profile.max_test_images is not None:
        test_pairs = dict(list(test_pairs.items())[: profile.max_test_images])
    examples = pick_examples(test_pairs)
    unlabeled = [data / "unlabeled"] if (data / "unlabeled").is_dir() else []

    done = {r["run"] for r in records}
    with tempfile.TemporaryDirectory(prefix="geoccseg-benchmark-") as tmp:
        folders = {part: link_pairs(Path(tmp) / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
        for index, spec in enumerate(runs, 1):
            name = spec.name(dataset)
            if name in done:
                log(f"[{index}/{len(runs)}] {name}: already in results.json, skipped")
                continue
            log(f"[{index}/{len(runs)}] {name}: training {profile.max_steps} steps")
            record = train_and_score(spec, dataset, profile, folders, split["train"], unlabeled, test_pairs, out,
                                     keep_bundle=keep_bundles, device=device, examples=examples)
            records.append(record)
            write_json(results_path, records)
            write_reports(records, out, test_pairs, examples, labeled_fraction)
            relaxed = "" if record["relaxed_f1"] is None else f", relaxed F1 {record['relaxed_f1']:.3f}"
            log(f"[{index}/{len(runs)}] {name}: F1 {record['f1']:.3f}, IoU {record['iou']:.3f}, ODS F1 {record['ods_f1']:.3f}"
                f"{relaxed} ({record['n_labeled']} labeled, {record['steps']} steps, {record['train_seconds'] / 60:.1f} min on {record['device']})")
    write_reports(records, out, test_pairs, examples, labeled_fraction)
    return records


def make_split(data: Path, test_dir: str | os.PathLike | None) -> tuple[dict[str, Pair], dict, dict[str, Pair]]:
    """Pairs of ``data``, the fixed split (as written to ``split.json``) and the test pairs.

    Raises:
        GeoccsegError: unreadable folders, or test stems that also appear in ``data``.
    """
    pairs = read_pairs(data)
    if test_dir is None:
        split = split_stems(list(pairs))
        test_pairs = {s: pairs[s] for s in split["test"]}
    else:
        test_pairs = read_pairs(test_dir, "test")
        shared = sorted(set(test_pairs) & set(pairs))
        if shared:
            raise GeoccsegError(f"{len(shared)} test image(s) also appear in --data (e.g. {', '.join(shared[:3])}); the test folder must hold other images")
        split = split_stems(list(pairs), test_fraction=0.0) | {"test": sorted(test_pairs)}
    record = {"holdout_seed": HOLDOUT_SEED, "test_dir": None if test_dir is None else str(test_dir), **split}
    return pairs, record, test_pairs


def train_and_score(spec: RunSpec, dataset: str, profile: Profile, folders: dict[str, Path], train_stems: list[str],
                    unlabeled: list[Path], test_pairs: dict[str, Pair], out: Path, keep_bundle: bool = True,
                    device: str = "auto", examples: Sequence[str] = ()) -> dict:
    """Train one run into ``out/runs/<run>/``, score it on the test pairs and return its record.

    The labeled stems are ``split_labeled(train_stems, fraction, seed)`` (all of them for
    ``fully_supervised``), so every arm of a seed and fraction shares them. The probability maps of
    ``examples`` go to ``out/examples/<run>.npz``; optimiser checkpoints are removed, and the whole
    run folder too unless ``keep_bundle``.
    """
    arm = ARMS[spec.arm]
    name = spec.name(dataset)
    labeled = list(train_stems) if arm.all_labeled else split_labeled(list(train_stems), spec.labeled_fraction, spec.seed)[0]
    semi = arm.pseudo or arm.contrastive
    run_dir = out / "runs" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # left by an interrupted run: train it again
    result = train(train_config(spec, dataset, profile, folders, labeled, unlabeled if semi else [], run_dir))
    score = score_bundle(load_bundle(run_dir), test_pairs, DATASETS[dataset].tolerance_px, device, examples)
    with atomic_path(out / "examples" / f"{name}.npz", overwrite=True) as npz:
        np.savez_compressed(npz, **score.examples)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if not keep_bundle:
        shutil.rmtree(run_dir)
    n_unlabeled = len(train_stems) - len(labeled) + sum(len(list_images(p, "unlabeled images")) for p in unlabeled)
    return {
        "run": name, "dataset": dataset, "arm": spec.arm, "labeled_fraction": spec.labeled_fraction, "seed": spec.seed,
        "profile": profile.name, "encoder": profile.encoder, "tile_px": profile.tile_px, "max_steps": profile.max_steps,
        "steps": result.steps, "train_seconds": round(result.seconds, 2), "device": result.device,
        "n_labeled": len(labeled), "n_unlabeled": n_unlabeled if semi else 0, "select_f1": result.validation.get("f1"),
        **score.metrics(), "labeled": labeled,
    }


# -- reports ----------------------------------------------------------------------------------
def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_std(values: Sequence[float]) -> str:
    """``mean ± sample std`` with three decimals; the mean alone for one value."""
    if len(values) == 1:
        return f"{float(values[0]):.3f}"
    return f"{np.mean(values):.3f} ± {_std(values):.3f}"


def gap_closed(records: Sequence[dict], base: str, arm: str = "full") -> dict[float, float]:
    """Share of the mean-F1 gap between ``base`` and ``fully_supervised`` that ``arm`` closes, by
    labeled fraction: (F1_arm - F1_base) / (F1_fully_supervised - F1_base); fractions where the
    gap is not positive are left out."""
    ceiling = [r["f1"] for r in records if r["arm"] == "fully_supervised"]
    shares: dict[float, float] = {}
    for fraction in sorted({r["labeled_fraction"] for r in records if r["arm"] == arm}):
        f1 = {a: [r["f1"] for r in records if r["arm"] == a and r["labeled_fraction"] == fraction] for a in (arm, base)}
        if ceiling and f1[base] and np.mean(ceiling) > np.mean(f1[base]):
            shares[fraction] = float((np.mean(f1[arm]) - np.mean(f1[base])) / (np.mean(ceiling) - np.mean(f1[base])))
    return shares


def paired_differences(records: Sequence[dict], base: str, arm: str = "full", key: str = "f1") -> dict[float, list[float]]:
    """Per labeled fraction, ``arm`` minus ``base`` of each seed both ran (same labeled images), by seed order.

    Seeds choose different labeled images, so the spread over seeds mixes the method's effect with
    the luck of the labels; the paired differences take the second out."""
    out: dict[float, list[float]] = {}
    for fraction in sorted({r["labeled_fraction"] for r in records if r["arm"] == arm}):
        by_seed = {a: {r["seed"]: r[key] for r in records if r["arm"] == a and r["labeled_fraction"] == fraction} for a in (arm, base)}
        seeds = sorted(set(by_seed[arm]) & set(by_seed[base]))
        if seeds:
            out[fraction] = [by_seed[arm][s] - by_seed[base][s] for s in seeds]
    return out


def _arm_order(arm: str) -> int:
    return list(ARMS).index(arm) if arm in ARMS else len(ARMS)


def summarise(records: Sequence[dict]) -> str:
    """A markdown report: per dataset and profile, one row per (arm, labeled fraction) with the mean
    ± sample standard deviation over seeds, and an F1 table by labeled fraction of the sweep arms
    (their fully supervised ceiling included) when it has more than one row."""
    lines = ["# Quality benchmark", ""]
    for dataset, profile in sorted({(r["dataset"], r["profile"]) for r in records}):
        group = [r for r in records if r["dataset"] == dataset and r["profile"] == profile]
        roads = any(r.get("relaxed_f1") is not None for r in group)
        first = group[0]
        lines += [
            f"## {dataset}, profile `{profile}`", "",
            f"{first['n_test']} test images; encoder {first['encoder']}, tile {first['tile_px']} px, "
            f"{first['max_steps']} steps per run on {', '.join(sorted({r['device'] for r in group}))}; "
            "mean ± sample standard deviation over seeds.", "",
        ]
        head = ["arm", "labeled fraction", "labeled images", "seeds", "precision", "recall", "F1", "IoU", "ODS F1", "OIS F1"]
        keys = ["precision", "recall", "f1", "iou", "ods_f1", "ois_f1"]
        if roads:
            head.append("relaxed F1 (ρ=3 px)")
            keys.append("relaxed_f1")
        head += ["steps", "minutes"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = sorted({(r["arm"], r["labeled_fraction"]) for r in group}, key=lambda k: (k[1], _arm_order(k[0])))
        for arm, fraction in rows:
            rs = [r for r in group if r["arm"] == arm and r["labeled_fraction"] == fraction]
            cells = [arm, f"{fraction:g}", "/".join(sorted({str(r["n_labeled"]) for r in rs})), str(len(rs))]
            cells += [mean_std([r[k] for r in rs]) for k in keys]
            cells += [f"{np.mean([r['steps'] for r in rs]):.0f}", f"{np.mean([r['train_seconds'] for r in rs]) / 60:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        cut = sorted(r["run"] for r in group if r["steps"] < r["max_steps"])
        if cut:
            lines += [f"**{len(cut)} run(s) stopped at the time cap before {first['max_steps']} steps:** {', '.join(cut)}.", ""]
        for base in ("sup_ce", "sup_imbalance"):
            for fraction, share in gap_closed(group, base).items():
                if share > 1:
                    lines.append(f"- `full` at fraction {fraction:g} scores *above* `fully_supervised` (and `{base}`) at this budget.")
                elif share >= 0:
                    lines.append(f"- `full` at fraction {fraction:g} closes {share:.0%} of the F1 gap between `{base}` and `fully_supervised`.")
                else:
                    lines.append(f"- `full` at fraction {fraction:g} scores *below* `{base}`: it closes none of the F1 gap to `fully_supervised`.")
            for fraction, diffs in paired_differences(group, base).items():
                per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
                lines.append(f"- `full` − `{base}` at fraction {fraction:g}, paired by seed (same labeled images): "
                             f"F1 {np.mean(diffs):+.3f} on average ({per_seed}).")
        if lines[-1].startswith("- "):
            lines.append("")
        curves = sweep_points(group, "f1")
        if any(len(points) > 1 for points in curves.values()):
            fractions = sorted({f for points in curves.values() for f in points})
            lines += ["F1 by labeled fraction (at 1.0 both arms are the fully supervised run):", "",
                      "| labeled fraction | " + " | ".join(curves) + " |", "|" + "---|" * (len(curves) + 1)]
            for f in fractions:
                cells = [mean_std(curves[arm][f]) if f in curves[arm] else "" for arm in curves]
                lines.append(f"| {f:g} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def sweep_points(records: Sequence[dict], key: str) -> dict[str, dict[float, list[float]]]:
    """Values of ``key`` per sweep arm and labeled fraction; the fully supervised runs count as
    fraction 1.0 of every sweep arm."""
    ceiling = [r[key] for r in records if r["arm"] == "fully_supervised"]
    curves: dict[str, dict[float, list[float]]] = {}
    for arm in SWEEP_ARMS:
        points: dict[float, list[float]] = {}
        for r in records:
            if r["arm"] == arm:
                points.setdefault(r["labeled_fraction"], []).append(r[key])
        if points:
            if ceiling:
                points[1.0] = ceiling
            curves[arm] = dict(sorted(points.items()))
    return curves


def plot_f1_vs_fraction(records: Sequence[dict], path: Path) -> None:
    """F1 (mean ± sample std over seeds) against labeled fraction (log scale), one panel per dataset.

    Sweep arms are lines ending at the fully supervised point; other arms are single markers;
    the fully supervised F1 is a dashed line (the ceiling).
    """
    datasets = sorted({r["dataset"] for r in records})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        group = [r for r in records if r["dataset"] == dataset]
        curves = sweep_points(group, "f1")
        for arm, points in curves.items():
            xs = list(points)
            ax.errorbar(xs, [np.mean(v) for v in points.values()], yerr=[_std(v) for v in points.values()],
                        marker="o", capsize=3, label=arm)
        for arm in sorted({r["arm"] for r in group} - set(curves) - {"fully_supervised"}, key=_arm_order):
            fracs = sorted({r["labeled_fraction"] for r in group if r["arm"] == arm})
            f1s = [[r["f1"] for r in group if r["arm"] == arm and r["labeled_fraction"] == f] for f in fracs]
            ax.errorbar(fracs, [np.mean(v) for v in f1s], yerr=[_std(v) for v in f1s], marker="s", ls="none", capsize=3, label=arm)
        ceiling = [r["f1"] for r in group if r["arm"] == "fully_supervised"]
        if ceiling:
            ax.axhline(float(np.mean(ceiling)), color="grey", ls="--", label="fully_supervised")
        ax.set_xscale("log")
        ax.set_xlabel("labeled fraction of the training images")
        ax.set_ylabel("test F1 at 0.5")
        ax.set_ylim(0, 1)
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_examples(records: Sequence[dict], out: Path, pairs: dict[str, Pair], stems: Sequence[str], labeled_fraction: float,
                  path: Path) -> None:
    """Example test images, one row each: image, ground truth, then the foreground probability of
    each of :data:`EXAMPLE_ARMS` that ran at ``labeled_fraction`` (1.0 for ``fully_supervised``), first seed."""
    runs: list[dict] = []
    for arm in EXAMPLE_ARMS:
        fraction = 1.0 if ARMS[arm].all_labeled else labeled_fraction
        rs = [r for r in records if r["arm"] == arm and r["labeled_fraction"] == fraction
              and (out / "examples" / f"{r['run']}.npz").is_file()]
        if rs:
            runs.append(min(rs, key=lambda r: r["seed"]))
    probs = [np.load(out / "examples" / f"{r['run']}.npz") for r in runs]
    ncols = 2 + len(runs)
    fig, axes = plt.subplots(len(stems), ncols, figsize=(3 * ncols, 2.4 * len(stems)), squeeze=False)
    for row, stem in zip(axes, stems):
        image_path, mask_path = pairs[stem]
        image = read_photo(image_path)
        row[0].imshow(np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], cmap=None if image.shape[0] == 3 else "gray")
        row[0].set_title(stem, fontsize=8)
        row[1].imshow(read_mask(mask_path) > 0, cmap="gray")
        row[1].set_title("ground truth", fontsize=8)
        for ax, r, p in zip(row[2:], runs, probs):
            ax.imshow(p[stem], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{r['arm']} ({r['labeled_fraction']:g}, s{r['seed']}) F1 {r['f1']:.2f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_reports(records: Sequence[dict], out: Path, pairs: dict[str, Pair], examples: Sequence[str],
                  labeled_fraction: float) -> None:
    """Write ``results.md``, ``f1_vs_fraction.png`` and ``examples.png`` (runs at ``labeled_fraction``)
    from the records so far."""
    if not records:
        return
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text(summarise(records))
    plot_f1_vs_fraction(records, out / "f1_vs_fraction.png")
    plot_examples(records, out, pairs, examples, labeled_fraction, out / "examples.png")


# -- command line -----------------------------------------------------------------------------
def quiet_lightning() -> None:
    """Silence Lightning's per-run banners and the warnings every short benchmark run repeats."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for noise in (".*does not have many workers.*", ".*module\\(s\\) in eval mode.*", ".*LeafSpec.*", ".*no `val_dataloader`.*"):
        warnings.filterwarnings("ignore", message=noise)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (and optionally unlabeled/)")
    p.add_argument("--test-dir", help="score on this folder (images/ + masks/) instead of a held-out part of --data")
    p.add_argument("--labeled-fraction", type=float, default=0.035, help="labeled share of the training images (default 0.035)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="compute budget (default cpu)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="default: all six")
    p.add_argument("--sweep", action="store_true", help="also run sup_imbalance and full at each of --fractions")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.035, 0.1, 1.0])
    p.add_argument("--encoder", choices=ENCODERS, help="override the profile's encoder (every arm)")
    p.add_argument("--max-steps", type=int, help="override the profile's steps (every arm)")
    p.add_argument("--device", default="auto", help="scoring device: auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="keep out/results.json and skip its runs")
    p.add_argument("--no-keep-bundles", dest="keep_bundles", action="store_false", help="delete each run's bundle after scoring")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; print progress and the final table."""
    args = parse_args(argv)
    quiet_lightning()
    profile = PROFILES[args.profile]
    if args.encoder:
        profile = replace(profile, name=f"{profile.name}+{args.encoder}", encoder=args.encoder)
    if args.max_steps:
        profile = profile.with_steps(args.max_steps)
    start = time.perf_counter()
    try:
        records = run_benchmark(
            args.dataset, args.data, args.out, profile=profile, seeds=args.seeds, labeled_fraction=args.labeled_fraction,
            arms=args.arms, sweep=args.sweep, fractions=args.fractions, test_dir=args.test_dir, resume=args.resume,
            keep_bundles=args.keep_bundles, device=args.device,
        )
    except GeoccsegError as exc:
        print(f"benchmark_quality: error: {exc}", file=sys.stderr)
        return 2
    print(summarise(records))
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
