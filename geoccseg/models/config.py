"""The settings that define a segmentation network, checked once and stored with every checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from geoccseg.errors import GeoccsegError

ENCODERS: tuple[str, ...] = ("light", "efficientnet-lite0", "resnet18", "resnet34", "resnet50")
"""Encoder names: ``light`` (small residual net for CPUs), ``efficientnet-lite0`` (ImageNet weights
from a pip package, :mod:`geoccseg.models.pretrained`) or a timm ResNet built without weights."""

FUSIONS: tuple[str, ...] = ("multi", "single")
"""Decoder fusion modes: all four encoder stages (``multi``) or the stride-32 stage only (``single``)."""


OUTPUT_STRIDE = 32
"""Input height and width are padded to a multiple of this many pixels (the deepest stage's stride);
chip edges are multiples of it."""


def check_tile_px(tile_px: int) -> int:
    """Return ``tile_px`` if it is a valid chip edge: a multiple of 32 pixels (the network's stride), at least 32.

    Raises:
        GeoccsegError: any other value.
    """
    if isinstance(tile_px, bool) or not isinstance(tile_px, int) or tile_px < OUTPUT_STRIDE or tile_px % OUTPUT_STRIDE:
        raise GeoccsegError(f"tile_px must be a multiple of {OUTPUT_STRIDE} (at least {OUTPUT_STRIDE}), got {tile_px}")
    return tile_px


def _check_positive_int(key: str, value: Any, minimum: int) -> None:
    """Raise :class:`GeoccsegError` unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GeoccsegError(f"model config: {key}={value!r} is invalid; use an integer >= {minimum}")


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise :class:`GeoccsegError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise GeoccsegError(f"model config: {key}={value!r} is unknown; use one of {', '.join(allowed)}")


@dataclass
class ModelConfig:
    """Architecture of :class:`~geoccseg.models.network.FusionSegNet`.

    Attributes:
        in_channels: Number of input bands.
        num_classes: Number of classes K, background included (K >= 2).
        encoder: One of :data:`ENCODERS`.
        fusion: One of :data:`FUSIONS`.
        widths: Channel widths of the four stages of the ``light`` encoder (ignored by the ResNets).
        decoder_channels: Channels C of the fused stride-4 features.
        embed_dim: Channels D of the L2-normalised projection embeddings.
        tf_same: ``efficientnet-lite0`` built as TensorFlow trained its ImageNet weights (BatchNorm
            eps 1e-3, 'SAME' padding); False (timm's build) for bundles that do not say.
    """

    in_channels: int = 3
    num_classes: int = 2
    encoder: str = "light"
    fusion: str = "multi"
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    decoder_channels: int = 64
    embed_dim: int = 64
    tf_same: bool = False

    def __post_init__(self) -> None:
        """Check every field; raise :class:`GeoccsegError` naming the first bad one."""
        _check_positive_int("in_channels", self.in_channels, 1)
        _check_positive_int("num_classes", self.num_classes, 2)
        _check_choice("encoder", self.encoder, ENCODERS)
        _check_choice("fusion", self.fusion, FUSIONS)
        widths = self.widths
        if (
            not isinstance(widths, (list, tuple))
            or len(widths) != 4
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)
        ):
            raise GeoccsegError(
                f"model config: widths={widths!r} is invalid; use four integers >= 1, e.g. [32, 64, 128, 256]"
            )
        self.widths = tuple(widths)
        _check_positive_int("decoder_channels", self.decoder_channels, 1)
        _check_positive_int("embed_dim", self.embed_dim, 1)
        if not isinstance(self.tf_same, bool):
            raise GeoccsegError(f"model config: tf_same={self.tf_same!r} is invalid; use true or false")
        if self.tf_same and self.encoder != "efficientnet-lite0":
            raise GeoccsegError(f"model config: tf_same is a build of the efficientnet-lite0 encoder, not of {self.encoder}")

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-safe dict (tuples become lists)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        if not self.tf_same:  # bundles that do not say are timm's build, and earlier releases read them
            del d["tf_same"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build a config from a dict such as :meth:`to_dict` writes; missing keys take defaults.

        Raises:
            GeoccsegError: If ``d`` is not a mapping, has a key that is not a field, or a bad value.
        """
        if not isinstance(d, Mapping):
            raise GeoccsegError(f"model config must be a mapping of field names to values, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [key for key in d if key not in names]
        if unknown:
            raise GeoccsegError(f"model config: unknown key {unknown[0]!r}; allowed keys are {', '.join(names)}")
        return cls(**dict(d))
