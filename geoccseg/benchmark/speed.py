"""How fast an inference engine runs, and the scenes it runs on, for the speed benchmarks
(``pipelines/benchmark_predict.py``, ``pipelines/benchmark_precision.py``,
``pipelines/profile_predict.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from geoccseg.inference.cog import compression
from geoccseg.inference.engine import Engine
from geoccseg.io.catalog import sample_scene
from geoccseg.io.lazy import chunk_windows
from geoccseg.io.scene import open_scene


def forward_rate(engine: Engine, chips: torch.Tensor, min_s: float) -> float:
    """Chip megapixels per second of repeated forward passes of ``engine`` on ``chips`` (B, C, H, W):
    two warm-up passes, then passes for at least ``min_s`` seconds and at least 3 (CUDA synchronised)."""
    synchronise = torch.cuda.synchronize if engine.device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        engine(chips)
    synchronise()
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < min_s or batches < 3:
        engine(chips)
        batches += 1
    synchronise()
    return batches * chips.shape[0] * chips.shape[2] * chips.shape[3] / (time.perf_counter() - start) / 1e6


def mirror_index(index: np.ndarray, size: int) -> np.ndarray:
    """Indices into an axis of ``size`` pixels for a mirror-tiled axis (0..size-1, size-1..0, ...)."""
    period = np.mod(index, 2 * size)
    return np.where(period < size, period, 2 * size - 1 - period)


def mirror_tiled_scene(dest: Path, size_px: int, *, chip: Path | None = None, block_px: int = 2048,
                       pixel_size_m: float | None = None) -> Path:
    """Mirror-tile a chip's RGB into a ``size_px`` square GeoTIFF (tiled, compressed uint8, written
    block by block) with the chip's grid, or with pixels of ``pixel_size_m`` metres (the chip's
    transform scaled; same origin and CRS).

    Args:
        dest: the GeoTIFF to write.
        size_px: its edge in pixels.
        chip: the chip to tile; None: the shipped SpaceNet Las Vegas sample
            (:func:`geoccseg.io.catalog.sample_scene`, 1300 x 1300 pixels of about 0.3 m).
        block_px: edge of the blocks written at once.
        pixel_size_m: pixel size to label the pixels with; None: the chip's.
    """
    chip = chip or sample_scene()
    scale = 1.0 if pixel_size_m is None else pixel_size_m / open_scene(chip).pixel_size_m
    with rasterio.open(chip) as src:
        rgb = src.read([1, 2, 3])
        profile = dict(
            driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs=src.crs,
            transform=src.transform * Affine.scale(scale), tiled=True, blockxsize=512, blockysize=512, compress=compression(),
            predictor=2, photometric="RGB", BIGTIFF="IF_SAFER",
        )
    with rasterio.open(dest, "w", **profile) as out:
        for row in chunk_windows(size_px, size_px, block_px):
            for w in row:
                rows = mirror_index(np.arange(w.row_off, w.row_off + w.height), rgb.shape[1])
                cols = mirror_index(np.arange(w.col_off, w.col_off + w.width), rgb.shape[2])
                out.write(rgb[:, rows][:, :, cols], window=w)
    return dest
