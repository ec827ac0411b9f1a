"""Embeddings of photos that do not depend on the labels: the ImageNet encoder's view of them.

:func:`geoccseg.suggest.select.coverage` clusters the candidates by embedding and takes the most
typical photo of each kind not yet labeled (TypiClust, Hacohen et al. 2022, "Active learning on a
budget"). By default the embedding is the current model's (``SuggestParams(embedding=
"model")``): 8 channels, a fixed random projection of the features of a model trained on the few
labels so far. TypiClust clusters a representation learned without the labels instead
(self-supervised there); :class:`ImagenetEmbedder` gives the nearest one this tool has offline:
the EfficientNet-Lite0 encoder with its ImageNet weights (the pip package every pretrained model
starts from, :mod:`geoccseg.models.pretrained`), frozen, its stride-32 map (320 channels) averaged
over the photo's valid pixels. The same photo gets the same embedding in every round, whatever the
model.

Each photo is stretched by its own 2nd and 98th percentiles per band (what a bundle with per-image
statistics does; no model's statistics, so the embedding depends on the photo alone) and embedded
chip by chip (chips of at most :data:`CHIP_PX`, each padded to a multiple of 32 with 0, the
stretched middle): memory stays that of one chip whatever the photo's size.
"""

from __future__ import annotations

import numpy as np
import torch

from geoccseg.io.normalize import PERCENTILES, stats_from_arrays
from geoccseg.models.encoder import EfficientNetLiteEncoder

CHIP_PX = 512
"""Edge of the chips a photo is embedded in (the last row and column of chips may be smaller)."""

DIMS = 320
"""Channels of the embedding (the encoder's stride-32 map)."""

STRIDE = 32
"""Stride of that map: a chip is padded to a multiple of it."""


class ImagenetEmbedder:
    """The frozen ImageNet encoder on the CPU, for photos of ``in_channels`` bands (1 or 3).

    Raises:
        GeoccsegError: the ImageNet weights are missing or damaged (:mod:`geoccseg.models.pretrained`).
    """

    def __init__(self, in_channels: int) -> None:
        self.encoder = EfficientNetLiteEncoder(in_channels, tf_same=True)
        self.encoder.load_pretrained()
        self.encoder.eval()

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The embedding of one photo: float64 (:data:`DIMS`,), the mean of the stride-32 features over
        its valid pixels (each cell weighted by its share of valid pixels); zeros where none is valid.

        Args:
            image: (C, H, W) photo bands in file units.
            valid: (H, W) bool, False where the photo is transparent; None: every pixel.
        """
        height, width = image.shape[1:]
        total, weight = np.zeros(DIMS), 0.0
        if valid is not None and not valid.any():
            return total
        norm = stats_from_arrays([image], PERCENTILES, [valid])
        for top in range(0, height, CHIP_PX):
            for left in range(0, width, CHIP_PX):
                chip = norm.apply(image[:, top:top + CHIP_PX, left:left + CHIP_PX])
                h, w = chip.shape[1:]
                cells = np.ones((h, w), np.float32) if valid is None else valid[top:top + h, left:left + w].astype(np.float32)
                if not cells.any():
                    continue
                padded = np.zeros((chip.shape[0], -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE), np.float32)
                padded[:, :h, :w] = chip * cells  # transparent pixels read as the mean, as prediction feeds them
                features = self.encoder(torch.from_numpy(padded)[None])[-1][0].double().numpy()  # (DIMS, h', w')
                share = np.zeros(padded.shape[1:], np.float32)
                share[:h, :w] = cells
                share = share.reshape(features.shape[1], STRIDE, features.shape[2], STRIDE).mean(axis=(1, 3))
                total += (features * share).sum(axis=(1, 2))
                weight += float(share.sum())
        return total / weight if weight else total
