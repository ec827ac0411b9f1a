"""Resumable training state that loading can never turn into code execution.

A Lightning checkpoint is a nested dictionary of tensors (student and EMA teacher weights,
optimiser moments, contrastive queues, the random generator) and plain values (step counters,
optimiser and scheduler settings, the run's metrics rows). :class:`SafeCheckpointIO` stores the
tensors as safetensors and everything else as JSON in the safetensors header, with a SHA-256 of
the tensors, so ``--resume`` reads raw numbers and text only: nothing is unpickled, and a damaged,
truncated or foreign file is a one-line error.

:class:`PeriodicCheckpoint` writes ``checkpoints/last.ckpt`` (in this format) every
``checkpoint_every`` steps, every ``checkpoint_minutes`` minutes, at every validation step and at
the last step; on a validation step it waits until validation is recorded, so a resumed run keeps
every validation row. Checkpoints record the run's identity (:func:`run_identity`): a resume that
would make it another run is refused (:func:`check_same_run`). A run stopped by SIGINT or SIGTERM saves the step it stopped at.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "geoccseg-checkpoint/1"


# -- the file format -----------------------------------------------------------------------------
def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready form of ``value``; tensors go to ``tensors`` and are referenced by key."""
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(value, np.generic):  # e.g. a learning rate computed with numpy
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"$items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"a {type(value).__name__} cannot be stored in a checkpoint without pickle")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "$tensor":
                return tensors[inner]
            if tag == "$tuple":
                return tuple(_decode(v, tensors) for v in inner)
            if tag == "$items":
                return {_decode(k, tensors): _decode(v, tensors) for k, v in inner}
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> None:
    """Write a Lightning checkpoint dictionary to ``path`` as safetensors + JSON, atomically.

    Raises:
        TypeError: the dictionary holds a value that is neither a tensor nor plain data.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    state = json.dumps(_encode(checkpoint, tensors))
    storages: set[int] = set()
    for key, t in tensors.items():  # safetensors refuses tensors sharing memory: copy those
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages:
            tensors[key] = t.clone()
        storages.add(ptr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "state": state, "sha256": _digest(tensors)})


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; nothing in it can run code.

    Raises:
        GeoccsegError: the file is missing, damaged, truncated, or not a geoccseg checkpoint (for
            example one pickled by an older version, which is never loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise GeoccsegError(f"cannot resume: checkpoint {path} does not exist; train without --resume first")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"its format is {meta.get('format')!r}, not {FORMAT!r}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if _digest(tensors) != meta.get("sha256"):
            raise ValueError("its tensors do not match their checksum")
        state = _decode(json.loads(meta["state"]), tensors)
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            raise ValueError("it holds no training state")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GeoccsegError(
            f"cannot resume from {path}: it is not an intact geoccseg checkpoint ({reason}); it may be damaged, "
            "truncated, pickled by an older version or written by another program; restore it, or train again "
            "without --resume into a new folder"
        ) from None
    return state


def check_architecture(state: dict, module: torch.nn.Module, path: str | os.PathLike) -> None:
    """The checkpoint's weights have the names and shapes of ``module``'s (same architecture).

    Raises:
        GeoccsegError: the configuration describes another network than the checkpoint holds.
    """
    saved = state.get("state_dict", {})
    own = module.state_dict()
    if set(saved) != set(own) or any(tuple(saved[k].shape) != tuple(own[k].shape) for k in own):
        raise GeoccsegError(
            f"cannot resume from {path}: it holds another network than this configuration builds "
            "(encoder, classes, bands or channels changed); resume with the run's own config.yaml"
        )


#: Options a resumed run may change: its budget, checkpoint and validation cadence, progress, the
#: hardware, and the paths of its photo folders (benchmarks link them afresh; what they hold is
#: compared by name, :func:`run_identity`). Any other change would make it another run.
RESUME_MAY_CHANGE = frozenset({
    "out", "resume", "max_steps", "max_minutes", "val_every", "checkpoint_every", "checkpoint_minutes", "progress",
    "num_workers", "accelerator", "devices", "num_nodes", "precision", "images", "masks", "val_images", "val_masks",
    "unlabeled",
})


READING_RULES = 2
"""The version of the rules by which labels become labeled pixels, recorded in a run's identity:
2 since 7 December 2026 (line labels burnt along their path, NaN of float scenes, rotated label
rasters, lossy WebP masks); a checkpoint that records none was counted by rules 1."""


def run_identity(config_yaml: str, classes: list[str], summary: dict, label_pixels, norm: dict,
                 inert: Collection[str] = (), validation_pixels=None) -> dict:
    """What makes a run the same run on resume: its settings (the options of ``config_yaml`` but
    :data:`RESUME_MAY_CHANGE` and the ``inert`` ones, which the others leave without effect), its classes in order, its labeled and validation photos by name
    and its unlabeled ones by a digest of their names (the run draws from them),
    and what the data holds: the labeled pixels per class (background first; labels, masks or an
    AOI edited in place change them), those of the validation set (the best F1 so far was measured
    on it) and the normalisation statistics (images edited, added or removed change them, and the
    network would see its inputs scaled otherwise)."""
    settings = {k: v for k, v in yaml.safe_load(config_yaml).items() if k not in RESUME_MAY_CHANGE and k not in inert}
    return {"settings": settings, "data": {"classes": list(classes), "labeled": summary.get("labeled"),
                                           "validation": summary.get("validation"), "unlabeled": summary.get("unlabeled_sha256"),
                                           "label_pixels": [int(n) for n in label_pixels], "norm": norm,
                                           "validation_pixels": None if validation_pixels is None else [int(n) for n in validation_pixels],
                                           "reading_rules": READING_RULES}}


def check_same_run(state: dict, identity: dict, path: str | os.PathLike) -> None:
    """Refuse to resume the checkpoint ``state`` as a run of another :func:`run_identity`: another
    option (a class order, a learning rate, a loss), or labeled or validation photos that changed
    (photos added to a folder reshuffle which are labeled and which validate), labels or images
    edited in place. Settings added to the configuration since the checkpoint was written are not
    compared; checkpoints written before December 2026 record none, before 5 December 2026 no
    labeled pixels or statistics, before 7 December 2026 no validation pixels or unlabeled photos.

    Raises:
        GeoccsegError: naming what changed.
    """
    recorded = state.get("geoccseg_run")
    if not isinstance(recorded, dict):
        return
    before, now = recorded.get("settings", {}), identity["settings"]
    changed = [f"{k} (was {before[k]!r}, now {now[k]!r})" for k in sorted(set(before) & set(now)) if before[k] != now[k]]
    data_before, data_now = recorded.get("data", {}), identity["data"]
    if data_before.get("classes") != data_now["classes"]:
        changed.append(f"classes (was {data_before.get('classes')}, now {data_now['classes']})")
    changed += [f"the {k} photos (the folders hold others now)" for k in ("labeled", "validation")
                if data_before.get(k) != data_now.get(k)]
    if "unlabeled" in data_before and data_before["unlabeled"] != data_now.get("unlabeled"):  # by name: a digest of them
        changed.append("the unlabeled photos (others by name now: --unlabeled left out or another folder given, or photos added or "
                       "removed)")
    counts_differ = [k for k in ("label_pixels", "validation_pixels") if k in data_before and data_before[k] != data_now[k]]
    rules = data_before.get("reading_rules", 1), data_now.get("reading_rules", 1)
    if counts_differ and rules[0] != rules[1]:  # the same files counted by other rules: an edit cannot be told from it
        log.warning("geoccseg: warning: %s was begun by a geoccseg that counted labeled pixels by other rules (%s, now %s), so "
                    "whether its labels were edited since cannot be told; resuming it as the same run", path, *rules)
    elif "label_pixels" in counts_differ:
        changed.append(f"the labels (labeled pixels per class were {data_before['label_pixels']}, now "
                       f"{data_now['label_pixels']}: labels, masks or the AOI edited)")
    if "validation_pixels" in counts_differ and rules[0] == rules[1]:
        changed.append(f"the validation labels (labeled pixels per class were {data_before['validation_pixels']}, now "
                       f"{data_now['validation_pixels']}: validation masks, labels or the validation AOI edited; the best "
                       "model so far was chosen on the old ones)")
    if "norm" in data_before and data_before["norm"] != data_now["norm"]:
        changed.append("the images (their normalisation statistics differ: images edited, added or removed)")
    if changed:
        raise GeoccsegError(f"cannot resume from {path}: {'; '.join(changed)} since the run began; resume with the run's "
                            "own config.yaml and data, or train into a new folder (--init-from the run's folder starts from its model)")


def world_size_note(state: dict, processes: int, batch_size: int) -> str | None:
    """What a resume on ``processes`` training processes (``--devices`` x ``--num-nodes``) changes
    when the steps before the checkpoint ``state`` ran on another number of them, or None. The
    hardware may change on resume (a node lost, a GPU freed), but each step then trains on another
    number of chips (``batch_size`` per process) and draws other chips: the run goes on as another
    run would. Checkpoints written before 7 December 2026 record no number of processes."""
    recorded = state.get("geoccseg_run")
    before = recorded.get("world_size") if isinstance(recorded, dict) else None
    if not isinstance(before, int) or before == processes:
        return None
    return (f"the run's steps so far ran on {before} training process{'es' if before > 1 else ''} and it resumes on "
            f"{processes} (--devices x --num-nodes): each step now trains on {processes * batch_size} labeled chips where "
            f"it trained on {before * batch_size}, and draws other chips, so it goes on as another run would; resume on "
            f"{before} to continue it as it was")


def _without_timer(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` without the state of Lightning's ``Timer`` (``--max-minutes``): the limit is
    the wall-clock time of each ``geoccseg train`` command, so a resumed run gets its full minutes
    (restored, the time already spent made a run stopped by its limit stop again after one step)."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, dict) or not any(str(key).startswith("Timer") for key in callbacks):
        return checkpoint
    return {**checkpoint, "callbacks": {key: value for key, value in callbacks.items() if not str(key).startswith("Timer")}}


class SafeCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O in the safetensors + JSON format of this module.

    Args:
        loaded: checkpoints already read (path -> state), returned without reading them again.
    """

    def __init__(self, loaded: dict[str, dict] | None = None) -> None:
        self.loaded = dict(loaded or {})

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_checkpoint(_without_timer(checkpoint), path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return _without_timer(self.loaded.pop(str(path), None) or load_checkpoint(path))

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


# -- when to save ----------------------------------------------------------------------------------
class PeriodicCheckpoint(Checkpoint):
    """Saves the training state to ``path`` every ``every_steps`` steps or ``every_minutes`` minutes
    (whichever comes first), at every validation (which may save a better bundle: a kill after it
    must not resume from an older state), at the last step and when the run is stopped by a signal.

    The state of a step that is also validated is saved after its validation (so its metrics row
    and best bundle are in the checkpoint); others right after the step.

    Args:
        path: the checkpoint file (replaced at each save).
        every_steps: steps between saves.
        every_minutes: minutes between saves (None: by steps only).
        val_every: steps between validations (None: no validation set).
        stop: the run's :class:`geoccseg.train.signals.StopSignals`; a signal that came before
            training started stops it at its first hook.
    """

    def __init__(self, path: str | os.PathLike, every_steps: int, every_minutes: float | None, val_every: int | None, stop=None) -> None:
        self.path = Path(path)
        self.every_steps = every_steps
        self.every_minutes = every_minutes
        self.val_every = val_every
        self.stop = stop
        self.saved_step: int | None = None
        self._pending = False
        self._last_time = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        self.saved_step = trainer.global_step if trainer.global_step else None  # resumed: on disk already
        if self.stop is not None:
            self.stop.raise_if_stopped()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        due = (
            step % self.every_steps == 0
            or (self.val_every is not None and step % self.val_every == 0)  # the bundle it may save has its checkpoint
            or step >= trainer.max_steps
            or trainer.should_stop
            or (self.every_minutes is not None and time.monotonic() - self._last_time >= 60 * self.every_minutes)
        )
        # every rank must save together (the save has a barrier) although their clocks differ
        if not trainer.strategy.reduce_boolean_decision(bool(due), all=False):
            return
        validates = self.val_every is not None and (step % self.val_every == 0 or trainer.should_stop)
        if validates:
            self._pending = True
        else:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._pending and not trainer.sanity_checking:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.saved_step != trainer.global_step:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning stops on SIGTERM (and SIGINT, see signals.py) after a whole step; a stop in the
        # middle of validation keeps the last checkpoint instead
        if isinstance(exception, SIGTERMException) and not trainer.validating and self.saved_step != trainer.global_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Save the training state now (the hooks above, and ``train`` after the validation that follows the last step)."""
        # weights_only=False: Lightning's flag for "the whole training state, not the weights only"
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step
        self._last_time = time.monotonic()
        self._pending = False
