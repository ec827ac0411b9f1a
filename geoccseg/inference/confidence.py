"""The teacher's confidence map: max class probability and its confidence level, per pixel.

The method sorts every pixel of the teacher's prediction into three confidence levels
(:func:`geoccseg.losses.confidence.confidence_levels`): **high** (c >= tau_high of the pixel's
class: trusted pseudo-labels), **low** (tau_low <= c < tau_high: the contrastive anchors) and
**unreliable** (c < tau_low), where c = max_k p_k. The same split, with the thresholds the model
was trained with, tells a user where the model is sure of itself and where labels would help.

``geoccseg predict --confidence-out conf.tif`` writes it as a 2-band ``uint8`` Cloud-Optimised
GeoTIFF on the scene grid, computed from the probability COG of the same run (so the levels are
exactly a function of the probabilities written):

* band 1 ``confidence``: round(c x 255), c = max(1 - sum of the foreground p, p of each class);
* band 2 ``level``: 0 high, 1 low, 2 unreliable (:data:`LEVELS`);
* nodata where the scene is nodata (an internal mask, like the probability COG);
* the thresholds as dataset tags (:data:`CONFIDENCE_TAG`).

Photos (``geoccseg predict PHOTOS -o OUT_DIR --confidence``) get ``OUT_DIR/confidence/<stem>.png``
(:func:`write_confidence_png`): the level codes as an 8-bit palette PNG.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from PIL import Image, PngImagePlugin
from rasterio.enums import Resampling

from geoccseg.errors import GeoccsegError
from geoccseg.inference.cog import COG_BLOCK_PX, copy_as_cog, overview_factors
from geoccseg.io.atomic import atomic_path, check_not_input, check_writable, scratch_dir
from geoccseg.io.bundle import BundleMeta
from geoccseg.io.formats import GEOTIFF_SUFFIXES
from geoccseg.io.lazy import chunk_windows
from geoccseg.io.probability import CONFIDENCE_TAG, UINT8_SCALE, decode_uint8, encode_mask, encode_uint8, probabilities
from geoccseg.losses.confidence import check_thresholds, confidence_levels

LEVELS = ("high", "low", "unreliable")
"""Confidence level names, by code (0, 1, 2) in the level band."""

HIGH, LOW, UNRELIABLE = 0, 1, 2

@dataclass(frozen=True)
class ConfidenceThresholds:
    """The confidence thresholds of the method (probabilities in [0, 1]).

    Attributes:
        tau_high: high confidence for a background pixel (c >= tau_high).
        tau_high_fg: high confidence for a pixel whose most likely class is a foreground class.
        tau_low: below it a pixel is unreliable, whatever its class.
    """

    tau_high: float = 0.95
    tau_high_fg: float = 0.8
    tau_low: float = 0.6

    def __post_init__(self) -> None:
        check_thresholds(self.tau_low, self.tau_high, self.tau_high_fg)

    @classmethod
    def from_meta(cls, meta: BundleMeta) -> ConfidenceThresholds:
        """The thresholds a bundle was trained with (``training.config`` of ``bundle.json``), each
        missing one taken from :class:`geoccseg.train.TrainConfig`'s defaults.

        Raises:
            GeoccsegError: recorded thresholds that are not numbers or do not satisfy
                0 < tau_low <= tau_high, tau_high_fg <= 1.
        """
        config = meta.training.get("config") or {}
        if isinstance(config, str):
            try:
                config = yaml.safe_load(config) or {}
            except yaml.YAMLError:
                config = {}
        names = [f.name for f in dataclasses.fields(cls)]
        found = {name: config[name] for name in names if isinstance(config, dict) and config.get(name) is not None}
        if len(found) < len(names):
            from geoccseg.train.config import TrainConfig  # the trainer's defaults; imported only when needed (slow import)

            found = {name: getattr(TrainConfig, name) for name in names} | found
        try:
            values = {name: float(value) for name, value in found.items()}
        except (TypeError, ValueError):
            raise GeoccsegError(f"the model's bundle.json records confidence thresholds that are not numbers: {found}") from None
        try:
            return cls(**values)
        except GeoccsegError:  # a bundle trained before thresholds were checked (7 December 2026)
            recorded = ", ".join(f"{name}={value:g}" for name, value in sorted(values.items()))
            raise GeoccsegError(f"the model's bundle.json records confidence thresholds {recorded} (training.config), outside "
                                "0 < tau_low <= tau_high, tau_high_fg <= 1; set them there within that range to score its confidence") from None

    def per_class(self, n_classes: int) -> tuple[torch.Tensor, float]:
        """(tau_high of each class, background first, as a (n_classes,) tensor; tau_low)."""
        return torch.tensor([self.tau_high] + [self.tau_high_fg] * (n_classes - 1), dtype=torch.float64), self.tau_low

    def tags(self) -> dict[str, str]:
        """The thresholds as GeoTIFF tags."""
        return {f"TAU_{name[4:].upper()}": f"{value:g}" for name, value in dataclasses.asdict(self).items()}


def confidence_map(foreground: np.ndarray, thresholds: ConfidenceThresholds) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and confidence level per pixel, as the trainer computes them for pseudo-labels.

    Args:
        foreground: float (C, h, w) probabilities of the C foreground classes; NaN where nodata.
        thresholds: the model's confidence thresholds.

    Returns:
        ``confidence`` float32 (h, w), max class probability (the background's is 1 - sum of the
        foreground's), NaN where nodata, and ``level`` uint8 (h, w): :data:`HIGH`, :data:`LOW`
        or :data:`UNRELIABLE` (:data:`UNRELIABLE` where nodata).
    """
    fg = np.nan_to_num(np.asarray(foreground, dtype=np.float32))
    probs = np.concatenate([np.clip(1.0 - fg.sum(0, keepdims=True), 0.0, 1.0), fg])
    tau_high, tau_low = thresholds.per_class(probs.shape[0])
    levels = confidence_levels(torch.from_numpy(probs)[None], tau_high, tau_low)
    level = np.full(fg.shape[1:], UNRELIABLE, dtype=np.uint8)
    level[levels.high[0].numpy()] = HIGH
    level[levels.low[0].numpy()] = LOW
    confidence = levels.confidence[0].numpy().astype(np.float32)
    nodata = ~np.isfinite(np.asarray(foreground, dtype=np.float32)).all(axis=0)
    confidence[nodata] = np.nan
    level[nodata] = UNRELIABLE
    return confidence, level


def check_confidence_out(path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike]) -> Path:
    """Check the confidence COG's path before any work: a writable ``.tif``/``.tiff`` file that is
    none of ``inputs``.

    Raises:
        GeoccsegError: what is wrong with the path.
    """
    path = check_writable(path, overwrite, example="confidence.tif")
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise GeoccsegError(f"the confidence raster {path} is a GeoTIFF: name it .tif or .tiff, e.g. {path.with_suffix('.tif')}")
    check_not_input(path, inputs)
    return path


def write_confidence_cog(
    prob_path: str | os.PathLike,
    dest: str | os.PathLike,
    thresholds: ConfidenceThresholds,
    *,
    overwrite: bool = False,
    chunk_px: int = 2048,
) -> Path:
    """Write the confidence COG of a probability COG (same grid), streaming window by window.

    Args:
        prob_path: probability COG written by :func:`geoccseg.inference.predict.predict_scene`
            (uint8 p x 255 with a mask, or float32 with NaN nodata).
        dest: the confidence COG to write (atomically).
        thresholds: the model's confidence thresholds (:meth:`ConfidenceThresholds.from_meta`).
        overwrite: replace an existing ``dest``.
        chunk_px: edge of the windows streamed through memory, in pixels.

    Returns:
        ``dest`` as a Path.
    """
    dest = check_confidence_out(dest, overwrite, [prob_path])
    with rasterio.open(prob_path) as src, scratch_dir(dest) as workdir:
        staging = workdir / "confidence.tif"
        profile = dict(
            driver="GTiff", width=src.width, height=src.height, count=2, dtype="uint8", crs=src.crs, transform=src.transform,
            tiled=True, blockxsize=COG_BLOCK_PX, blockysize=COG_BLOCK_PX, BIGTIFF="IF_SAFER",
        )
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(staging, "w", **profile) as out:
            out.update_tags(**{CONFIDENCE_TAG: "max_probability,level"}, **thresholds.tags())
            out.set_band_description(1, "confidence: max class probability x 255")
            out.set_band_description(2, "level: 0 high, 1 low, 2 unreliable")
            out.update_tags(2, **{f"LEVEL_{code}": name for code, name in enumerate(LEVELS)})
            out.scales, out.offsets = (UINT8_SCALE, 1.0), (0.0, 0.0)  # QGIS shows 0-1 as for the probabilities; levels as codes
            for row in chunk_windows(src.height, src.width, chunk_px):
                for window in row:
                    prob = probabilities(src.read(window=window))
                    if src.dtypes[0] == "uint8":
                        prob[:, src.dataset_mask(window=window) == 0] = np.nan
                    confidence, level = confidence_map(prob, thresholds)
                    valid = np.isfinite(confidence)
                    out.write(encode_uint8(confidence), 1, window=window)
                    out.write(level, 2, window=window)
                    out.write_mask(encode_mask(valid), window=window)
            factors = overview_factors(src.height, src.width)
            if factors:
                out.build_overviews(factors, Resampling.nearest)  # level codes must stay codes
        return copy_as_cog(staging, dest, overwrite)


LEVEL_PALETTE = ((0x2B, 0x8A, 0x3E), (0xF0, 0xC4, 0x19), (0xD9, 0x48, 0x0F))
"""Colours of the levels in the photos' confidence PNGs: high green, low yellow, unreliable red."""


def write_confidence_png(prob: np.ndarray, thresholds: ConfidenceThresholds, dest: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the confidence levels of one photo (``OUT_DIR/confidence/<stem>.png`` of ``geoccseg predict``).

    An 8-bit palette PNG of the photo's size whose pixel values are the level codes (0 high, 1 low,
    2 unreliable; :data:`LEVEL_PALETTE` shows them green, yellow, red), computed from the photo's
    uint8 probability exactly as the scene COG's level band; the confidence itself is
    max(p, 1 - p) of the probability PNG. Tagged with :data:`CONFIDENCE_TAG` and the thresholds.

    Args:
        prob: (H, W) uint8 probabilities of the one foreground class, p x 255.
        thresholds: the model's confidence thresholds.
        dest: the PNG file, written atomically.
        overwrite: replace an existing file.
    """
    levels = confidence_map(decode_uint8(np.arange(256, dtype=np.uint8)[None, None]), thresholds)[1][0]
    level = levels[prob]  # one lookup per pixel: whole-photo float planes cost ~40 bytes per pixel
    info = PngImagePlugin.PngInfo()
    info.add_text(CONFIDENCE_TAG, "level")
    for key, value in thresholds.tags().items():
        info.add_text(key, value)
    image = Image.fromarray(level, mode="P")
    image.putpalette([v for colour in LEVEL_PALETTE for v in colour])
    with atomic_path(dest, overwrite) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(dest)
