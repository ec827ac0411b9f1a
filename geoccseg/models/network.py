"""FusionSegNet: encoder, fusion decoder, segmentation head and contrastive projection head."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoccseg.errors import GeoccsegError
from geoccseg.models.config import OUTPUT_STRIDE, ModelConfig
from geoccseg.models.encoder import build_encoder, conv_bn_relu
from geoccseg.models.fusion import FusionDecoder

FOREGROUND_PRIOR = 0.05
"""Initial softmax probability of each class >= 1 (focal-loss style prior for rare classes)."""


def pad_to_multiple(x: Tensor, multiple: int = OUTPUT_STRIDE) -> Tensor:
    """Pad (B, C, H, W) at the bottom and right so that H and W become multiples of ``multiple`` pixels.

    Reflection is used where the padding is shorter than the side, replication otherwise (tiny inputs).
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _channel_keep(features: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """(B, C, 1, 1) factors of channel dropout (``F.dropout2d``'s): 0 with probability ``p``, else
    1 / (1 - p), drawn on the CPU from ``generator`` and moved to the features' device and type."""
    b, c = features.shape[:2]
    keep = torch.rand(b, c, 1, 1, generator=generator) >= p
    return (keep / (1.0 - p)).to(device=features.device, dtype=features.dtype)


class FusionSegNet(nn.Module):
    """Segmentation network of the method: multi-stage encoder, fusion decoder and two heads.

    The segmentation head (3x3 conv + BatchNorm + ReLU + 1x1 conv) gives K class logits upsampled to
    the input size; the projection head (1x1 conv, ReLU, 1x1 conv) gives D-channel embeddings at
    stride 4, L2-normalised over channels, for the contrastive loss. Any input height and width are
    accepted: the input is padded to a multiple of 32 pixels and the outputs are cropped back.
    """

    def __init__(self, config: ModelConfig) -> None:
        """Initialise the network from ``config``."""
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, config.in_channels, config.widths, config.tf_same)
        channels = config.decoder_channels
        self.decoder = FusionDecoder(self.encoder.out_channels, channels, config.fusion)
        self.seg_head = nn.Sequential(
            conv_bn_relu(channels, channels, 3), nn.Conv2d(channels, config.num_classes, 1)
        )
        self.proj_head = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, config.embed_dim, 1)
        )
        self._init_heads()

    def _init_heads(self) -> None:
        """He-initialise the head convolutions; set the classifier so classes >= 1 start at a small probability.

        The last conv gets weights of standard deviation 0.01 and biases ``log(1 - (K-1)p)`` for the
        background and ``log(p)`` for the other classes, with ``p = min(0.05, 0.5 / (K-1))``, so the
        initial softmax is close to ``p`` for every foreground class.
        """
        nn.init.kaiming_normal_(self.seg_head[0][0].weight, mode="fan_out", nonlinearity="relu")
        classifier = self.seg_head[-1]
        num_classes = self.config.num_classes
        prior = min(FOREGROUND_PRIOR, 0.5 / (num_classes - 1))
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.constant_(classifier.bias, math.log(prior))
        nn.init.constant_(classifier.bias[:1], math.log(1.0 - (num_classes - 1) * prior))

    def _fused(self, x: Tensor, feature_dropout: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Fused stride-4 features (B, C, Hp/4, Wp/4) of the input padded to (Hp, Wp).

        ``feature_dropout`` above 0 drops whole channels of every encoder stage with that
        probability before the decoder (training only: the feature perturbation of UniMatch),
        drawn from ``generator`` (a CPU generator; PyTorch's global one when None).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise GeoccsegError(
                f"model input has shape {tuple(x.shape)}; expected (batch, {self.config.in_channels}, height, width)"
            )
        features = self.encoder(pad_to_multiple(x))
        if feature_dropout > 0:
            features = [f * _channel_keep(f, feature_dropout, generator) for f in features]
        return self.decoder(features)

    def _logits(self, fused: Tensor, height: int, width: int) -> Tensor:
        """Class logits (B, K, height, width) from fused features of the padded input."""
        logits = self.seg_head(fused)
        padded_size = (fused.shape[-2] * 4, fused.shape[-1] * 4)
        logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Segment a batch and embed its stride-4 pixels.

        Args:
            x: Images (B, C, H, W), any H and W in pixels.

        Returns:
            ``logits``: (B, K, H, W) class scores before softmax.
            ``embed``: (B, D, ceil(H/4), ceil(W/4)) embeddings of unit L2 norm along dim 1.
        """
        height, width = x.shape[-2:]
        fused = self._fused(x)
        embed = F.normalize(self.proj_head(fused), dim=1)
        embed = embed[..., : math.ceil(height / 4), : math.ceil(width / 4)]
        return {"logits": self._logits(fused, height, width), "embed": embed}

    def forward_logits(self, x: Tensor, feature_dropout: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Class logits (B, K, H, W) of images (B, C, H, W), without the projection head (for inference).

        ``feature_dropout``: channel dropout of the encoder stages, for the perturbed-feature
        stream of training (see :meth:`_fused`, with ``generator``); 0 at inference.
        """
        return self._logits(self._fused(x, feature_dropout, generator), *x.shape[-2:])


def build_model(config: ModelConfig | Mapping[str, Any]) -> FusionSegNet:
    """Build a :class:`FusionSegNet` from a config or a dict such as :meth:`ModelConfig.to_dict` writes.

    Raises:
        GeoccsegError: If the dict has an unknown key or a bad value.
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return FusionSegNet(config)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
