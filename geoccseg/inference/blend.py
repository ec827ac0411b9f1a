"""The global chip grid of a scene and the weights that blend overlapping chips.

Prediction tiles the scene (in the model's pixel grid) with chips of ``tile_px`` pixels every
``stride_px = tile_px - overlap_px`` pixels, starting at the scene's top-left pixel and extended
until the whole scene is covered. Chips of the last row and column are cut at the scene's edge
(the network takes any size), so no time goes into pixels outside the scene. The grid is global:
it does not depend on how the work is cut into blocks, and every chip is computed exactly once,
so blocks never create seams.

A *block* is a square of ``block_cells x block_cells`` stride cells; it owns the chips whose
top-left corner falls inside it. Its chips spill over the block's bottom and right edges by
``overlap_px``, which is the block's halo.

Overlapping chips are blended as ``sum(w * p) / sum(w)`` with a separable raised-cosine window
``w`` that ramps over ``overlap_px`` pixels at each chip edge and is flat in between. The ramps of
two neighbouring chips add up to one (for ``overlap_px <= tile_px / 2``), so inside the scene the
weights form a partition of unity; the window never goes below a positive floor, so a pixel at
the scene border, covered by a single chip's edge, gets exactly that chip's probability after
normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoccseg.errors import GeoccsegError

WEIGHT_FLOOR = 1e-3
"""Smallest blend weight, relative to the flat centre of a chip (1.0)."""


def ramp(length_px: int) -> np.ndarray:
    """Rising half of a raised cosine sampled at pixel centres: ``sin²(π/2 · (i + 0.5) / length_px)``.

    ``ramp(n)[i] + ramp(n)[n - 1 - i] == 1``, so a falling and a rising ramp over the same
    ``length_px`` pixels add up to one.
    """
    i = np.arange(length_px, dtype=np.float64)
    return np.sin(0.5 * np.pi * (i + 0.5) / length_px) ** 2


def blend_window(tile_px: int, overlap_px: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """2D blend weights of one chip.

    Args:
        tile_px: chip edge in pixels.
        overlap_px: overlap of neighbouring chips in pixels (the length of each ramp; capped at
            half a chip).
        floor: smallest weight (> 0).

    Returns:
        float32 array (tile_px, tile_px), 1 in the centre, ramping down towards every edge,
        never below ``floor``.
    """
    ramp_px = min(overlap_px, tile_px // 2)
    line = np.ones(tile_px, dtype=np.float64)
    if ramp_px > 0:
        rise = ramp(ramp_px)
        line[:ramp_px] = rise
        line[tile_px - ramp_px:] = rise[::-1]
    return np.maximum(np.outer(line, line), floor).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """A block of the chip grid: the chips whose top-left corner lies in it.

    Attributes:
        row: index of the block row.
        col: index of the block column.
        chips: top-left corners (row_px, col_px) of the block's chips in the model grid, row-major.
        window: model-grid region the chips cover, in pixels (inside the grid).
    """

    row: int
    col: int
    chips: tuple[tuple[int, int], ...]
    window: Window


@dataclass(frozen=True)
class ChipGrid:
    """The global chip grid over a raster of ``height_px x width_px`` model-grid pixels.

    Attributes:
        height_px: raster height in pixels (model grid).
        width_px: raster width in pixels (model grid).
        tile_px: chip edge in pixels.
        overlap_px: overlap of neighbouring chips in pixels.
        block_cells: block edge in stride cells.
    """

    height_px: int
    width_px: int
    tile_px: int
    overlap_px: int
    block_cells: int

    @classmethod
    def create(cls, height_px: int, width_px: int, tile_px: int, overlap_px: int, block_px: int) -> ChipGrid:
        """Build a grid, rounding ``block_px`` to the nearest multiple of the stride (at least one).

        Raises:
            GeoccsegError: a non-positive size, or ``overlap_px`` not in ``0 .. tile_px - 1``.
        """
        if tile_px < 1:
            raise GeoccsegError(f"tile size {tile_px} px is invalid; use a positive number of pixels, e.g. --tile-px 512")
        if not 0 <= overlap_px < tile_px:
            raise GeoccsegError(
                f"overlap {overlap_px} px does not fit tiles of {tile_px} px; use 0 <= --overlap-px < --tile-px, e.g. {tile_px // 8}"
            )
        if block_px < 1:
            raise GeoccsegError(f"block size {block_px} px is invalid; use a positive number of pixels, e.g. --block-px 2048")
        stride_px = tile_px - overlap_px
        return cls(height_px, width_px, tile_px, overlap_px, max(1, round(block_px / stride_px)))

    @property
    def stride_px(self) -> int:
        """Distance between neighbouring chips in pixels."""
        return self.tile_px - self.overlap_px

    @property
    def block_px(self) -> int:
        """Block edge in pixels (a multiple of the stride)."""
        return self.block_cells * self.stride_px

    def _count(self, size_px: int) -> int:
        """Number of chips along a side of ``size_px`` pixels, the last one ending at or past the edge."""
        return 1 + max(0, math.ceil((size_px - self.tile_px) / self.stride_px))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of chips."""
        return self._count(self.height_px), self._count(self.width_px)

    @property
    def block_shape(self) -> tuple[int, int]:
        """(rows, cols) of blocks."""
        rows, cols = self.shape
        return math.ceil(rows / self.block_cells), math.ceil(cols / self.block_cells)

    def chip_shape(self, row_px: int, col_px: int) -> tuple[int, int]:
        """(height, width) in pixels of the chip at a top-left corner: ``tile_px``, cut at the grid's edge."""
        return min(self.tile_px, self.height_px - row_px), min(self.tile_px, self.width_px - col_px)

    def blocks(self) -> list[Block]:
        """Every block, row-major; each chip of the grid belongs to exactly one."""
        rows, cols = self.shape
        n, s, t = self.block_cells, self.stride_px, self.tile_px
        out = []
        for brow in range(self.block_shape[0]):
            chip_rows = range(brow * n, min((brow + 1) * n, rows))
            for bcol in range(self.block_shape[1]):
                chip_cols = range(bcol * n, min((bcol + 1) * n, cols))
                chips = tuple((r * s, c * s) for r in chip_rows for c in chip_cols)
                top, left = chip_rows[0] * s, chip_cols[0] * s
                bottom = min(chip_rows[-1] * s + t, self.height_px)
                right = min(chip_cols[-1] * s + t, self.width_px)
                window = Window(left, top, right - left, bottom - top)
                out.append(Block(brow, bcol, chips, window))
        return out
