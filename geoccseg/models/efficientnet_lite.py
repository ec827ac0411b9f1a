"""EfficientNet-Lite0's feature layers, written out here instead of built by timm.

The network is timm's ``efficientnet_lite0`` cut at strides 4, 8, 16 and 32 (its
``features_only=True`` model): the same modules under the same names (``conv_stem``, ``bn1``,
``blocks.<stage>.<block>.conv_pw`` ...), so the same ``state_dict`` keys and the same arithmetic.
Bundles trained with timm's module load unchanged, and the ImageNet weights of
:mod:`geoccseg.models.pretrained` map onto it key by key.

Why not timm: importing timm imports torchvision, which imports ``torch._dynamo``; on 2 CPU cores
that took about 2.5 s of every ``geoccseg predict`` that loads this model, more than the prediction
of a photo. timm still builds the ResNet encoders, which train only.

Layout (Tan & Le 2019, Lite variant: ReLU6, no squeeze-excitation, stem and head fixed): a stride-2
3x3 stem of 32 channels, then the seven stages of :data:`STAGES`, depthwise-separable blocks in
stage 0 and inverted-residual blocks after it. The two block types keep separate classes because
their layers carry different timm names (``conv_dw, bn1, conv_pw, bn2`` against ``conv_pw, bn1,
conv_dw, bn2, conv_pwl, bn3``), which the weights' keys must match.

Two builds of the same layers (:class:`EfficientNetLite0Features`, ``tf_same``):

- ``tf_same=False`` (every bundle trained before 2026-12-05): convolutions padded symmetrically by
  k // 2 and BatchNorm eps 1e-5, timm's ``efficientnet_lite0``.
- ``tf_same=True``: as TensorFlow trained the ImageNet weights (timm's ``tf_efficientnet_lite0``,
  the build of the package the weights come from): BatchNorm eps 1e-3 and 'SAME' padding, which
  for the stride-2 convolutions pads one pixel less before than after (inputs are padded to
  multiples of 32, so every stride-2 layer sees even sizes and the padding is fixed). 3 % of the
  ImageNet BatchNorm channels have a running variance below 1e-3; with eps 1e-5 the first build
  amplifies them up to 10x.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
"""(repeats, kernel, stride of the first block, expansion, output channels) of each stage."""

STEM_CHANNELS = 32
FEATURE_STAGES: tuple[int, ...] = (1, 2, 4, 6)
"""Stages whose outputs are the features, at strides 4, 8, 16 and 32 (24, 40, 112, 320 channels)."""


TF_BN_EPS = 1e-3
"""BatchNorm eps of TensorFlow's EfficientNet-Lite (that of the ImageNet weights)."""


class SameConv2d(nn.Conv2d):
    """A stride-2 convolution padded as TensorFlow's 'SAME' pads even input sizes: (k - 2) // 2
    pixels before, the rest of k - 2 after. The same parameters (and ``state_dict`` keys) as
    :class:`torch.nn.Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, 2, padding=0, groups=groups, bias=False)
        total = kernel_size - 2
        self.same_pad = (total // 2, total - total // 2) * 2

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.same_pad))


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
          tf_same: bool = False) -> nn.Conv2d:
    if tf_same and stride == 2:
        return SameConv2d(in_channels, out_channels, kernel_size, groups=groups)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)


def _bn(channels: int, tf_same: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=TF_BN_EPS if tf_same else 1e-5)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk convolution, BatchNorm, ReLU6, pointwise 1x1 convolution, BatchNorm (stage 0)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, tf_same: bool = False) -> None:
        super().__init__()
        self.conv_dw = _conv(in_channels, in_channels, kernel_size, stride, groups=in_channels, tf_same=tf_same)
        self.bn1 = _bn(in_channels, tf_same)
        self.act = nn.ReLU6(inplace=True)
        self.conv_pw = _conv(in_channels, out_channels, 1)
        self.bn2 = _bn(out_channels, tf_same)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(self.act(self.bn1(self.conv_dw(x)))))
        return x + y if self.skip else y


class InvertedResidual(nn.Module):
    """1x1 expansion, BatchNorm, ReLU6, depthwise kxk, BatchNorm, ReLU6, 1x1 projection, BatchNorm;
    an identity shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int,
                 tf_same: bool = False) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.conv_pw = _conv(in_channels, mid, 1)
        self.bn1 = _bn(mid, tf_same)
        self.conv_dw = _conv(mid, mid, kernel_size, stride, groups=mid, tf_same=tf_same)
        self.bn2 = _bn(mid, tf_same)
        self.act = nn.ReLU6(inplace=True)
        self.conv_pwl = _conv(mid, out_channels, 1)
        self.bn3 = _bn(out_channels, tf_same)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.bn1(self.conv_pw(x)))
        y = self.act(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class EfficientNetLite0Features(nn.Module):
    """The feature layers of EfficientNet-Lite0: four maps at strides 4, 8, 16 and 32.

    Randomly initialised as timm initialises it (convolutions normal with std sqrt(2 / fan-out),
    BatchNorm weight 1 and bias 0); pretrained weights are copied in by the caller.

    Args:
        in_channels: number of input bands.
        tf_same: TensorFlow's BatchNorm eps and 'SAME' padding (see the module docstring).
    """

    def __init__(self, in_channels: int, tf_same: bool = False) -> None:
        super().__init__()
        self.conv_stem = _conv(in_channels, STEM_CHANNELS, 3, stride=2, tf_same=tf_same)
        self.bn1 = _bn(STEM_CHANNELS, tf_same)
        self.act = nn.ReLU6(inplace=True)
        stages, channels = [], STEM_CHANNELS
        for index, (repeats, kernel, stride, expansion, out_channels) in enumerate(STAGES):
            blocks = []
            for i in range(repeats):
                step = stride if i == 0 else 1
                block = (DepthwiseSeparable(channels, out_channels, kernel, step, tf_same) if index == 0
                         else InvertedResidual(channels, out_channels, kernel, step, expansion, tf_same))
                blocks.append(block)
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.out_channels: list[int] = [STAGES[i][4] for i in FEATURE_STAGES]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode (B, C, H, W) into the four feature maps."""
        x = self.act(self.bn1(self.conv_stem(x)))
        features = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in FEATURE_STAGES:
                features.append(x)
        return features


__all__ = ["EfficientNetLite0Features", "FEATURE_STAGES", "STAGES", "SameConv2d"]
