"""Model bundles: weights as safetensors plus a JSON of everything prediction needs.

A bundle is a folder with ``bundle.json`` (architecture, classes, input bands, normalisation
statistics, pixel size in metres, training summary, and the name and SHA-256 of the weights) and
the weights as safetensors, named after their checksum (``model.<16 hex digits>.safetensors``;
bundles written before that, the shipped road model among them, hold ``model.safetensors``). Loading
never unpickles anything: safetensors holds raw tensors only, and the JSON is checked against the
weights, so a tampered, truncated or mismatched file gives a clear error instead of arbitrary code
execution or a silent wrong model.

Replacing a bundle (training saves each better model into the same folder) writes the new weights
under their own name first and then ``bundle.json``, whose atomic replacement is the one moment the
bundle changes; only then are the previous weights removed. A run killed at any point leaves a
complete bundle, the previous or the new one, never the new weights under the old checksum.

This module reads and writes the files only (:func:`read_bundle` gives the metadata and the
weights as tensors); the network is built from them one layer up, by
:func:`geoccseg.models.load_bundle`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path, remove_stale
from geoccseg.io.catalog import SHIPPED_MODELS, shipped_models
from geoccseg.io.normalize import NormStats

WEIGHTS = "model.safetensors"  # the weights of bundles written before versioned names
META = "bundle.json"
FORMAT = "geoccseg-bundle/2"
"""The format this geoccseg writes: 2 names the weights after their checksum (1: ``model.safetensors``)."""
FORMATS = ("geoccseg-bundle/1", FORMAT)
"""The formats it reads."""
_VERSIONED = re.compile(r"model\.[0-9a-f]{16}\.safetensors")
_TEMPORARY = re.compile(r"\.(?P<stem>model\.[0-9a-f]{16})\.")


def weights_name(digest: str) -> str:
    """The file name of weights whose SHA-256 is ``digest``: ``model.<first 16 hex digits>.safetensors``."""
    return f"model.{digest[:16]}.safetensors"


def is_weights_file(name: str) -> bool:
    """Whether ``name`` is a file name bundles give their weights (versioned or the older fixed name)."""
    return name == WEIGHTS or _VERSIONED.fullmatch(name) is not None


@dataclass
class BundleMeta:
    """What a bundle says about its model.

    Attributes:
        model: architecture (a :class:`ModelConfig` as a dict).
        classes: foreground class names (class index 1, 2, ...).
        bands: input bands (1-based indices of the training scenes, or photo channels).
        norm: normalisation statistics of the training data.
        pixel_size_m: pixel size the model was trained at, in metres (None: unknown scale).
        tile_px: chip size used in training, in pixels (a good prediction tile size).
        training: free-form training summary (data, steps, metrics).
        threshold: the model's decision threshold on the foreground probability (0-1), chosen on
            its select images; prediction uses it unless told otherwise. None: 0.5.
    """

    model: dict
    classes: list[str]
    bands: list[int]
    norm: NormStats
    pixel_size_m: float | None
    tile_px: int = 256
    training: dict = field(default_factory=dict)
    threshold: float | None = None

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "classes": self.classes,
            "bands": self.bands,
            "norm": self.norm.to_dict(),
            "pixel_size_m": self.pixel_size_m,
            "tile_px": self.tile_px,
            "training": self.training,
            **({"threshold": self.threshold} if self.threshold is not None else {}),
        }


@dataclass
class StoredBundle:
    """A bundle as read from its files: the checked metadata and the weights, no network built.

    Attributes:
        meta: what ``bundle.json`` says about the model.
        state: the weights, parameter name to tensor (CPU), as in the module's ``state_dict``.
        path: the bundle folder.
        stamp: :func:`prediction_stamp` of what was read.
        weights_sha256: SHA-256 of the weights file, checked against ``bundle.json`` when read.
    """

    meta: BundleMeta
    state: dict[str, torch.Tensor]
    path: Path
    stamp: str = ""
    weights_sha256: str = ""


PREDICTION_FIELDS = ("model", "classes", "bands", "norm", "weights_sha256")
"""The parts of ``bundle.json`` a prediction depends on (not its threshold or training record)."""


def prediction_stamp(raw: dict) -> str:
    """A digest of the :data:`PREDICTION_FIELDS` of a ``bundle.json`` (parsed): what tells a bundle
    rewritten with another model from one whose training record alone changed."""
    return hashlib.sha256(json.dumps({k: raw.get(k) for k in PREDICTION_FIELDS}, sort_keys=True).encode()).hexdigest()


def bundle_stamp(folder: str | os.PathLike) -> str:
    """:func:`prediction_stamp` of the ``bundle.json`` in ``folder``; "" when it cannot be read."""
    try:
        raw = json.loads((Path(folder) / META).read_text())
    except (OSError, ValueError):
        return ""
    return prediction_stamp(raw) if isinstance(raw, dict) else ""


def save_bundle(folder: str | os.PathLike, model: torch.nn.Module, meta: BundleMeta) -> Path:
    """Write the weights and ``bundle.json`` into ``folder`` (created if needed), replacing the
    bundle there, if any, in one atomic step (the module docstring says how)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(state)
    digest = hashlib.sha256(data).hexdigest()
    name = weights_name(digest)
    for entry in folder.iterdir():  # temporaries of earlier saves killed mid-write (each under its own name)
        left = _TEMPORARY.match(entry.name)
        if left:
            remove_stale(folder / f"{left['stem']}.safetensors")
    with atomic_path(folder / name, overwrite=True) as tmp:
        tmp.write_bytes(data)
    _write_meta(folder, meta, digest, name)
    for old in folder.iterdir():  # the previous weights, and any a run killed before its bundle.json left
        if old.name != name and is_weights_file(old.name) and old.is_file():
            with contextlib.suppress(OSError):  # in use elsewhere (Windows): the next save removes it
                old.unlink()
    return folder


def save_meta(folder: str | os.PathLike, meta: BundleMeta) -> Path:
    """Rewrite ``bundle.json`` of the bundle in ``folder`` with ``meta``; the weights and their
    recorded checksum stay as they are (e.g. to record that the run that wrote them was stopped)."""
    folder = Path(folder)
    raw = json.loads((folder / META).read_text())
    _write_meta(folder, meta, raw["weights_sha256"], raw.get("weights", WEIGHTS), raw.get("format", FORMAT))
    return folder


def _write_meta(folder: Path, meta: BundleMeta, digest: str, name: str, format: str = FORMAT) -> None:
    """``bundle.json`` for ``meta`` and its weights; ``format``: the bundle's own (a rewritten
    record keeps the format its weights were saved under)."""
    payload = meta.to_dict() | {"format": format, "weights": name, "weights_sha256": digest}
    with atomic_path(folder / META, overwrite=True) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def _read_meta(folder: Path) -> dict:
    """The parsed ``bundle.json`` of ``folder``.

    Raises:
        GeoccsegError: unreadable, not JSON, not an object, or of an unknown format.
    """
    meta_path = folder / META
    try:
        raw = json.loads(meta_path.read_text())
    except OSError as exc:
        raise GeoccsegError(f"cannot read {meta_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise GeoccsegError(f"model bundle {folder} has a damaged {META} ({exc}); retrain or restore it") from None
    if not isinstance(raw, dict):
        raise GeoccsegError(f"model bundle {folder} has a damaged {META} (not a JSON object); retrain or restore it")
    if raw.get("format") not in FORMATS:
        raise GeoccsegError(f"model bundle {folder} has a {META} of format {raw.get('format')!r}, which this geoccseg "
                            f"cannot read (it reads {', '.join(FORMATS)}); update geoccseg, or retrain the model with this one")
    return raw


def _weights_of(folder: Path, raw: dict) -> Path:
    name = raw.get("weights", WEIGHTS)
    if not isinstance(name, str) or not is_weights_file(name):
        raise GeoccsegError(f"model bundle {folder} has a damaged {META}: its weights {name!r} are not a weights file "
                            f"of the bundle folder; retrain or restore it")
    return folder / name


def weights_path(folder: str | os.PathLike) -> Path:
    """The weights file the ``bundle.json`` in ``folder`` names.

    Raises:
        GeoccsegError: no readable ``bundle.json``, or one naming something other than a weights
            file of the folder itself (a path elsewhere is never followed).
    """
    folder = Path(folder)
    return _weights_of(folder, _read_meta(folder))


def read_bundle(path: str | os.PathLike) -> StoredBundle:
    """Read a bundle folder (or its ``bundle.json``) without unpickling anything or building a network.

    ``bundle.json`` is read once and the weights it names are read once, checked and parsed from
    those bytes: the weights, the checksum and the metadata belong to the same save, also while
    training replaces the bundle (weights that a save has just replaced are read from the new
    ``bundle.json`` instead).

    Raises:
        GeoccsegError: missing files, invalid JSON, checksum mismatch or unreadable weights.
    """
    path = Path(path)
    folder = path.parent if path.name == META else path
    if not folder.exists():
        raise GeoccsegError(f"model bundle {folder} does not exist; give a folder written by `geoccseg train`")
    if not (folder / META).is_file():
        raise GeoccsegError(f"{folder} is not a model bundle: it has no {META} (bundles are written by `geoccseg train`)")
    for _ in range(SAVES_WAITED):
        stored = _read_once(folder)
        if stored is not None:
            return stored
    raise GeoccsegError(f"model bundle {folder} was rewritten {SAVES_WAITED} times while it was read (a training run saving "
                        "into it?); read it once that is finished, or use a copy of the bundle")


SAVES_WAITED = 3
"""Reads of a bundle that saves replace under the reader before :func:`read_bundle` gives up."""


def _read_once(folder: Path) -> StoredBundle | None:
    """The bundle in ``folder`` as its ``bundle.json`` names it now; None when a save replaced the
    weights it names before they were read (:func:`save_bundle` deletes the previous ones)."""
    raw = _read_meta(folder)
    weights = _weights_of(folder, raw)
    try:
        meta = BundleMeta(
            model=dict(raw["model"]), classes=list(raw["classes"]), bands=[int(b) for b in raw["bands"]],
            norm=NormStats.from_dict(raw["norm"]), pixel_size_m=None if raw["pixel_size_m"] is None else float(raw["pixel_size_m"]),
            tile_px=int(raw.get("tile_px", 256)), training=dict(raw.get("training", {})),
            threshold=None if raw.get("threshold") is None else float(raw["threshold"]),
        )
        if meta.threshold is not None and not 0 < meta.threshold < 1:
            raise ValueError(f"threshold {meta.threshold} is outside (0, 1)")
        if meta.pixel_size_m is not None and not 0 < meta.pixel_size_m < math.inf:  # NaN too: JSON reads NaN and Infinity
            raise ValueError(f"pixel_size_m {meta.pixel_size_m} is not a positive number of metres")
        if meta.tile_px < 1:
            raise ValueError(f"tile_px {meta.tile_px} is not a positive number of pixels")
        expected = raw["weights_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GeoccsegError(f"model bundle {folder} has a damaged {META} ({exc}); retrain or restore it") from None
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        if _weights_of(folder, _read_meta(folder)) != weights:  # replaced by a save since bundle.json was read
            return None
        raise GeoccsegError(f"model bundle {folder} lacks its weights {weights.name}; retrain or restore the bundle") from None
    except OSError as exc:
        raise GeoccsegError(f"cannot read weights {weights}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise GeoccsegError(f"weights in {folder} do not match the checksum in {META} (damaged or tampered); retrain or restore the bundle")
    try:
        state = load(data)
    except SafetensorError as exc:
        raise GeoccsegError(f"cannot read weights {weights}: {exc}") from None
    return StoredBundle(meta=meta, state=state, path=folder, stamp=prediction_stamp(raw), weights_sha256=digest)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The bundle folder of a shipped model name (``road``, ``crack``) or of a path.

    Paths are returned as they are (:func:`read_bundle` reports a missing or
    damaged bundle). A shipped model's bare name means the shipped model unless a bundle of that
    name is in the working folder: a folder called ``crack`` that is not a bundle (photos, a
    results folder) does not hide the shipped ``crack`` model; ``./crack`` always means the folder.

    Raises:
        GeoccsegError: a bare name that is neither a shipped model nor an existing folder.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if text in shipped_models() and not (path / META).is_file():
        return SHIPPED_MODELS / text
    if path.exists() or "/" in text or os.sep in text or path.suffix:
        return path
    raise GeoccsegError(
        f"{name_or_path!r} is neither a model bundle folder nor a shipped model "
        f"(shipped: {', '.join(shipped_models()) or 'none'}); give the path of a bundle folder written by `geoccseg train`"
    )
