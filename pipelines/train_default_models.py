#!/usr/bin/env python
"""Train the models shipped in the package (``--model road`` / ``--model crack``) and record how.

Each shipped model follows a :class:`Recipe`: its training sources (photo folders, each split into
train / select / test once and for all), its :class:`~geoccseg.train.TrainConfig` options (chosen
on the select images by the measurements in the README, never on a test or transfer set), and its
step budget. The run trains on every training image of every source (full supervision: with all
labels the method has nothing left to add), keeps the checkpoint of the best F1 on the union of the
sources' select images, chooses the decision threshold on those select images (the crack model's
on them pooled with half-contrast copies of them: :mod:`geoccseg.benchmark.threshold`), and then scores:

* each source's held-out **test** images (pixel metrics of :mod:`geoccseg.benchmark.score`);
* the **transfer** set, data the model never saw and nothing was chosen on: CrackForest photos for
  the crack model; the shipped SpaceNet Las Vegas sample and its 38 centrelines for the road model
  (completeness / correctness at 5 m through ``geoccseg predict`` and ``geoccseg evaluate``).

Everything lands in the bundle's ``training`` record; the weights are exported as float16
safetensors into ``geoccseg/assets/models/<name>/`` with a licence note::

    python pipelines/train_default_models.py --models crack --work ../bench/shipped --seed 1
    python pipelines/train_default_models.py --models road --work ../bench/shipped

(each recipe's step budget: crack 2400, road 1200; ``--steps`` overrides it).

``--work`` keeps each run (``<work>/<name>/``; an interrupted run resumes from its checkpoint).
A candidate change of a recipe is measured with ``--option KEY=VALUE`` (a TrainConfig field, as
YAML) and a ``--target-root`` outside the package, so the shipped model stays until the candidate
wins on the select images::

    python pipelines/train_default_models.py --models crack --work ../bench/crack-appearance \
        --option appearance_augment=true --target-root ../bench/crack-appearance/export

A model fine-tuned from another (``--option init_from=crack``) keeps that model's held-out
images (it has trained on the rest), and ``--option pseudo=true --option contrastive=true --option
unlabeled=[FOLDER]`` turns the method's unlabeled terms on over a folder of unlabeled photos: the
shipped crack model adapted to another camera's pavement without its labels (the folder is recorded
in the bundle; a transfer set scored after its unlabeled photos were trained on is no longer unseen)::

    python pipelines/train_default_models.py --models crack --work ../bench/crack-adapt --steps 300 \
        --option init_from=crack --option lr=0.0002 --option pseudo=true --option contrastive=true \
        --option distribution_alignment=true --option unlabeled=[../shared/data/cfd/unlabeled] \
        --target-root ../bench/crack-adapt/export

(the settings measured in the README, "adapting with the method over unlabeled photos": a lower
learning rate keeps the converged weights, and distribution alignment keeps the teacher from
teaching the other camera's fainter cracks as background).

``--rethreshold`` trains nothing: it chooses the threshold of the model in ``--target-root`` again
by its recipe's rule and scores it again (the training record is kept)::

    python pipelines/train_default_models.py --models crack --rethreshold --work ../bench/rethreshold
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path


from geoccseg.benchmark.design import data_root, train_options
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.score import Score, foreground_probability, score_bundle, score_thresholds
from geoccseg.benchmark.runs import one_line_errors, same_config
from geoccseg.train.callbacks import run_finished
from geoccseg.benchmark.split import SHIPPED_SOURCES, Pair, Source, check_unlabeled, link_pairs, read_pairs, recorded_splits
from geoccseg.benchmark.threshold import choose_threshold
from geoccseg.evaluate import evaluate as evaluate_files
from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.io.bundle import resolve_model, save_bundle
from geoccseg.models import load_bundle
from geoccseg.train import TrainConfig, train
from geoccseg.train.run import killed_before_first_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root(ROOT)


@dataclass(frozen=True)
class Recipe:
    """How a shipped model is trained and what it is scored on."""

    classes: tuple[str, ...]
    sources: tuple[Source, ...]
    pixel_size_m: float | None
    options: dict = field(default_factory=dict)
    tolerance_px: float | None = None
    licence: str = ""
    threshold_contrast: float | None = None  # the threshold is chosen with fainter select copies too (geoccseg.benchmark.threshold)
    steps: int = 1200  # optimiser steps (4x the benchmark's 300); the step with the best select F1 is kept


RECIPES: dict[str, Recipe] = {
    "road": Recipe(
        classes=("road",), pixel_size_m=1.0, tolerance_px=3.0,
        sources=SHIPPED_SOURCES["road"],
        options={"appearance_augment": True},
        licence="Trained on Massachusetts Roads (V. Mnih, PhD thesis, University of Toronto 2013: imagery MassGIS, labels "
                "OpenStreetMap, ODbL; research use) and the Dubai aerial imagery of Humans in the Loop and MBRSC (CC0 1.0). "
                "Use these weights for research and evaluation.",
    ),
    "crack": Recipe(
        classes=("crack",), pixel_size_m=None,
        sources=SHIPPED_SOURCES["crack"],
        # per-image normalisation and photometric jitter (no inversion): on the photo split, two seeds
        # each, they beat the zoom-out recipe alone on the select photos (README, "Cracks, on the photo split")
        options={"crop_area_max": 4.0, "per_image_norm": True, "appearance_augment": True, "appearance_invert_p": 0.0},
        threshold_contrast=0.5,
        steps=2400,  # twice the road model's: the select F1 of both seeds peaked past 1200 (README, "twice the training budget")
        licence="Trained on DeepCrack (Liu et al., Neurocomputing 338, 2019), licensed for non-commercial research only; "
                "these weights inherit that restriction.",
    ),
}


def score_pairs(bundle, pairs: dict[str, Pair], thresholds: tuple[float, ...], tolerance_px: float | None = None) -> list[Score]:
    """The pixel metrics of the pairs at each threshold, predicting each image once (whole, as the benchmark)."""
    return score_thresholds(pairs, thresholds, lambda stem, image, valid: foreground_probability(bundle, image, valid=valid), tolerance_px,
                            bands=len(bundle.meta.bands))


def score_sample_scene(bundle_dir: Path, threshold: float, work: Path, data_root: Path) -> dict:
    """Completeness / correctness (5 m) of the road lines on the shipped sample against its centrelines."""
    from geoccseg.io.catalog import sample_scene
    from geoccseg.inference.pipeline import run_predict

    lines = work / "sample_roads.gpkg"
    run_predict(sample_scene(), lines, model=bundle_dir, threshold=threshold, overwrite=True, progress=False)
    result = evaluate_files(lines, data_root / "spacenet-vegas" / "vegas_img0_roads.geojson", buffer_m=5.0).classes[0]
    return {"completeness": result.completeness, "correctness": result.correctness, "quality": result.quality}


def metrics(score) -> dict:
    m = score.metrics()
    return {k: m[k] for k in ("n_test", "precision", "recall", "f1", "iou", "ods_f1", "ods_threshold", "relaxed_f1") if m.get(k) is not None}


def build(name: str, work: Path, data_root: Path, steps: int, val_every: int, target_root: Path, seed: int = 0,
          max_minutes: float | None = None, options: dict | None = None) -> Path:
    """Train (or resume) the recipe's run in ``work/name`` and export it into ``target_root/name``;
    ``options`` (TrainConfig fields) are laid over the recipe's."""
    recipe = RECIPES[name]
    if options:
        recipe = replace(recipe, options={**recipe.options, **options})
    run = work / name
    parent = recipe.options.get("init_from")
    if parent:  # a fine-tuned model has trained on its parent's images: it keeps the parent's held-out ones
        parent_dir = resolve_model(parent)
        if parent_dir.resolve() == (target_root / name).resolve():
            raise GeoccsegError(f"--option init_from={parent} is the model this run would replace ({target_root / name}); "
                                "give another --target-root")
        parent_training = load_bundle(parent_dir).meta.training
        try:
            splits = recorded_splits(parent_training, recipe.sources, data_root)
        except GeoccsegError as exc:
            raise GeoccsegError(f"--option init_from={parent}: {exc}") from None
    else:
        splits = {s.name: s.split(data_root) for s in recipe.sources}
    held_out = {source: {part: sorted(parts[part]) for part in ("select", "test")} for source, parts in splits.items()}
    with tempfile.TemporaryDirectory() as tmp:
        # one training folder per source (train takes several), one select folder for all
        train_dirs = [link_pairs(Path(tmp) / "train" / name, parts["train"]) for name, parts in splits.items()]
        select_pairs = {s: p for parts in splits.values() for s, p in parts["select"].items()}
        select_dir = link_pairs(Path(tmp) / "select", select_pairs)
        # every image is labeled: the benchmark's fully_supervised arm, unless the options turn the
        # unlabeled terms on (with --option unlabeled=[FOLDER]: photos of another camera, unlabeled)
        arm_options = {"pseudo": False, "contrastive": False, **recipe.options}
        # folders as absolute paths: a resume from another working folder compares the same photos
        arm_options["unlabeled"] = [str(Path(folder).resolve()) for folder in arm_options.get("unlabeled", [])]
        for folder in arm_options["unlabeled"]:  # training keeps only the select photos out of them: never a test image either
            for source in recipe.sources:
                parts = splits[source.name]
                check_unlabeled(Path(folder), {*parts["select"], *parts["test"]}, source.photo_of,
                                [pair[0] for part in ("select", "test") for pair in parts[part].values()])
        config = TrainConfig(
            out=str(run), images=[str(d / "images") for d in train_dirs], masks=[str(d / "masks") for d in train_dirs],
            val_images=str(select_dir / "images"), val_masks=str(select_dir / "masks"), labeled_fraction=1.0,
            classes=list(recipe.classes), pixel_size_m=recipe.pixel_size_m, encoder="efficientnet-lite0",
            max_steps=steps, max_minutes=max_minutes, val_every=val_every, seed=seed, progress=True, **arm_options,
        )
        if run.exists() and (run / "config.yaml").is_file() and not same_config(run, config):
            raise GeoccsegError(f"{run} holds a run of other settings (options, steps or seed); "
                                "choose another --work folder")
        check_run_split(run, held_out)
        if not run_finished(run):
            # a run killed before its first checkpoint starts over (train says so); anything else in the way is refused
            train(replace(config, resume=(run / "checkpoints" / "last.ckpt").is_file() or killed_before_first_checkpoint(run)))
    bundle = load_bundle(run)
    record = {
        "default_model": name, "arm": "method" if config.pseudo or config.contrastive else "fully_supervised",
        "encoder": "efficientnet-lite0", "options": recipe.options,
        "sources": {s.name: {"folder": s.folder, **{part: len(p) for part, p in splits[s.name].items()}} for s in recipe.sources},
        "seed": seed, "steps": bundle.meta.training.get("steps"), "saved_step": bundle.meta.training.get("saved_step"),
        "train_minutes": train_minutes(run),  # training only (validation excluded), all sessions of a resumed run
        "held_out": held_out,  # the select and test stems of each source; every other image was trained on
        # folders of unlabeled photos (masks never read) and how many of their photos it trained on
        "unlabeled": {"folders": list(config.unlabeled), "photos": bundle.meta.training.get("data", {}).get("num_unlabeled")},
        "licence": recipe.licence,
    }
    if parent:
        record["fine_tuned_from"] = {"model": str(parent), "steps": parent_training.get("steps"),
                                     "train_minutes": parent_training.get("train_minutes")}
    return finish(name, recipe, bundle, record, splits, data_root, target_root, run)


def rethreshold(name: str, data_root: Path, target_root: Path, work: Path) -> Path:
    """Choose the threshold of the exported model ``target_root/name`` again by its recipe's rule
    and score it again on the held-out images it records, without training (its training record
    is kept)."""
    recipe = RECIPES[name]
    bundle = load_bundle(target_root / name)
    splits = recorded_splits(bundle.meta.training, recipe.sources, data_root)
    work.mkdir(parents=True, exist_ok=True)
    return finish(name, recipe, bundle, dict(bundle.meta.training), splits, data_root, target_root, work)


def finish(name: str, recipe: Recipe, bundle, record: dict, splits: dict, data_root: Path, target_root: Path, work: Path) -> Path:
    """Choose the threshold on the select images, score the held-out test and transfer sets, and
    export the model (float16) with ``record`` and the scores into ``target_root/name``."""
    select_pairs = {s: p for parts in splits.values() for s, p in parts["select"].items()}
    threshold, select_f1, pooled_f1 = choose_threshold(bundle, select_pairs, recipe.threshold_contrast)
    record.update({
        "machine": machine(),  # of the scoring; runs are compared only within one machine (geoccseg.benchmark.machine)
        "threshold": threshold, "select_f1": select_f1,  # select F1 at that threshold
        "select_pooled_f1": pooled_f1,  # F1 over what the threshold was chosen on (with the copies, if any)
        "threshold_rule": "best F1 on the select images" + (f" and their copies at contrast {recipe.threshold_contrast:g}"
                                                            if recipe.threshold_contrast is not None else ""),
        "held_out_test": {s: metrics(score_bundle(bundle, splits[s]["test"], recipe.tolerance_px)) for s in splits},  # at 0.5
    })
    record["held_out_test_at_threshold"] = {}  # at the model's own threshold, the one it ships with
    for s in splits:
        (at_own,) = score_pairs(bundle, splits[s]["test"], (threshold,), recipe.tolerance_px)
        record["held_out_test_at_threshold"][s] = {"precision": at_own.pixels.precision, "recall": at_own.pixels.recall,
                                                   "f1": at_own.pixels.f1, "relaxed_f1": at_own.pixels.relaxed_f1}
    # the transfer sets: never trained on, nothing chosen on them
    if name == "crack":
        at_half, at_own = score_pairs(bundle, read_pairs(data_root / "cfd"), (0.5, threshold), 2.0)
        s = at_own.pixels
        record["transfer"] = {"cfd": metrics(at_half),
                              "cfd_at_threshold": {"precision": s.precision, "recall": s.recall, "f1": s.f1, "relaxed_f1": s.relaxed_f1}}
    bundle.model.half()  # float16 halves the shipped size; loading casts back to float32
    bundle.meta.threshold = threshold
    if name == "road":  # scored as shipped (float16 weights), through the user's commands, before anything is replaced
        with tempfile.TemporaryDirectory() as tmp:
            record["transfer"] = {"spacenet_vegas_sample": score_sample_scene(save_bundle(Path(tmp) / name, bundle.model, bundle.meta),
                                                                              threshold, work, data_root)}
    print(json.dumps(record, indent=1))
    bundle.meta.training.update(record)
    target = target_root / name
    save_bundle(target, bundle.model, bundle.meta)
    with atomic_path(target / "LICENCE.md", overwrite=True) as tmp_licence:
        tmp_licence.write_text(f"# The `{name}` model\n\n{recipe.licence}\n")
    return target


def check_run_split(run: Path, held_out: dict) -> None:
    """Record the held-out stems of a new run in ``run/split.json``, and refuse to continue or
    rescore a run whose recorded stems differ (another --data-root, or a source split another way:
    its "select" and "test" images would include images it trained on).

    Raises:
        GeoccsegError: ``run/split.json`` records other held-out stems; or the run was begun
            without one (before splits were recorded) and its bundle names no training images,
            or names some of today's held-out ones.
    """
    path = run / "split.json"
    if path.is_file():
        if json.loads(path.read_text()) != held_out:
            raise GeoccsegError(f"{run} was trained with other held-out images than --data-root's split now gives "
                                f"({path}); choose another --work folder")
        return
    if (run / "config.yaml").is_file():  # begun before splits were recorded: its bundle names what it trained on
        try:
            trained = set(json.loads((run / "bundle.json").read_text())["training"]["data"]["labeled"])
        except (OSError, ValueError, KeyError, TypeError):
            raise GeoccsegError(f"{run} holds a run begun before its held-out images were recorded, and no bundle names "
                                "what it trained on: choose another --work folder") from None
        held = {stem for parts in held_out.values() for stems in parts.values() for stem in stems}
        if trained & held:
            raise GeoccsegError(f"{run} was trained on {len(trained & held)} of today's held-out images (another split); "
                                "choose another --work folder")
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(held_out, indent=1) + "\n")


def train_minutes(run: Path) -> float | None:
    """Minutes spent training ``run`` (``seconds`` of the last timed row of its ``metrics.csv``:
    validation excluded, continued across resumes); None without rows."""
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    rows = path.read_text().splitlines()
    if len(rows) < 2:
        return None
    column = rows[0].split(",").index("seconds")
    timed = [row.split(",")[column] for row in rows[1:] if row.split(",")[column]]  # validation rows have none
    return round(float(timed[-1]) / 60, 1) if timed else None


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "train_default_models")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder of the training runs (one sub-folder per model)")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, help="optimiser steps [the recipe's: road 1200, crack 2400]")
    parser.add_argument("--val-every", type=int, default=150, help="steps between scorings of the select images")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (initialisation, chips); each shipped bundle records its own (road 0, crack 1)")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget of a training run (it then stops as if done)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig option laid over the recipe's (value read as YAML), to measure a candidate")
    parser.add_argument("--target-root", type=Path, default=ROOT / "geoccseg" / "assets" / "models",
                        help="where the exported models go (default: the package's shipped models)")
    parser.add_argument("--rethreshold", action="store_true",
                        help="no training: choose the threshold of the model in --target-root again by its recipe's rule and rescore it")
    args = parser.parse_args(argv)
    try:
        options = train_options(args.option)
    except GeoccsegError as exc:
        parser.error(str(exc))
    for name in args.models:
        if args.rethreshold:
            target = rethreshold(name, args.data_root, args.target_root, args.work / name)
        else:
            steps = args.steps if args.steps is not None else RECIPES[name].steps
            target = build(name, args.work, args.data_root, steps, args.val_every, args.target_root, seed=args.seed,
                           max_minutes=args.max_minutes, options=options)
        print(f"{name}: {target} ({sum(p.stat().st_size for p in target.iterdir()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
