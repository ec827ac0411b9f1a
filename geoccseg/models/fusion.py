"""Fusion decoder: encoder stages projected, upsampled to stride 4 and fused into one feature map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoccseg.models.encoder import conv_bn_relu


class ChannelGate(nn.Module):
    """Squeeze-and-excitation gate: reweights channels by a sigmoid of their global means."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        """Initialise the gate.

        Args:
            channels: Channels of the gated features.
            reduction: Ratio of ``channels`` to the hidden width of the gate.
        """
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Gate (B, C, H, W) features; the output has the same shape."""
        return x * self.excite(self.squeeze(x))


class FusionDecoder(nn.Module):
    """Fuse four encoder stages (strides 4, 8, 16, 32) into one stride-4 map of ``channels`` channels.

    ``multi``: every stage is projected by a 1x1 conv + BatchNorm + ReLU to ``channels``, upsampled
    bilinearly to the stride-4 grid, concatenated and fused by a 3x3 conv + BatchNorm + ReLU.
    ``single``: only the stride-32 stage is projected, upsampled and passed through the 3x3 conv.
    In both modes a channel gate (:class:`ChannelGate`) follows the 3x3 conv, so the ``multi`` versus
    ``single`` ablation changes the number of fused stages and nothing else.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, fusion: str) -> None:
        """Initialise the decoder.

        Args:
            in_channels: Channels of the four encoder stages, shallowest first.
            channels: Channels C of the fused output.
            fusion: ``multi`` (all stages) or ``single`` (last stage only).
        """
        super().__init__()
        if fusion not in ("multi", "single"):
            raise ValueError(f"fusion must be 'multi' or 'single', got {fusion!r}")
        self.fusion = fusion
        used = list(in_channels) if fusion == "multi" else [in_channels[-1]]
        self.projections = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in used)
        self.fuse = conv_bn_relu(channels * len(used), channels, 3)
        self.gate = ChannelGate(channels)
        for module in [*self.projections.modules(), *self.fuse.modules()]:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse the encoder maps.

        Args:
            features: Four tensors (B, in_channels[i], H/s, W/s) at strides s = 4, 8, 16, 32.

        Returns:
            Fused features (B, channels, H/4, W/4).
        """
        size = features[0].shape[-2:]
        used = features if self.fusion == "multi" else features[-1:]
        maps = []
        for projection, feature in zip(self.projections, used, strict=True):
            x = projection(feature)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return self.gate(self.fuse(torch.cat(maps, dim=1)))
