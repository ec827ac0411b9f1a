"""The interface every source of training chips offers to the trainer."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
import torch

from geoccseg.io.normalize import NormStats


class TrainingData(abc.ABC):
    """Labeled chips, unlabeled chips and validation items, all normalised the same way.

    Attributes:
        classes: foreground class names (class index 1, 2, ...; 0 is background).
        norm: normalisation statistics applied to every image.
        bands: input bands (1-based indices for scenes, channel numbers for photos).
        pixel_size_m: pixel size of the chips in metres (None for photos of unknown scale).
        tile_px: chip edge in pixels.
        validation_pixels: labeled pixels per class (background first) of the validation set, None
            without one (a resumed run compares them: validation masks or labels edited since).
    """

    classes: list[str]
    norm: NormStats
    bands: list[int]
    pixel_size_m: float | None
    tile_px: int
    validation_pixels: np.ndarray | None = None

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @abc.abstractmethod
    def labeled_chip(self, generator: torch.Generator, foreground: bool = False) -> dict:
        """Random labeled chip: ``image`` float32 (C, T, T), ``valid`` bool (T, T), ``mask`` int64 (T, T).
        ``foreground``: one that holds a labeled foreground pixel (a road or crack) where the labels
        have any (the trainer's ``foreground_share``)."""

    @abc.abstractmethod
    def unlabeled_chip(self, generator: torch.Generator) -> dict:
        """Random unlabeled chip: ``image`` float32 (C, T, T), ``valid`` bool (T, T); never a mask."""

    @abc.abstractmethod
    def validation_items(self) -> Sequence[dict]:
        """Held-apart items with ``image`` (C, H, W), ``valid`` and ``mask``, any size, read when
        asked for (:class:`LazyItems`: 300 validation photos of 12 Mpx are 75 GB as tensors)."""

    @abc.abstractmethod
    def class_counts(self) -> np.ndarray:
        """Labeled pixel counts per class, background first (for the imbalance loss weights)."""

    @abc.abstractmethod
    def summary(self) -> dict:
        """JSON-safe description of the data, saved in the model bundle."""


class LazyItems(Sequence):
    """``n`` items, each read by ``read(index)`` when asked for and not kept."""

    def __init__(self, n: int, read: Callable[[int], dict]) -> None:
        self._n, self._read = n, read

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._read(index % self._n)
