"""``train(config)``: build the data, the module and a Lightning trainer, fit, write the bundle.

The same function serves ``geoccseg train``, the notebooks and the benchmark pipelines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from geoccseg.data.base import TrainingData
from geoccseg.data.photos import PhotoTrainingData
from geoccseg.cores import usable_cores
from geoccseg.data.scenes import SceneTrainingData
from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.io.bundle import BundleMeta, is_weights_file, resolve_model
from geoccseg.models import Bundle, ModelConfig, load_bundle
from geoccseg.models.pretrained import source as pretrained_source
from geoccseg.train.callbacks import RunRecorder, TimeBudget, run_finished
from geoccseg.train.centreline import label_half_width_px
from geoccseg.train.checkpoint import (
    PeriodicCheckpoint, SafeCheckpointIO, check_architecture, check_same_run, load_checkpoint, run_identity,
    world_size_note,
)
from geoccseg.train.config import TrainConfig
from geoccseg.train.module import SemiSupervisedSegmenter
from geoccseg.train.signals import StopSignals, TrainingStopped
from geoccseg.train.stream import ChipStream, ItemList

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"


@dataclass
class TrainResult:
    """Where the run wrote its outputs and what it measured."""

    out: Path
    steps: int
    seconds: float
    device: str
    validation: dict
    labeled: list[str] | None

    @property
    def bundle(self) -> Path:
        return self.out


def build_data(c: TrainConfig, start: Bundle | None = None) -> TrainingData:
    """The training data a config describes (GeoTIFF scenes or photo folders).

    When fine-tuning from ``start``, the data is normalised with its statistics and, unless the
    config sets one, sampled at its pixel size: the weights only make sense for inputs like those
    they were trained on.
    """
    norm = start.meta.norm if start else None
    per_image = c.per_image_norm or (norm is not None and norm.per_image)
    pixel_size_m = c.pixel_size_m if c.pixel_size_m is not None or start is None else start.meta.pixel_size_m
    if c.source == "scenes":
        # a per-image model on scenes: each scene's chips are normalised with that scene's own
        # statistics, as prediction normalises a scene with its own
        data = SceneTrainingData(
            c.scenes, labels=c.labels, aoi=c.aoi, val_aoi=c.val_aoi, classes=c.classes, class_column=c.class_column,
            width_m=c.width_m, bands=c.bands, tile_px=c.tile_px, pixel_size_m=pixel_size_m, norm=norm, per_image=per_image,
            resumed=c.resume,
        )
    else:
        data = PhotoTrainingData(
            c.images, c.masks, labeled_fraction=c.labeled_fraction, seed=c.seed, val_fraction=c.val_fraction,
            val_images=c.val_images, val_masks=c.val_masks, unlabeled_dirs=c.unlabeled, classes=c.classes,
            tile_px=c.tile_px, pixel_size_m=pixel_size_m, labeled_names=c.labeled_names, norm=norm,
            source_pixel_sizes_m=c.images_pixel_size_m or None, resumed=c.resume,
        )
    if per_image:
        data.norm = replace(data.norm, per_image=True)
    return data


def starting_bundle(c: TrainConfig) -> Bundle | None:
    """The bundle ``init_from`` names (shipped name or folder), or None to train from scratch."""
    return load_bundle(resolve_model(c.init_from)) if c.init_from else None


def check_fits(start: Bundle, data: TrainingData) -> None:
    """Fine-tuning keeps the starting model's classes and input bands.

    Raises:
        GeoccsegError: the data has other classes or another number of bands.
    """
    if list(data.classes) != list(start.meta.classes):
        raise GeoccsegError(
            f"cannot fine-tune {start.path}: it predicts {', '.join(start.meta.classes)} but the labels have "
            f"{', '.join(data.classes)}; pass --classes {','.join(start.meta.classes)} or train from scratch without --init-from"
        )
    if data.num_bands != len(start.meta.bands):
        raise GeoccsegError(
            f"cannot fine-tune {start.path}: it takes {len(start.meta.bands)} band(s) but the data has {data.num_bands}; "
            "pass --bands to select matching bands or train from scratch without --init-from"
        )


def _on_cuda(c: TrainConfig) -> bool:
    return accelerator(c) == "cuda"


def accelerator(c: TrainConfig) -> str:
    """``cuda`` or ``cpu``: where the run trains (``auto`` never lets Lightning pick another kind).

    Raises:
        GeoccsegError: CUDA asked for where PyTorch sees no GPU, or fewer GPUs than ``devices``.
    """
    if c.accelerator == "cpu" or (c.accelerator == "auto" and not torch.cuda.is_available()):
        return "cpu"
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise GeoccsegError(f"--accelerator {c.accelerator} asks for a CUDA GPU, but PyTorch sees none here; "
                            "train with --accelerator cpu (or auto)")
    if c.devices > available:
        raise GeoccsegError(f"--devices {c.devices} asks for {c.devices} GPUs, but PyTorch sees {available} here; "
                            f"pass --devices {available} or fewer")
    return "cuda"


def _precision(c: TrainConfig) -> str:
    if c.precision:
        return c.precision
    return "bf16-mixed" if _on_cuda(c) else "32-true"


def loader_workers(c: TrainConfig) -> int:
    """Worker processes drawing training chips: ``c.num_workers``, or by default none on the CPU and
    up to 4 per GPU on CUDA.

    On the CPU the step keeps every core busy, and a worker did not help on 2 cores (README,
    "Training speed"). On a GPU the chips are the limit without workers: one process draws a
    batch of 8 + 8 chips of 256 px in 60-120 ms (measured on this project's CPU), several times a
    small network's step on a GPU.
    """
    if c.num_workers is not None:
        return c.num_workers
    if not _on_cuda(c):
        return 0
    return max(0, min(4, usable_cores() // c.devices - 1))


def train(config: TrainConfig) -> TrainResult:
    """Train a model and write the bundle (``bundle.json`` and the weights), ``config.yaml``,
    ``metrics.csv``, ``training.png`` and ``checkpoints/last.ckpt`` into ``config.out``.

    The output folder is created only once the data has been read and checked; if this run
    created it and fails before its first checkpoint, the files it wrote there are removed.

    Raises:
        GeoccsegError: bad options or data; ``resume`` without an intact checkpoint in ``out``.
        TrainingStopped: SIGINT or SIGTERM stopped the run before its budget (the step reached is
            saved for ``resume`` and the bundle is marked interrupted).
    """
    c = config.validate()
    accelerator(c)  # a missing GPU is told before the data is read
    out = Path(c.out)
    check_out_folder(out)
    ckpt = out / CHECKPOINTS / LAST
    if c.resume and not ckpt.is_file():
        if not killed_before_first_checkpoint(out):
            raise GeoccsegError(f"cannot resume: {out} holds no checkpoint ({CHECKPOINTS}/{LAST}); train without --resume first")
        log.warning("geoccseg: note: the run in %s was stopped before its first checkpoint; nothing to resume, it starts over from step 0", out)
        c = replace(c, resume=False)  # its own files are written again
    elif not c.resume and _first_process():  # the other DDP processes start after it has written here
        refuse_to_replace(out)
    with StopSignals() as stop:
        resumed = load_checkpoint(ckpt) if c.resume else None  # never unpickled: safetensors + JSON
        pl.seed_everything(c.seed, workers=True, verbose=False)
        start = starting_bundle(c)
        data = build_data(c, start)
        identity = run_identity(c.to_yaml(), data.classes, data.summary(), data.class_counts(), data.norm.to_dict(),
                                inert=c.inert_options(), validation_pixels=data.validation_pixels)
        if resumed is not None:
            check_same_run(resumed, identity, ckpt)
            note = world_size_note(resumed, c.devices * c.num_nodes, c.batch_size)
            if note and _first_process():
                log.warning("geoccseg: warning: %s", note)
        if start is not None:
            check_fits(start, data)
            model_config = start.model.config  # parsed and checked by load_bundle
        else:
            model_config = ModelConfig(
                in_channels=data.num_bands, num_classes=len(data.classes) + 1, encoder=c.encoder, fusion=c.fusion,
                decoder_channels=c.decoder_channels, embed_dim=c.embed_dim, tf_same=c.encoder_tf_same,
            )
        if c.pseudo_centreline_px != "auto":
            centreline_px = float(c.pseudo_centreline_px)
        else:  # measured only where there are pseudo-labels to cut
            centreline_px = label_half_width_px(data) if c.pseudo else 0.0
        module = SemiSupervisedSegmenter(c, model_config, data.class_counts(), centreline_px)
        module.class_names = data.classes
        module.run_identity = identity
        if resumed is not None:
            module.schedule_steps = schedule_steps(resumed, out, c.max_steps)
        if start is not None:  # on --resume the checkpoint then replaces these weights
            module.start_from(start.model)
        if resumed is not None:
            check_architecture(resumed, module, ckpt)
        existing = own_outputs(out) | ({CHECKPOINTS} if (out / CHECKPOINTS).exists() else set())
        created = [p for p in (out, *out.parents) if not p.exists()]  # innermost first
        try:
            out.mkdir(parents=True, exist_ok=True)
            return _fit(c, data, module, model_config, resumed, stop)
        except BaseException:
            if not ckpt.is_file():  # nothing to resume: take back what this run wrote
                _remove_own_outputs(out, existing, created)
            raise


def _fit(c: TrainConfig, data: TrainingData, module: SemiSupervisedSegmenter, model_config: ModelConfig,
         resumed: dict | None, stop: StopSignals) -> TrainResult:
    """Lightning's fit (and a last validation if none ran) in ``c.out``, stopped cleanly by signals."""
    out = Path(c.out)
    ckpt = out / CHECKPOINTS / LAST
    settings = replace(c, resume=False).to_yaml()  # --resume is what this command did, not a setting: the file repeats the run
    meta = BundleMeta(
        model=model_config.to_dict(), classes=data.classes, bands=data.bands, norm=data.norm,
        pixel_size_m=data.pixel_size_m, tile_px=c.tile_px, training={"data": data.summary(), "config": settings},
    )
    if c.pseudo_centreline_px == "auto" and c.pseudo:  # the half-width measured on the labeled chips
        meta.training["pseudo_centreline_px"] = module.centreline_px
    if c.use_pretrained:  # where the encoder's starting weights came from
        src = pretrained_source(c.encoder)
        meta.training["pretrained"] = {"package": src.package, "sha256": src.sha256, "licence": src.licence, "data": "ImageNet-1k"}
    with atomic_path(out / "config.yaml", overwrite=True) as tmp:
        tmp.write_text(settings)

    start_step = resumed["global_step"] if resumed else 0
    stream = ChipStream(data, c.batch_size, c.unlabeled_batch_size if c.semi_supervised else 0, c.seed, start_step=start_step,
                        foreground_share=c.foreground_share)
    workers = loader_workers(c)
    train_loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    val_items = data.validation_items()
    val_list = ItemList(val_items)
    val_loader = DataLoader(val_list, batch_size=1) if val_items else None
    val_every = min(c.val_every, c.max_steps) if val_loader else None

    recorder = RunRecorder(out, meta)
    saver = PeriodicCheckpoint(ckpt, c.checkpoint_every, c.checkpoint_minutes, val_every, stop)
    callbacks = [recorder, saver, Ranks(stream, val_list)]
    if c.max_minutes:
        start = c.unlabeled_schedule_over(module.schedule_steps)[0] if c.semi_supervised else 0
        callbacks.append(TimeBudget(module.schedule_steps, c.max_steps, c.max_minutes, start, start_step,
                                    module._ramp if c.semi_supervised else None))
    if c.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    # the projection head joins the loss only once the unlabeled terms start, so DDP must allow
    # parameters without gradient in the early steps
    strategy = "ddp_find_unused_parameters_true" if c.devices > 1 or c.num_nodes > 1 else "auto"
    trainer = pl.Trainer(
        accelerator=accelerator(c), devices=c.devices, num_nodes=c.num_nodes, strategy=strategy, precision=_precision(c),
        max_steps=c.max_steps, max_time={"minutes": c.max_minutes} if c.max_minutes else None,
        val_check_interval=val_every, check_val_every_n_epoch=None,
        limit_val_batches=1.0 if val_loader else 0, num_sanity_val_steps=0, logger=False,
        callbacks=callbacks, enable_progress_bar=c.progress, enable_model_summary=False, default_root_dir=out,
        use_distributed_sampler=False,  # each process's share of the validation items is ItemList's
        log_every_n_steps=10, deterministic=False,
        # checkpoints are safetensors + JSON: resuming never unpickles (geoccseg/train/checkpoint.py)
        plugins=[SafeCheckpointIO({str(ckpt): resumed} if resumed else None)],
    )
    def how_to_continue() -> str:  # where a stopped run goes on from, once it has stopped
        return (f"continue it from step {saver.saved_step} with: geoccseg train --config {out / 'config.yaml'} --resume"
                if ckpt.is_file() else "no checkpoint was written; run the command again to start over")

    t0 = time.perf_counter()
    stop.defer()  # from here a signal stops the run after the current step
    try:
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=str(ckpt) if resumed else None)
        if not recorder.ended:  # resumed at its step budget (stopped after its last step): Lightning runs no end hook
            recorder.on_train_end(trainer, module)
        if val_loader is not None and trainer.global_step > 0 and recorder.last_validated_step != trainer.global_step:
            # the last step is always validated (and may become the bundle): Lightning validates every val_every
            # steps of the endless chip stream, not at max_steps, nor where --max-minutes ran out
            trainer.validate(module, dataloaders=val_loader, verbose=False)  # every process: they sum their counts
            saver.save(trainer)  # with its metrics row and the bundle it may have saved, as at every validation
    except SIGTERMException:
        raise TrainingStopped(f"training stopped by {stop.name} at step {trainer.global_step} of {c.max_steps}; {how_to_continue()}",
                              stop.signum or signal.SIGTERM) from None
    except (SystemExit, KeyboardInterrupt):
        # a second Ctrl-C: Lightning ends it with sys.exit(1) and no word of ours, or, when it came while
        # the first stop was being recorded (Lightning's exception hooks), it is the KeyboardInterrupt itself
        if stop.signum is None:
            raise
        by = "a second SIGINT" if stop.signum == signal.SIGINT else f"SIGINT after {stop.name}"  # only Ctrl-C stops at once
        raise TrainingStopped(f"training stopped at once by {by} at step {trainer.global_step} of {c.max_steps}; {how_to_continue()}",
                              signal.SIGINT) from None
    seconds = time.perf_counter() - t0
    device = str(trainer.strategy.root_device)
    validation = load_bundle(out).meta.training.get("validation", {}) if trainer.is_global_zero else {}
    labeled = getattr(data, "labeled_names", None)
    return TrainResult(out=out, steps=trainer.global_step, seconds=seconds, device=device, validation=validation, labeled=labeled)


OWN_OUTPUTS = ("config.yaml", "metrics.csv", "training.png", "bundle.json")  # and the bundle's weights


def own_outputs(out: Path) -> set[str]:
    """The names in ``out`` that training writes: :data:`OWN_OUTPUTS` and weights files."""
    if not out.is_dir():
        return set()
    return {p.name for p in out.iterdir() if p.name in OWN_OUTPUTS or is_weights_file(p.name)}


def _first_process() -> bool:
    """Whether this is the run's first process: not one that Lightning or torchrun started for
    another DDP rank (``RANK``, else ``NODE_RANK`` and ``LOCAL_RANK``, set in their environment)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


class Ranks(pl.Callback):
    """Gives the chip stream and the validation items their process's DDP rank once Lightning has
    set the processes up (before any batch is drawn): every rank draws its own chips (Lightning's
    own launcher, ``--devices N``, sets no ``RANK`` variable, and every rank drew rank 0's) and
    validates its own share of the items (:class:`ItemList`)."""

    def __init__(self, stream: ChipStream, validation: ItemList) -> None:
        self.stream, self.validation = stream, validation

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.stream.rank = trainer.global_rank
        self.validation.rank, self.validation.world = trainer.global_rank, trainer.world_size


def schedule_steps(resumed: dict, out: Path, max_steps: int) -> int:
    """The step count the resumed run's learning-rate schedule and unlabeled ramp span: that of
    its first run (a run continued with more steps keeps the rate its schedule ended at, instead of
    jumping back near the peak), from the checkpoint, or for checkpoints before December 2026 the
    ``max_steps`` of the run's ``config.yaml``; else ``max_steps``."""
    recorded = resumed.get("geoccseg_run")
    if isinstance(recorded, dict) and isinstance(recorded.get("schedule_steps"), int):
        return recorded["schedule_steps"]
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        before = yaml.safe_load((out / "config.yaml").read_text()).get("max_steps")
        if isinstance(before, int) and before > 0:
            return before
    return max_steps


def check_out_folder(out: Path) -> None:
    """Refuse, before any data is read, an output folder that cannot be one: a file, a path
    through a file, or a new folder in a parent that cannot take it.

    Raises:
        GeoccsegError: naming what is in the way.
    """
    if out.exists() and not out.is_dir():
        raise GeoccsegError(f"-o {out} is a file; training writes a folder (its model, config.yaml, metrics): give a folder name")
    parent = next(p for p in out.parents if p.exists()) if not out.exists() else out
    if not parent.is_dir():
        raise GeoccsegError(f"-o {out} runs through the file {parent}; give a folder name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GeoccsegError(f"cannot write in {parent} (permission denied); give -o a folder you can write to")


def refuse_to_replace(out: Path) -> None:
    """Refuse to start a new run in ``out`` where it would replace something: a trained model, an
    unfinished run's checkpoint (a killed run leaves one before its first bundle), or a file of the
    user's under one of the names training writes (``-o .`` beside a hand-written ``config.yaml``).

    Raises:
        GeoccsegError: ``out`` holds one of :func:`own_outputs` or ``checkpoints/last.ckpt``.
    """
    has_checkpoint = (out / CHECKPOINTS / LAST).exists()
    if (out / "bundle.json").exists():
        if has_checkpoint:
            raise GeoccsegError(f"{out} already holds a trained model; choose another -o folder, or pass --resume to continue it")
        if not run_finished(out):
            raise GeoccsegError(f"{out} holds the model of a run stopped before its first checkpoint (nothing to resume); "
                                "choose another -o folder, or move that model away first")
        raise GeoccsegError(f"{out} already holds a trained model; choose another -o folder")
    if has_checkpoint:
        raise GeoccsegError(f"{out} holds the checkpoint of an unfinished run ({CHECKPOINTS}/{LAST}); pass --resume to "
                            "continue it, or choose another -o folder")
    taken = sorted(own_outputs(out))
    if taken and killed_before_first_checkpoint(out):
        raise GeoccsegError(f"{out} holds {', '.join(taken)} of a run stopped before its first checkpoint (killed, or out of memory): "
                            "pass --resume to start it over in this folder, or choose another -o folder")
    if taken:
        raise GeoccsegError(f"{out} already holds {', '.join(taken)}, which training writes; choose another -o folder "
                            "(a new or empty one)")


def killed_before_first_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds what a run killed before its first checkpoint leaves (SIGKILL, out of
    memory: no Python cleanup ran): its own ``config.yaml`` (every training key, ``out`` this
    folder), perhaps its ``metrics.csv``, and no checkpoint, bundle or weights. A hand-written
    configuration is not one (it holds some keys only, or names another folder)."""
    if (out / CHECKPOINTS / LAST).exists() or (out / "bundle.json").exists() or any(is_weights_file(n) for n in own_outputs(out)):
        return False
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (isinstance(saved, dict) and set(saved) == set(TrainConfig.keys()) and isinstance(saved.get("out"), str)
            and Path(saved["out"]).resolve() == out.resolve())


def _remove_own_outputs(out: Path, existing: set[str], created: list[Path]) -> None:
    """Remove the outputs a failed run wrote into ``out`` (those of :func:`own_outputs` not in
    ``existing``), then the folders it created (innermost first) where that leaves them empty;
    anything else, the user's files above all, is kept."""
    for name in own_outputs(out) - existing:
        (out / name).unlink(missing_ok=True)
    for folder in ([] if CHECKPOINTS in existing else [out / CHECKPOINTS]) + created:
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()
