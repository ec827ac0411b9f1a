"""Running a benchmark: train and score each run, keep resumable records.

:func:`run_benchmark` trains every :class:`~geoccseg.benchmark.design.RunSpec` of the plan into
``out/runs/<run>/``, scores the saved bundle on the test images
(:func:`~geoccseg.benchmark.score.score_bundle`) and appends one record (:data:`RECORD_FIELDS`) to
``out/results.json``, rewritten atomically after every run, so an interrupted benchmark resumes
where it stopped (``resume=True`` skips the runs it holds; a run stopped after its first
checkpoint continues from that checkpoint, with the same data stream, rather than starting over).

**Labels.** For each seed and labeled fraction, :func:`~geoccseg.data.photos.split_labeled` over the
training stems chooses the labeled stems once; every arm of that seed and fraction gets exactly
this list (``labeled_names``), and the other training stems (plus ``data/unlabeled/`` if it
exists) are the unlabeled images of the semi-supervised arms. ``fully_supervised`` labels every
training stem.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from geoccseg.benchmark.design import ARMS, DATASETS, PROFILES, Profile, RunSpec, plan_runs, train_config
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.report import write_reports
from geoccseg.benchmark.score import pick_examples, score_bundle
from geoccseg.benchmark.split import Pair, check_split, kept_photo_of, link_pairs, make_split, unlabeled_folders
from geoccseg.data.photos import list_images, split_labeled
from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.models import load_bundle
from geoccseg.train import TrainConfig, train
from geoccseg.train.callbacks import run_finished
from geoccseg.train.checkpoint import load_checkpoint
from geoccseg.train.run import CHECKPOINTS, LAST

#: Fields of every record of ``results.json``. Records written since December 2026 also name the
#: ``machine`` (:func:`~geoccseg.benchmark.machine.machine`): compare arms only on one machine.
RECORD_FIELDS = (
    "run", "dataset", "arm", "labeled_fraction", "seed", "profile", "encoder", "tile_px", "max_steps", "steps",
    "train_seconds", "device", "n_labeled", "n_unlabeled", "n_test", "select_f1", "precision", "recall", "f1", "iou",
    "ods_f1", "ods_threshold", "ois_f1", "relaxed_precision", "relaxed_recall", "relaxed_f1", "labeled",
)


def load_records(path: Path, key: str = "run") -> list[dict]:
    """Records of a ``results.json`` (empty when it does not exist), each naming its run under ``key``.

    Raises:
        GeoccsegError: if the file is not a JSON list of records.
    """
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GeoccsegError(f"{path} is not valid JSON ({exc}); remove it or choose another --out") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and key in r for r in records):
        raise GeoccsegError(f"{path} is not a list of benchmark records; remove it or choose another --out")
    return records


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, atomically."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


#: Where a benchmark that measures row after row keeps its rows until it ends (:func:`save_partial`):
#: an interrupted run leaves them there, never a results.json beside an older run's results.md.
PARTIAL = "results.partial.json"


def claim_results(out: Path, overwrite: bool) -> None:
    """Create ``out`` for a benchmark's results, refusing a folder that holds an earlier run's
    (``results.json``, ``results.md``, or the rows of a stopped one, :data:`PARTIAL`) unless
    ``overwrite``: a rerun replaced them without asking.

    Raises:
        GeoccsegError: ``out`` holds results and ``overwrite`` is false.
    """
    held = [name for name in ("results.json", "results.md", PARTIAL) if (out / name).exists()]
    if held and not overwrite:
        raise GeoccsegError(f"{out} already holds {' and '.join(held)} of an earlier run; pass --overwrite to replace "
                            "them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def save_partial(out: Path, value: object) -> None:
    """The rows measured so far, in ``out``/:data:`PARTIAL` (the results are written by :func:`save_results`)."""
    write_json(out / PARTIAL, value)


def save_results(out: Path, value: object, report: str) -> None:
    """A finished benchmark's ``results.json`` and ``results.md`` (the table ``report``), then
    the rows :func:`save_partial` kept are dropped."""
    write_json(out / "results.json", value)
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text(report)
    (out / PARTIAL).unlink(missing_ok=True)


def quiet_lightning() -> None:
    """Silence Lightning's per-run banners and the warnings every short benchmark run repeats."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for noise in (".*does not have many workers.*", ".*module\\(s\\) in eval mode.*", ".*LeafSpec.*", ".*no `val_dataloader`.*"):
        warnings.filterwarnings("ignore", message=noise)


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
        dataset: a key of :data:`~geoccseg.benchmark.design.DATASETS`.
        data: folder with ``images/`` and ``masks/`` (and optionally ``unlabeled/``).
        out: output folder (created).
        profile: a key of :data:`~geoccseg.benchmark.design.PROFILES`, or a :class:`Profile`.
        seeds: training seeds (labeled choice, initialisation, chips).
        labeled_fraction: share of the training images that carry labels in the ablation arms.
        arms: arms to run (keys of :data:`~geoccseg.benchmark.design.ARMS`).
        sweep: also run the sweep arms at each of ``fractions``.
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
    pairs, split, test_pairs = make_split(data, test_dir, kept_photo_of(out, dataset))
    unlabeled = unlabeled_folders(data, split)
    split_path = out / "split.json"
    if records:
        check_split(out, split)
    if profile.max_test_images is not None:
        test_pairs = dict(list(test_pairs.items())[: profile.max_test_images])
    check_records_split(records, split, len(test_pairs), results_path)  # before split.json: a refused guess is not written
    for folder in (out / "runs", out / "examples"):
        folder.mkdir(parents=True, exist_ok=True)
    write_json(split_path, split)
    examples = pick_examples(test_pairs)

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


def train_and_score(spec: RunSpec, dataset: str, profile: Profile, folders: dict[str, Path], train_stems: list[str],
                    unlabeled: list[Path], test_pairs: dict[str, Pair], out: Path, keep_bundle: bool = True,
                    device: str = "auto", examples: Sequence[str] = (), labeled: Sequence[str] | None = None,
                    name: str | None = None) -> dict:
    """Train one run into ``out/runs/<run>/``, score it on the test pairs and return its record.

    The labeled stems are ``labeled`` when given, else ``split_labeled(train_stems, fraction, seed)``
    (all of them for ``fully_supervised``), so every arm of a seed and fraction shares them. The run
    is named ``name``, else :meth:`RunSpec.name`. The probability maps of ``examples`` go to
    ``out/examples/<run>.npz``; optimiser checkpoints are removed, and the whole run folder too
    unless ``keep_bundle``.
    """
    arm = ARMS[spec.arm]
    name = name or spec.name(dataset)
    if labeled is not None:
        labeled = sorted(labeled)
    elif arm.all_labeled:
        labeled = list(train_stems)
    else:
        labeled = split_labeled(list(train_stems), spec.labeled_fraction, spec.seed)[0]
    semi = arm.pseudo or arm.contrastive
    run_dir = out / "runs" / name
    config = train_config(spec, dataset, profile, folders, labeled, unlabeled if semi else [], run_dir)
    resumed_from = interrupted_step(run_dir, config)
    if resumed_from is None and run_dir.exists():
        if run_finished(run_dir):  # a finished run whose record was lost (two invocations on one --out): never deleted
            raise GeoccsegError(f"{run_dir} holds a finished run that {out / 'results.json'} does not record (another "
                                "benchmark writing into the same --out?); move it away to train it again")
        shutil.rmtree(run_dir)  # left by a run interrupted before its first checkpoint: train it again
    result = train(replace(config, resume=resumed_from is not None))
    score = score_bundle(load_bundle(run_dir), test_pairs, DATASETS[dataset].tolerance_px, device, examples)
    if examples:
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
        "machine": machine(), "n_labeled": len(labeled), "n_unlabeled": n_unlabeled if semi else 0, "select_f1": result.validation.get("f1"),
        **score.metrics(), "labeled": labeled,  # records since 2026-12-06 also hold model_threshold(_f1)
        **({"resumed_from_step": resumed_from} if resumed_from is not None else {}),  # train_seconds: the resumed part only
    }


def check_records_split(records: list[dict], split: dict, n_test: int, path: Path) -> None:
    """Refuse to continue records made on another split than ``split``: a run whose labeled images
    are not all training images of it, or that was scored on another number of test images (a
    folder whose ``split.json`` was lost, whose split :func:`kept_photo_of` can only guess).

    Raises:
        GeoccsegError: naming the first such run.
    """
    train = set(split["train"])
    for record in records:
        if not set(record.get("labeled", [])) <= train or record.get("n_test", n_test) != n_test:
            raise GeoccsegError(f"{path} holds run {record.get('run')} of another split than this one (its labeled images or its "
                                f"number of test images differ); resume with the benchmark's own data and split.json, or choose another --out")


_LINKED = ("resume", "images", "masks", "val_images", "val_masks")
"""Config keys that differ between two runs of one benchmark: the train and select folders are links
made afresh in a temporary folder by each invocation (the split itself is checked against split.json)."""


def continue_or_clear(run_dir: Path, config: TrainConfig) -> int | None:
    """Prepare a script's own run folder ``run_dir`` for ``config``: the step its interrupted run
    continues from, or None to train from the start. A run of these settings stopped before its
    first checkpoint is removed (its config.yaml records these settings: the folder is that run's);
    a finished run is kept, and a folder without config.yaml is left to training (which refuses
    files of its own names that it did not write).

    Raises:
        GeoccsegError: ``run_dir`` holds a run of other settings (nothing is removed).
    """
    recorded = (run_dir / "config.yaml").is_file()
    if recorded and not same_config(run_dir, config):
        raise GeoccsegError(f"{run_dir} holds a run of other settings; choose another --out")
    resumed = interrupted_step(run_dir, config)
    if resumed is None and recorded and not run_finished(run_dir):
        shutil.rmtree(run_dir)
    return resumed


def interrupted_step(run_dir: Path, config: TrainConfig) -> int | None:
    """The step an interrupted run of ``config`` in ``run_dir`` can continue from (its checkpoint's),
    or None: no checkpoint, or one of another configuration (then the run starts over)."""
    ckpt = run_dir / CHECKPOINTS / LAST
    if not ckpt.is_file() or not same_config(run_dir, config):
        return None
    try:
        return int(load_checkpoint(ckpt)["global_step"])
    except (GeoccsegError, KeyError, TypeError, ValueError):
        return None


def same_config(run_dir: Path, config: TrainConfig) -> bool:
    """Whether the run in ``run_dir`` was trained with ``config`` (its ``config.yaml``), the
    temporary train and select links and ``resume`` aside (:data:`_LINKED`); an option added since
    the run was written counts as its default there (the run trained as that default does)."""
    try:
        before = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(before, dict):
        return False
    now = yaml.safe_load(config.to_yaml())
    defaults = yaml.safe_load(TrainConfig(out="-").to_yaml())
    before = {**{k: defaults[k] for k in now.keys() - before.keys() if k in defaults}, **before}
    return {k: v for k, v in before.items() if k not in _LINKED} == {k: v for k, v in now.items() if k not in _LINKED}


def one_line_errors(run: Callable[[list[str] | None], int], argv: list[str] | None, script: str) -> int:
    """``run(argv)``, the body of a pipeline script's ``main``, with a :class:`GeoccsegError` (bad
    data, a model without its held-out record) printed as one line ``<script>: error: ...`` and
    exit status 2 instead of a traceback."""
    try:
        return run(argv)
    except GeoccsegError as exc:
        print(f"{script}: error: {exc}", file=sys.stderr)
        return 2
