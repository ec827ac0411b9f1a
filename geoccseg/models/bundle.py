"""A model bundle as a network: build the architecture a bundle records and load its weights.

:mod:`geoccseg.io.bundle` reads and writes the bundle's files (weights and metadata); this module
builds the network from them, so that io never imports the networks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from geoccseg.errors import GeoccsegError
from geoccseg.io.bundle import META, BundleMeta, StoredBundle, read_bundle
from geoccseg.models.config import ModelConfig
from geoccseg.models.network import FusionSegNet, build_model


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, on CPU) and its metadata.

    Attributes:
        stamp: :func:`~geoccseg.io.bundle.prediction_stamp` of the files it was read from ("" if
            built in memory).
        weights_sha256: SHA-256 of the weights file it was read from, as checked then ("" if built
            in memory).
        loaded_state_sha256: :func:`state_sha256` of ``model`` when it was read: tells whether the
            model in memory still holds those weights.
    """

    model: FusionSegNet
    meta: BundleMeta
    path: Path
    stamp: str = ""
    weights_sha256: str = ""
    loaded_state_sha256: str = ""


def state_sha256(model: torch.nn.Module) -> str:
    """Hex SHA-256 of a network's weights as they are in memory: every entry of its ``state_dict``
    (name, dtype, shape and bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def from_bundle(stored: StoredBundle) -> Bundle:
    """Build the network a bundle read by :func:`geoccseg.io.bundle.read_bundle` records, with its weights.

    Raises:
        GeoccsegError: an architecture that does not match the bundle's classes or bands, or weights
            that do not fit it.
    """
    folder, meta = stored.path, stored.meta
    config = ModelConfig.from_dict(meta.model)
    if config.num_classes != len(meta.classes) + 1 or config.in_channels != len(meta.bands):
        raise GeoccsegError(f"model bundle {folder} is inconsistent: the architecture does not match its classes or bands")
    model = build_model(config)
    try:
        model.load_state_dict(stored.state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GeoccsegError(f"weights in {folder} do not fit the architecture in {META} ({first})") from None
    model.eval()
    return Bundle(model=model, meta=meta, path=folder, stamp=stored.stamp, weights_sha256=stored.weights_sha256,
                  loaded_state_sha256=state_sha256(model))


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load a bundle folder (or its ``bundle.json``) as a network, without unpickling anything.

    Raises:
        GeoccsegError: missing files, invalid JSON, checksum mismatch, or weights that do not fit
            the architecture.
    """
    return from_bundle(read_bundle(path))
