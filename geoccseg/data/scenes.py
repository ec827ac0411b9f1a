"""Training data from GeoTIFF scenes: labeled chips in the AOI, unlabeled chips elsewhere.

:class:`SceneTrainingData` and :class:`geoccseg.data.photos.PhotoTrainingData` share one interface
(:class:`geoccseg.data.base.TrainingData`), so the trainer does not care where chips come from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry

from geoccseg.data.base import TrainingData
from geoccseg.data.chips import SceneChips, accept_labeled, accept_unlabeled, grid_queries, random_queries
from geoccseg.errors import GeoccsegError
from geoccseg.io.aoi import read_aoi
from geoccseg.io.labels import IGNORE_INDEX, open_labels
from geoccseg.io.normalize import NormStats, compute_stats
from geoccseg.io.scene import open_scene

MAX_TRIES = 500


@dataclass
class SceneRegions:
    """The chips of one scene and the regions (scene CRS) they are drawn from."""

    chips: SceneChips
    labeled: BaseGeometry | None
    validation: BaseGeometry | None

    @property
    def excluded(self) -> BaseGeometry | None:
        parts = [g for g in (self.labeled, self.validation) if g is not None]
        return shapely.union_all(parts) if parts else None


class SceneTrainingData(TrainingData):
    """Chips from one or more GeoTIFF scenes.

    Args:
        scenes: scene files; all must have the same number of selected bands.
        labels: vector or raster labels (any CRS); None for unlabeled-only scenes.
        aoi: polygons where labels are complete; without it labels count as complete over every
            scene they overlap.
        val_aoi: polygons held apart for validation (never used for training chips).
        classes: foreground class names (index 1, 2, ...).
        class_column: vector label column holding class names.
        width_m: line label width in metres (per class or for all).
        bands: 1-based input bands (default: all but alpha).
        tile_px: chip edge in pixels.
        pixel_size_m: train at this pixel size (metres) by resampling; the scenes' own when None.
        min_valid: minimum share of valid pixels for a chip to be used.
        min_inside: minimum share of a labeled chip inside the labeled region.
        norm: reuse these statistics instead of computing them.
    """

    def __init__(
        self,
        scenes: list[str | os.PathLike],
        labels: str | os.PathLike | None = None,
        aoi: str | os.PathLike | None = None,
        val_aoi: str | os.PathLike | None = None,
        classes: list[str] | None = None,
        class_column: str | None = None,
        width_m: dict[str, float] | float | None = None,
        bands: list[int] | None = None,
        tile_px: int = 256,
        pixel_size_m: float | None = None,
        min_valid: float = 0.5,
        min_inside: float = 0.75,
        norm: NormStats | None = None,
    ) -> None:
        if not scenes:
            raise GeoccsegError("no scene given; pass --scene FILE (repeatable)")
        self.classes = list(classes or ["road"])
        self.tile_px = tile_px
        self.min_valid = min_valid
        self.min_inside = min_inside
        opened = [open_scene(p, bands) for p in scenes]
        if len({len(s.bands) for s in opened}) != 1:
            raise GeoccsegError("scenes have different numbers of bands; select the same bands with --bands")
        self.bands = list(opened[0].bands)
        self.pixel_size_m = pixel_size_m or float(np.mean([s.pixel_size_m for s in opened]))
        self.norm = norm or compute_stats(opened)
        self.regions: list[SceneRegions] = []
        for scene in opened:
            lab = open_labels(labels, scene.crs, self.classes, class_column, width_m) if labels else None
            footprint = scene.footprint
            labeled = None
            if lab is not None:
                if aoi:
                    labeled = read_aoi(aoi, scene.crs, what="AOI")
                    labeled = labeled.intersection(footprint) if labeled.intersects(footprint) else None
                elif shapely.box(*lab.total_bounds).intersects(footprint):
                    labeled = footprint  # labels without an AOI count as complete over the scene
            validation = read_aoi(val_aoi, scene.crs, what="validation AOI") if val_aoi else None
            if validation is not None:
                validation = validation.intersection(footprint) if validation.intersects(footprint) else None
                if labeled is not None and validation is not None:
                    labeled = labeled.difference(validation)
            if labeled is not None and labeled.area == 0:
                labeled = None
            if aoi is not None and labels is not None and labeled is None and len(opened) == 1:
                raise GeoccsegError(f"AOI {aoi} does not overlap scene {scene.path}; check its location and CRS")
            scale = self.pixel_size_m / scene.pixel_size_m
            res = (scene.res[0] * scale, scene.res[1] * scale)
            region_for_labels = labeled if labeled is not None else validation
            chips = SceneChips(scene, self.norm, lab if (labeled is not None or validation is not None) else None, region_for_labels, res)
            self.regions.append(SceneRegions(chips, labeled, validation))
        if labels and not any(r.labeled is not None for r in self.regions):
            raise GeoccsegError(f"labels {labels} do not overlap any scene (or the AOI); check their location and CRS")
        if val_aoi and not any(r.validation is not None for r in self.regions):
            raise GeoccsegError(f"validation AOI {val_aoi} does not overlap any scene; check its location and CRS")

    # -- interface ----------------------------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return any(r.labeled is not None for r in self.regions)

    def labeled_chip(self, generator: torch.Generator) -> dict:
        """A random labeled chip inside a labeled region (``image``, ``mask``)."""
        candidates = [r for r in self.regions if r.labeled is not None]
        if not candidates:
            raise GeoccsegError("no labeled region: give --labels (and --aoi where labels are complete)")
        areas = torch.tensor([r.labeled.area for r in candidates], dtype=torch.float64)
        for _ in range(MAX_TRIES):
            r = candidates[int(torch.multinomial(areas, 1, generator=generator))]
            query = next(random_queries(r.chips, self.tile_px, r.labeled, generator, batch=1))
            if accept_labeled(r.chips, query, r.labeled, self.min_inside, self.min_valid):
                return _chip(r.chips[query], labeled=True)
        raise GeoccsegError(f"no {self.tile_px}-px chip fits inside the labeled AOI with enough valid pixels; enlarge the AOI or lower --tile-px")

    def unlabeled_chip(self, generator: torch.Generator) -> dict:
        """A random chip outside the labeled and validation regions (``image``, ``valid``)."""
        for _ in range(MAX_TRIES):
            r = self.regions[int(torch.randint(len(self.regions), (1,), generator=generator))]
            query = next(random_queries(r.chips, self.tile_px, None, generator, batch=1))
            if accept_unlabeled(r.chips, query, r.excluded, self.min_valid):
                return _chip(r.chips[query], labeled=False)
        raise GeoccsegError(f"no {self.tile_px}-px chip outside the AOI has enough valid pixels for unlabeled training; add scenes or lower --tile-px")

    def labeled_queries(self) -> list[tuple[SceneRegions, tuple]]:
        """Grid of labeled chips (for counting and class statistics)."""
        out = []
        for r in self.regions:
            if r.labeled is not None:
                out += [(r, q) for q in grid_queries(r.chips, self.tile_px, r.labeled)
                        if accept_labeled(r.chips, q, r.labeled, self.min_inside, self.min_valid)]
        return out

    def unlabeled_queries(self) -> list[tuple[SceneRegions, tuple]]:
        """Grid of unlabeled chips (for counting)."""
        out = []
        for r in self.regions:
            out += [(r, q) for q in grid_queries(r.chips, self.tile_px)
                    if accept_unlabeled(r.chips, q, r.excluded, self.min_valid)]
        return out

    def validation_items(self) -> list[dict]:
        """Grid chips of the validation regions, with masks."""
        items = []
        for r in self.regions:
            if r.validation is not None:
                for q in grid_queries(r.chips, self.tile_px, r.validation):
                    if accept_labeled(r.chips, q, r.validation, self.min_inside, self.min_valid):
                        items.append(_chip(r.chips[q], labeled=True))
        return items

    def class_counts(self, max_chips: int = 64) -> np.ndarray:
        """Pixel counts per class (background first) over a grid of labeled chips."""
        counts = np.zeros(len(self.classes) + 1, dtype=np.float64)
        queries = self.labeled_queries()
        if self.has_labels and not queries:
            raise GeoccsegError(
                f"no {self.tile_px}-px chip fits inside the labeled AOI at {self.pixel_size_m:.2f} m/pixel; "
                "enlarge the AOI or lower --tile-px"
            )
        for r, q in queries[:max_chips]:
            mask = r.chips[q]["mask"].numpy()
            counts += np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=len(counts))[: len(counts)]
        return counts

    def summary(self) -> dict:
        return {
            "source": "scenes",
            "scenes": [str(r.chips.scene.path) for r in self.regions],
            "bands": self.bands,
            "tile_px": self.tile_px,
            "pixel_size_m": self.pixel_size_m,
        }


def _chip(sample: dict, labeled: bool) -> dict:
    out = {"image": sample["image"], "valid": sample["valid"]}
    if labeled:
        out["mask"] = sample["mask"]
    return out


def describe_scene(path: Path, bands: list[int] | None = None) -> dict:
    """Facts about a scene for ``geoccseg info``: size, bands, dtypes, CRS, pixel size, nodata share."""
    scene = open_scene(path, bands)
    ds = scene.dataset
    valid_probe = ds.dataset_mask(out_shape=(min(scene.height, 2048), min(scene.width, 2048)))
    return {
        "path": str(path),
        "width": scene.width,
        "height": scene.height,
        "band_count": scene.band_count,
        "dtypes": list(ds.dtypes),
        "input_bands": list(scene.bands),
        "crs": scene.crs.to_string(),
        "pixel_size_m": scene.pixel_size_xy_m,
        "mask": scene.mask_kind,
        "nodata_share": float((valid_probe == 0).mean()),
    }
