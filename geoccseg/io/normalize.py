"""Per-band normalisation statistics, computed lazily with Dask and stored with the model.

Training and prediction must scale pixels the same way, so the statistics are computed once
(over the training scenes, or their areas of interest) and saved in the model bundle; prediction
reuses them and never recomputes them on the scene it is given.

The default is a robust percentile stretch: band values at the 2nd and 98th percentiles of the
valid pixels map to -0.5 and +0.5. Integer bands get exact percentiles from a full histogram
(one bin per value); float bands use a 4096-bin histogram between the band's minimum and maximum.

With ``per_image`` (``geoccseg train --per-image-norm``) each image is stretched by its *own*
percentiles instead, in training and in prediction (:meth:`NormStats.for_image` for a photo, the
scene's own statistics for a scene): a model for photos whose brightness and contrast differ
from one set to the next (cracks on light and on dark pavement) sees them alike. The statistics
of the training set are still kept, for reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import dask
import numpy as np
import torch

from geoccseg.errors import GeoccsegError
from geoccseg.quiet import ignored_warnings
from geoccseg.io.lazy import open_lazy
from geoccseg.io.scene import Scene

FLOAT_BINS = 4096
NO_VALID_PIXEL = "no valid pixel to compute normalisation statistics from; check the nodata value or the area of interest"


PERCENTILES = (2.0, 98.0)
"""The (low, high) percentiles mapped to -0.5 and +0.5 unless a bundle records others."""


@dataclass
class NormStats:
    """Per-band linear stretch.

    Attributes:
        low: value of each band mapped to -0.5 (file units).
        high: value of each band mapped to +0.5 (file units).
        percentiles: the (low, high) percentiles these values come from.
        per_image: stretch each image by its own percentiles (:meth:`for_image`), not by ``low``
            and ``high``.
    """

    low: list[float]
    high: list[float]
    percentiles: tuple[float, float] = PERCENTILES
    per_image: bool = False

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high):
            raise GeoccsegError("normalisation statistics have different numbers of low and high values")
        self.high = [h if h > lo else lo + 1.0 for lo, h in zip(self.low, self.high)]

    @property
    def num_bands(self) -> int:
        return len(self.low)

    def apply(self, image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalise a (C, H, W) or (B, C, H, W) image in file units; values are clipped to [-1.5, 1.5]."""
        if image.shape[-3] != self.num_bands:
            raise GeoccsegError(f"image has {image.shape[-3]} band(s) but the normalisation statistics have {self.num_bands}")
        if isinstance(image, torch.Tensor):
            low = torch.tensor(self.low, dtype=torch.float32, device=image.device)[:, None, None]
            span = torch.tensor(self.high, dtype=torch.float32, device=image.device)[:, None, None] - low
            return (image.float() - low).div_(span).sub_(0.5).clamp_(-1.5, 1.5)  # one new tensor, not four
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.asarray(self.high, dtype=np.float32)[:, None, None] - low
        return np.clip((image.astype(np.float32) - low) / span - 0.5, -1.5, 1.5)

    def for_image(self, image: np.ndarray, valid: np.ndarray | None = None) -> NormStats:
        """The statistics to apply to a whole in-memory image (C, H, W) in file units: these, or with
        ``per_image`` the image's own percentiles over its ``valid`` pixels ((H, W) bool; None: all)."""
        if not self.per_image or (valid is not None and not valid.any()):  # nothing of it is predicted
            return self
        return stats_from_arrays([image], self.percentiles, None if valid is None else [valid])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        if not self.per_image:
            del d["per_image"]  # bundles without the option stay as they were written before it
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        try:
            return cls(low=[float(v) for v in d["low"]], high=[float(v) for v in d["high"]], percentiles=tuple(d.get("percentiles", PERCENTILES)),
                       per_image=bool(d.get("per_image", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise GeoccsegError(f"invalid normalisation statistics ({exc}); retrain or repair the bundle") from None


def percentiles_from_histogram(hist: np.ndarray, edges: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Values at two percentiles of a histogram (bin ``i`` covers ``edges[i]..edges[i+1]``)."""
    cdf = np.cumsum(hist, dtype=np.float64)
    if cdf[-1] == 0:
        raise GeoccsegError(NO_VALID_PIXEL)
    cdf /= cdf[-1]
    out = []
    for p in percentiles:
        i = int(np.searchsorted(cdf, p / 100.0, side="left"))
        out.append(float(edges[min(i, len(edges) - 2)]))
    return out[0], out[1]


def _integer_hist(image: np.ndarray, valid: np.ndarray, nbins: int) -> np.ndarray:
    return np.stack([np.bincount(np.clip(b[valid], 0, nbins - 1).astype(np.int64), minlength=nbins) for b in image])


def _float_hist(image: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([np.histogram(b[valid], bins=FLOAT_BINS, range=(l, h))[0] for b, l, h in zip(image, lo, hi)])


def _integer_stats(hist: np.ndarray, nbins: int, percentiles: tuple[float, float]) -> NormStats:
    """Statistics of per-band histograms with one bin per integer value 0..nbins-1."""
    edges = np.arange(nbins + 1, dtype=np.float64)
    bounds = [percentiles_from_histogram(h, edges, percentiles) for h in hist]
    return NormStats(low=[b[0] for b in bounds], high=[b[1] for b in bounds], percentiles=tuple(percentiles))


def _float_stats(hist: np.ndarray, lo: np.ndarray, hi: np.ndarray, percentiles: tuple[float, float]) -> NormStats:
    """Statistics of per-band :func:`_float_hist` histograms between each band's ``lo`` and ``hi``."""
    bounds = [percentiles_from_histogram(h, np.linspace(l, u, FLOAT_BINS + 1), percentiles) for h, l, u in zip(hist, lo, hi)]
    return NormStats(low=[b[0] for b in bounds], high=[b[1] for b in bounds], percentiles=tuple(percentiles))


def _add(*hists: np.ndarray) -> np.ndarray:
    total = hists[0].copy()
    for h in hists[1:]:
        total += h
    return total


def _summed(parts: list, fan_in: int = 8):
    """The sum of delayed histograms as a tree of delayed sums: each chunk's histogram is freed
    once added, instead of all of them held at once (a uint16 band's is 512 KB: 10,000 chunks
    of a 100k-px scene held 20 GB)."""
    while len(parts) > 1:
        parts = [dask.delayed(_add)(*parts[i:i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def compute_stats(
    scenes: Scene | list[Scene],
    percentiles: tuple[float, float] = PERCENTILES,
    chunk_px: int = 1024,
) -> NormStats:
    """Compute percentile statistics over one or more scenes with a Dask graph: exact for uint8 /
    uint16 (one bin per value); for any other type (signed, 32-bit, float) a :data:`FLOAT_BINS`
    histogram between each band's minimum and maximum.

    Args:
        scenes: scenes with the same band selection.
        percentiles: (low, high) percentiles in 0..100.
        chunk_px: chunk edge of the lazy arrays (pixels).
    """
    scenes = [scenes] if isinstance(scenes, Scene) else list(scenes)
    lazies = [open_lazy(s, chunk_px) for s in scenes]
    integer = all(np.dtype(s.dtype) in (np.uint8, np.uint16) for s in scenes)  # int16, 32-bit: the float path
    parts = []
    if integer:
        nbins = 65536 if any(np.dtype(s.dtype).itemsize > 1 for s in scenes) else 256
        for lz in lazies:
            img, val = lz["image"].data, lz["valid"].data
            parts += [dask.delayed(_integer_hist)(b_img, b_val, nbins)
                      for b_img, b_val in zip(img.to_delayed().ravel(), val.to_delayed().ravel())]
        return _integer_stats(_summed(parts).compute(), nbins, percentiles)
    else:
        mins, maxs = [], []
        for lz in lazies:
            img = lz["image"].where(lz["valid"])
            mins.append(img.min(dim=("y", "x")))
            maxs.append(img.max(dim=("y", "x")))
        mins, maxs = dask.compute(mins, maxs)
        with np.errstate(invalid="ignore"), ignored_warnings(RuntimeWarning):  # "All-NaN slice": a band without valid pixel, refused below
            lo = np.nanmin([m.values for m in mins], axis=0)
            hi = np.nanmax([m.values for m in maxs], axis=0)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # np.histogram's range would be NaN: a traceback
            raise GeoccsegError(NO_VALID_PIXEL)
        for lz in lazies:
            img, val = lz["image"].data, lz["valid"].data
            parts += [dask.delayed(_float_hist)(b_img, b_val, lo, hi)
                      for b_img, b_val in zip(img.to_delayed().ravel(), val.to_delayed().ravel())]
        return _float_stats(_summed(parts).compute(), lo, hi, percentiles)


def stats_from_uint8(images: Iterable[tuple[np.ndarray, np.ndarray | None]],
                     percentiles: tuple[float, float] = PERCENTILES) -> NormStats:
    """Exact percentile statistics of uint8 images given one at a time (a generator of photos read
    from disk: one photo in memory at once, not the whole sample).

    Args:
        images: ``(image, valid)`` pairs: (C, H, W) uint8 and the (H, W) bool valid pixels, None
            where every pixel is (:func:`geoccseg.data.photos.read_photo_valid`).

    Raises:
        GeoccsegError: no image, or no valid pixel.
    """
    total = None
    for image, valid in images:
        hist = _integer_hist(image, np.ones(image.shape[1:], bool) if valid is None else valid, 256)
        total = hist if total is None else total + hist
    if total is None:
        raise GeoccsegError("no image to compute normalisation statistics from")
    return _integer_stats(total, 256, percentiles)


def stats_from_arrays(images: list[np.ndarray], percentiles: tuple[float, float] = PERCENTILES,
                      valids: list[np.ndarray | None] | None = None) -> NormStats:
    """Percentile statistics over in-memory images (C, H, W), e.g. a photo folder or one photo: exact
    for uint8 / uint16 (one bin per value); for any other dtype a :data:`FLOAT_BINS` histogram between
    each band's finite minimum and maximum over the pixels finite in every band, as
    :func:`compute_stats` does for float scenes. ``valids``: each image's (H, W) bool valid pixels
    (None: every pixel)."""
    valids = [np.ones(i.shape[1:], bool) if v is None else v for i, v in zip(images, valids or [None] * len(images))]
    if all(i.dtype == np.uint8 for i in images):
        return stats_from_uint8(zip(images, valids), percentiles)
    if all(i.dtype in (np.uint8, np.uint16) for i in images):
        return _integer_stats(sum(_integer_hist(i, v, 65536) for i, v in zip(images, valids)), 65536, percentiles)
    else:
        images = [i.astype(np.float64) for i in images]
        valid = [np.isfinite(i).all(axis=0) & v for i, v in zip(images, valids)]
        lo = np.min([[b[v].min() if v.any() else np.inf for b in i] for i, v in zip(images, valid)], axis=0)
        hi = np.max([[b[v].max() if v.any() else -np.inf for b in i] for i, v in zip(images, valid)], axis=0)
        if not np.isfinite(lo).all():
            raise GeoccsegError("no valid pixel to compute normalisation statistics from; the image holds no finite value")
        return _float_stats(sum(_float_hist(i, v, lo, hi) for i, v in zip(images, valid)), lo, hi, percentiles)
