"""One scene as a TorchGeo :class:`GeoDataset` of chips, and the regions chips are drawn from.

TorchGeo samplers (``RandomGeoSampler``, ``GridGeoSampler``) produce spatial queries
``(x slice, y slice, t slice)`` in the scene CRS; :class:`SceneChips` answers them with the image,
the valid-data mask and, where labels are complete, the label mask. Queries are snapped to the
scene's pixel grid so that images and rasterised labels line up exactly.

Regions (shapely geometries in the scene CRS):

- the *labeled* region is where labels are complete: the AOI, or the whole scene when labels come
  without an AOI. Pixels of a labeled chip outside it get the ignore index.
- the *validation* region is held apart: no training chip, labeled or not, touches it.
- unlabeled chips come from the rest of the scene and never touch the labeled or validation regions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import rasterio.errors
import rasterio.features
import rasterio.windows
import torch
from geopandas import GeoDataFrame
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

from geoccseg.io.labels import Labels, transform_for
from geoccseg.io.normalize import NormStats
from geoccseg.io.scene import Scene, resampling_for
from geoccseg.label_values import IGNORE_INDEX

Query = tuple[slice, slice, slice]


class SceneChips(GeoDataset):
    """Chips of one scene, indexed by spatial queries in the scene CRS.

    Args:
        scene: the opened scene.
        norm: normalisation statistics; chips are returned normalised.
        labels: labels rasterised into each chip as ``mask`` (None for unlabeled use).
        label_region: where the labels are complete; pixels outside get :data:`IGNORE_INDEX`.
        res: (x, y) chip pixel size in CRS units; the scene's own by default. A different value
            resamples the scene (used to train at a model pixel size, e.g. 1 m).
    """

    def __init__(
        self,
        scene: Scene,
        norm: NormStats,
        labels: Labels | None = None,
        label_region: BaseGeometry | None = None,
        res: tuple[float, float] | None = None,
    ) -> None:
        self.scene = scene
        self.norm = norm
        self.labels = labels
        self.label_region = label_region
        self._res = tuple(res) if res is not None else scene.res
        interval = pd.IntervalIndex.from_tuples([(pd.Timestamp.min, pd.Timestamp.max)], closed="both", name="datetime")
        self.index = GeoDataFrame(index=interval, geometry=[scene.footprint], crs=scene.crs)

    @property
    def res(self) -> tuple[float, float]:  # noqa: D102
        return self._res

    def snap(self, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Snap CRS bounds to the scene's native pixel grid, as a read of them is (the window's offset
        and size are rounded each: an edge moves by up to one pixel)."""
        win = self.scene.window_for_bounds(bounds)
        return tuple(rasterio.windows.bounds(win, self.scene.transform))

    def __getitem__(self, query: Query) -> dict:
        """Read the chip of a query, its mask complete inside :attr:`label_region` (:meth:`read`)."""
        return self.read(query, self.label_region)

    def read(self, query: Query, label_region: BaseGeometry | None) -> dict:
        """Read the chip of a query with its labels complete inside ``label_region`` (None: everywhere),
        e.g. the validation region for a validation chip.

        Returns:
            dict with ``image`` float32 (C, H, W) normalised (0 where invalid), ``valid`` bool (H, W),
            ``mask`` int64 (H, W) class indices with ignore where unlabeled or invalid (only with
            labels), ``bounds`` (xmin, ymin, xmax, ymax) and ``crs``.
        """
        bounds, shape = self._extent(query)
        scale = min(self.res[0] / self.scene.res[0], self.res[1] / self.scene.res[1])  # scene pixels per chip pixel
        image, valid = self.scene.read(self.scene.window_for_bounds(bounds), out_shape=shape, resampling=resampling_for(scale))
        image = self.norm.apply(image)
        image[:, ~valid] = 0.0
        sample = {"image": torch.from_numpy(image), "valid": torch.from_numpy(valid), "bounds": bounds, "crs": self.scene.crs}
        if self.labels is not None:
            mask = self.labels.rasterize(bounds, shape)
            mask[~valid] = IGNORE_INDEX
            if label_region is not None:
                inside = region_mask(label_region, bounds, shape)
                mask[~inside] = IGNORE_INDEX
            sample["mask"] = torch.from_numpy(mask.astype(np.int64))
        return sample

    def _extent(self, query: Query) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
        """The bounds a query's chip is read from (snapped to the scene's pixels) and its shape.

        The shape is the query's size in chip pixels (tile_px for every sampler query), not the
        snapped extent's: a scene coarser than the chips rounds to whole native pixels, which is
        more than half a chip pixel (0.5 m scene, 0.3 m chips: 154 native px = 257 chip px), and
        chips of one batch must share a size."""
        x, y = query[0], query[1]
        bounds = self.snap((x.start, y.start, x.stop, y.stop))
        return bounds, (round((y.stop - y.start) / self.res[1]), round((x.stop - x.start) / self.res[0]))

    def holds_foreground(self, query: Query) -> bool:
        """Whether the labels hold a foreground pixel (a road) in a query's chip inside
        :attr:`label_region`, as :meth:`read` rasterises them (the chip's pixels are not read, so a
        road over the scene's nodata counts, which training then ignores)."""
        if self.labels is None:
            return False
        bounds, shape = self._extent(query)
        mask = self.labels.rasterize(bounds, shape)
        foreground = (mask > 0) & (mask != IGNORE_INDEX)
        if self.label_region is not None and foreground.any():
            foreground &= region_mask(self.label_region, bounds, shape)
        return bool(foreground.any())

    def count_labels(self, region: BaseGeometry, num_classes: int, block_px: int = 2048) -> np.ndarray:
        """Labeled pixels of each class inside ``region``, on valid data, at the chips' pixel size.

        The labels are rasterised block by block (``block_px`` chip pixels a side) over the region's
        extent, so memory does not grow with the scene. Pixels are counted as training sees them:
        inside the region, on valid data (nodata, alpha or internal mask), not ignored by the labels.

        Args:
            region: polygon(s) in the scene CRS, e.g. the labeled region.
            num_classes: number of classes, background included.
            block_px: block edge in chip pixels.

        Returns:
            int64 array (num_classes,) of pixel counts, background first; zeros without labels.
        """
        counts = np.zeros(num_classes, dtype=np.int64)
        if self.labels is None or region is None or region.is_empty:
            return counts
        scene = self.scene
        try:
            win = self.scene.window_for_bounds(region.bounds).intersection(rasterio.windows.Window(0, 0, scene.width, scene.height))
        except rasterio.errors.WindowError:  # the region lies outside the scene
            return counts
        col0, row0, col1, row1 = int(win.col_off), int(win.row_off), int(win.col_off + win.width), int(win.row_off + win.height)
        step_x = max(1, round(block_px * self.res[0] / scene.res[0]))  # native pixels per block
        step_y = max(1, round(block_px * self.res[1] / scene.res[1]))
        for row in range(row0, row1, step_y):
            for col in range(col0, col1, step_x):
                block = rasterio.windows.Window(col, row, min(step_x, col1 - col), min(step_y, row1 - row))
                bounds = rasterio.windows.bounds(block, scene.transform)
                if not region.intersects(box(*bounds)):
                    continue
                shape = (max(1, round((bounds[3] - bounds[1]) / self.res[1])), max(1, round((bounds[2] - bounds[0]) / self.res[0])))
                mask = self.labels.rasterize(bounds, shape)
                keep = scene.read_valid(block, out_shape=shape) & region_mask(region, bounds, shape) & (mask != IGNORE_INDEX)
                counts += np.bincount(mask[keep], minlength=num_classes)[:num_classes]
        return counts

    def valid_fraction(self, query: Query, probe_px: int = 32) -> float:
        """Share of valid pixels in a query's chip, from a coarse read (:meth:`Scene.read_valid`: the
        masks, and a float scene's bands for NaN; no VRT for chips across the scene's edge, whose
        outer part counts as invalid)."""
        bounds = self.snap((query[0].start, query[1].start, query[0].stop, query[1].stop))
        return float(self.scene.read_valid(self.scene.window_for_bounds(bounds), out_shape=(probe_px, probe_px)).mean())


def region_mask(region: BaseGeometry, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the chip pixels whose centre lies inside ``region``."""
    clip = region.intersection(box(*bounds))
    if clip.is_empty:
        return np.zeros(shape, dtype=bool)
    return rasterio.features.geometry_mask([clip], out_shape=shape, transform=transform_for(bounds, shape), invert=True)


def query_box(query: Query) -> BaseGeometry:
    """The chip footprint of a query as a polygon."""
    return box(query[0].start, query[1].start, query[0].stop, query[1].stop)


def read_box(chips: SceneChips, query: Query) -> BaseGeometry:
    """The scene pixels a query's chip is read from, as a polygon: its footprint snapped to the
    scene's pixel grid as the read is (:meth:`SceneChips.snap`)."""
    return box(*chips.snap((query[0].start, query[1].start, query[0].stop, query[1].stop)))


def touches(chips: SceneChips, query: Query, exclude: BaseGeometry | None) -> bool:
    """Whether a query's chip reads any scene pixel of ``exclude``: the footprint alone let a chip
    beside the region read a strip of it, at a pixel size other than the scene's."""
    return exclude is not None and read_box(chips, query).intersection(exclude).area > 0


def accept_labeled(chips: SceneChips, query: Query, region: BaseGeometry, min_inside: float, min_valid: float,
                   exclude: BaseGeometry | None = None) -> bool:
    """A labeled chip lies mostly inside the labeled region, reads no pixel of ``exclude`` (the
    validation region: its imagery is never trained on) and is mostly valid data."""
    footprint = query_box(query)
    if footprint.intersection(region).area < min_inside * footprint.area:
        return False
    if touches(chips, query, exclude):
        return False
    return chips.valid_fraction(query) >= min_valid


def accept_unlabeled(chips: SceneChips, query: Query, exclude: BaseGeometry | None, min_valid: float) -> bool:
    """An unlabeled chip reads no pixel of the excluded (labeled / validation) regions and is mostly valid."""
    if touches(chips, query, exclude):
        return False
    return chips.valid_fraction(query) >= min_valid


class RandomQueries:
    """Random queries of ``tile_px`` chips inside ``roi``'s extent, from TorchGeo's ``RandomGeoSampler``.

    The sampler is built once: building one (its index and region of interest) takes longer than
    reading a chip. Each query is drawn with the generator given to :meth:`draw`, exactly as a
    new sampler with that generator would draw it.
    """

    def __init__(self, chips: SceneChips, tile_px: int, roi: BaseGeometry | None = None) -> None:
        self._sampler = RandomGeoSampler(chips, size=tile_px, length=1, roi=roi)

    @property
    def empty(self) -> bool:
        """No chip fits in ``roi``'s extent within the scene (a sliver of an AOI across a scene's
        edge): the sampler has nothing to draw from (its draw would fail in torch.multinomial)."""
        return not self._sampler.bounds

    def draw(self, generator: torch.Generator) -> Query:
        self._sampler.generator = generator
        return next(iter(self._sampler))


def grid_queries(chips: SceneChips, tile_px: int, roi: BaseGeometry | None = None, stride_px: int | None = None) -> list[Query]:
    """Queries of a regular grid of ``tile_px`` chips over ``roi`` (TorchGeo's GridGeoSampler)."""
    if roi is not None and roi.is_empty:
        return []
    return list(GridGeoSampler(chips, size=tile_px, stride=stride_px or tile_px, roi=roi))
