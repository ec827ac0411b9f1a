"""Training data from GeoTIFF scenes: labeled chips in the AOI, unlabeled chips elsewhere.

:class:`SceneTrainingData` and :class:`geoccseg.data.photos.PhotoTrainingData` share one interface
(:class:`geoccseg.data.base.TrainingData`), so the trainer does not care where chips come from.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry

from geoccseg.data.base import LazyItems, TrainingData
from geoccseg.data.chips import Query, RandomQueries, SceneChips, accept_labeled, accept_unlabeled, grid_queries, read_box
from geoccseg.data.coverage import missing_class_message
from geoccseg.errors import GeoccsegError
from geoccseg.io.aoi import areal, dissolved, read_polygons
from geoccseg.io.labels import Labels, open_labels
from geoccseg.io.normalize import PERCENTILES, NormStats, compute_stats
from geoccseg.io.scene import open_scene
from geoccseg.label_values import IGNORE_INDEX
from geoccseg.models.config import check_tile_px

MAX_TRIES = 500
FOREGROUND_TRIES = 200
"""Chips drawn at most for one that must hold a labeled road: each try costs a read of the scene's
validity and a rasterisation of the labels (about a millisecond each for vector labels), so labels
with roads in under one chip in a hundred slow these chips down."""
log = logging.getLogger(__name__)


MIXED_SCALES = 1.5
"""The ratio of the scenes' pixel sizes above which training needs ``pixel_size_m`` (below it, the
scenes train at their mean size: 0.27 and 0.30 m, say, a sample in degrees beside one in metres)."""


@dataclass
class SceneRegions:
    """The chips of one scene and the regions (scene CRS) they are drawn from."""

    chips: SceneChips
    labeled: BaseGeometry | None
    validation: BaseGeometry | None
    labels: Labels | None = None
    _samplers: dict[tuple[int, bool], RandomQueries] = field(default_factory=dict, repr=False, compare=False)

    def random_queries(self, tile_px: int, labeled: bool) -> RandomQueries:
        """Random ``tile_px`` chips inside the labeled area's extent, or anywhere in the scene
        (the sampler built once)."""
        key = (tile_px, labeled)
        if key not in self._samplers:
            self._samplers[key] = RandomQueries(self.chips, tile_px, self.labeled if labeled else None)
        return self._samplers[key]

    @functools.cached_property
    def excluded(self) -> BaseGeometry | None:
        """The labeled and validation regions, where no unlabeled chip may read: united once and
        prepared (it is tested on every unlabeled draw, up to 500 per chip; a complex AOI's union
        took milliseconds each time)."""
        parts = [g for g in (self.labeled, self.validation) if g is not None]
        if not parts:
            return None
        united = shapely.union_all(parts)
        shapely.prepare(united)
        return united


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
        norm: reuse these statistics instead of computing them (with ``per_image``: their percentiles).
        per_image: normalise each scene by its own percentiles, as prediction normalises a scene
            for a per-image model (:func:`geoccseg.inference.predict.scene_norm`); ``norm`` then
            records the scenes' joint statistics with ``per_image`` set.
        resumed: the data of a resumed run: the checks added since runs may have begun without
            them (scenes of pixel sizes more than 1.5x apart, a validation AOI without labels) are
            not made, so that such a run resumes as it trained (its data is compared then).

    Attributes:
        label_pixels: labeled pixels per class (background first) inside the labeled regions, on
            valid data, at the training pixel size; None without labels.
        unlabeled_from_labeled: True when no chip lies outside the labeled and validation regions
            (labels without an AOI cover the whole scene): the labeled chips, without their masks,
            then serve as unlabeled ones too.

    Raises:
        GeoccsegError: bad scenes, labels or AOIs; a foreground class without any labeled pixel.
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
        resumed: bool = False,
        norm: NormStats | None = None,
        per_image: bool = False,
    ) -> None:
        if not scenes:
            raise GeoccsegError("no scene given; pass --scene FILE (repeatable)")
        self.classes = list(classes or ["road"])
        self.tile_px = check_tile_px(tile_px)
        if pixel_size_m is not None and not pixel_size_m > 0:
            raise GeoccsegError(f"pixel size must be positive (metres), got {pixel_size_m}")
        self.min_valid = min_valid
        self.min_inside = min_inside
        opened = [open_scene(p, bands, north_up=True) for p in scenes]
        if len({len(s.bands) for s in opened}) != 1:
            raise GeoccsegError("scenes have different numbers of bands; select the same bands with --bands")
        self.bands = list(opened[0].bands)
        sizes = [s.pixel_size_m for s in opened]
        if pixel_size_m is None and max(sizes) > MIXED_SCALES * min(sizes) and not resumed:
            finest, coarsest = opened[int(np.argmin(sizes))], opened[int(np.argmax(sizes))]
            raise GeoccsegError(f"the scenes' pixel sizes differ: {min(sizes):.3g} m ({finest.path.name}) to {max(sizes):.3g} m "
                                f"({coarsest.path.name}); give --pixel-size-m, the one size every scene is resampled to for training")
        self.pixel_size_m = pixel_size_m or float(np.mean(sizes))
        if per_image:
            percentiles = norm.percentiles if norm else PERCENTILES
            own = [compute_stats(scene, percentiles) for scene in opened]
            self.norm = replace(own[0] if len(opened) == 1 else compute_stats(opened, percentiles), per_image=True)
        else:
            self.norm = norm or compute_stats(opened)
            own = [self.norm] * len(opened)
        self.regions: list[SceneRegions] = []
        covered_scenes = []  # those whose whole labeled area the validation AOI took
        # each file is read once, and reprojected (labels: buffered) once per CRS of the scenes: tiles of
        # one city with its labels were read, buffered and kept whole once per tile (minutes, a copy each)
        in_crs = functools.cache(lambda crs: open_labels(labels, crs, self.classes, class_column, width_m))
        aoi_polygons = {path: read_polygons(path, what) for path, what in ((aoi, "AOI"), (val_aoi, "validation AOI")) if path}
        dissolved_in = functools.cache(lambda path, crs: dissolved(aoi_polygons[path], crs, path, "AOI" if path == aoi else "validation AOI"))
        for scene, scene_norm in zip(opened, own):
            footprint = scene.footprint
            whole = in_crs(scene.crs.to_wkt()) if labels else None
            lab = whole.near(footprint) if whole is not None else None
            labeled = None
            if lab is not None:
                if aoi:
                    labeled = areal(dissolved_in(aoi, scene.crs.to_wkt()).intersection(footprint))
                elif np.isfinite(whole.total_bounds).all() and shapely.box(*whole.total_bounds).intersects(footprint):
                    labeled = footprint  # labels without an AOI count as complete over the scene
            validation = dissolved_in(val_aoi, scene.crs.to_wkt()) if val_aoi else None
            covered = False  # the validation AOI takes the whole labeled area
            if validation is not None:
                validation = areal(validation.intersection(footprint))
                if labeled is not None and validation is not None:
                    covered = labeled.area > 0 and labeled.difference(validation).area == 0
                    if covered:
                        covered_scenes.append(scene.path)
                    labeled = areal(labeled.difference(validation))
            if aoi is not None and labels is not None and labeled is None and not covered and len(opened) == 1:
                raise GeoccsegError(f"AOI {aoi} does not overlap scene {scene.path}; check its location and CRS")
            scale = self.pixel_size_m / scene.pixel_size_m
            res = (scene.res[0] * scale, scene.res[1] * scale)
            region_for_labels = labeled if labeled is not None else validation
            chips = SceneChips(scene, scene_norm, lab if (labeled is not None or validation is not None) else None, region_for_labels, res)
            self.regions.append(SceneRegions(chips, labeled, validation, lab))
        if covered_scenes and not self.has_labels:
            if len(opened) == 1:
                which = f"scene {covered_scenes[0]}"
            elif len(covered_scenes) == len(opened):
                which = f"every scene ({len(opened)})"
            else:
                which = (f"scene{'s' if len(covered_scenes) > 1 else ''} {', '.join(str(p) for p in covered_scenes)} (the AOI "
                         f"overlaps none of the other {len(opened) - len(covered_scenes)})")
            raise GeoccsegError(f"validation AOI {val_aoi} covers the whole labeled area of {which}, which leaves nothing to "
                                "train on; draw the validation AOI over a part of the labeled area only")
        if aoi is not None and labels is not None and not self.has_labels:
            raise GeoccsegError(f"AOI {aoi} does not overlap any scene; check its location and CRS")
        if val_aoi and not any(r.validation is not None for r in self.regions):
            raise GeoccsegError(f"validation AOI {val_aoi} does not overlap any scene; check its location and CRS")
        self.label_pixels = self._count_label_pixels(labels, aoi) if labels else None
        self._validation_grid: list | None = None
        if val_aoi and not self.validation_queries():  # else no validation, silently: the bundle would be the last step's
            raise GeoccsegError(f"validation AOI {val_aoi} holds no whole {self.tile_px}-px chip of valid imagery (a chip lies at "
                                "least three quarters inside it); draw it larger, or lower --tile-px")
        if val_aoi and labels:
            self._check_validation_labels(val_aoi, refuse=not resumed)
        self._labeled_grid: list | None = None
        self._unlabeled_grid: list | None = None
        self.unlabeled_from_labeled = self.has_labels and not self._any_unlabeled_chip()
        if self.unlabeled_from_labeled:
            why = "the AOIs cover the scene" if aoi else "labels without --aoi count as complete over the whole scene"
            log.warning("note: no %d-px chip lies outside the labeled area (%s), so the labeled chips serve as unlabeled ones too", self.tile_px, why)

    def _count_label_pixels(self, labels: str | os.PathLike, aoi: str | os.PathLike | None) -> np.ndarray:
        """Count the labeled pixels of each class; refuse labels that leave a foreground class without any."""
        counts = np.zeros(len(self.classes) + 1, dtype=np.int64)
        for r in self.regions:
            if r.labeled is not None:
                counts += r.chips.count_labels(r.labeled, len(counts))
        for i, name in enumerate(self.classes, start=1):
            if counts[i] == 0:
                per_scene = [(r.labels, r.chips.scene.footprint, r.labeled) for r in self.regions]
                raise GeoccsegError(missing_class_message(labels, name, i, per_scene, aoi, self.pixel_size_m))
        return counts

    def _check_validation_labels(self, val_aoi: str | os.PathLike, refuse: bool = True) -> None:
        """Count the labeled pixels per class that validation scores (:attr:`validation_pixels`: the
        validation AOI's under its accepted chips); refuse
        one without a pixel of each foreground class: the F1 of a class
        the validation does not show is 1 for a model that never predicts it and 0 for any other,
        so it cannot choose the kept step (an AOI drawn where no road was labeled)."""
        counts = np.zeros(len(self.classes) + 1, dtype=np.int64)
        for r in self.regions:
            # what validation scores: the region's part under its accepted chips (a road in a margin
            # no chip covers enough is never scored)
            chips = [read_box(r.chips, q) for region, q in self.validation_queries() if region is r]
            scored = areal(r.validation.intersection(shapely.union_all(chips))) if chips else None
            if scored is not None:
                counts += r.chips.count_labels(scored, len(counts))
        self.validation_pixels = counts
        for i, name in enumerate(self.classes, start=1):
            if counts[i] == 0 and refuse:
                raise GeoccsegError(f"validation AOI {val_aoi} holds no labeled {name}, so validation cannot tell a model that finds "
                                    f"{name}s from one that finds nothing; draw it over labeled {name}s, or leave --val-aoi out")

    def _any_unlabeled_chip(self) -> bool:
        """Whether a grid chip fits outside the labeled and validation regions (stops at the first)."""
        return any(
            accept_unlabeled(r.chips, q, r.excluded, self.min_valid) for r in self.regions for q in grid_queries(r.chips, self.tile_px)
        )

    # -- interface ----------------------------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return any(r.labeled is not None for r in self.regions)

    def labeled_chip(self, generator: torch.Generator, foreground: bool = False) -> dict:
        """A random labeled chip inside a labeled region (``image``, ``mask``); ``foreground``: the
        first of up to :data:`FOREGROUND_TRIES` such chips whose labels hold a road (or the last);
        a try reads the scene's validity and rasterises the labels, not the chip's pixels."""
        region, query = self._labeled_query(generator)
        for _ in range(FOREGROUND_TRIES if foreground else 0):
            if region.chips.holds_foreground(query):
                break
            region, query = self._labeled_query(generator)
        return _chip(region.chips[query], labeled=True)

    def _labeled_query(self, generator: torch.Generator) -> tuple[SceneRegions, Query]:
        """A random labeled chip's region and query, inside a labeled region."""
        candidates = [r for r in self.regions if r.labeled is not None and not r.random_queries(self.tile_px, labeled=True).empty]
        if not self.has_labels:
            raise GeoccsegError("no labeled region: give --labels (and --aoi where labels are complete)")
        # by area in chip pixels: the scenes' CRS units may differ (degrees against metres)
        areas = torch.tensor([r.labeled.area / abs(r.chips.res[0] * r.chips.res[1]) for r in candidates], dtype=torch.float64)
        for _ in range(MAX_TRIES if candidates else 0):  # none: labeled areas too small for a random chip
            r = candidates[int(torch.multinomial(areas, 1, generator=generator))]
            query = r.random_queries(self.tile_px, labeled=True).draw(generator)
            if accept_labeled(r.chips, query, r.labeled, self.min_inside, self.min_valid, r.validation):
                return r, query
        # random positions seldom fit (a labeled area barely larger than a chip): draw from the grid
        grid = self.require_labeled_chips()
        return grid[int(torch.randint(len(grid), (1,), generator=generator))]

    def unlabeled_chip(self, generator: torch.Generator) -> dict:
        """A random chip outside the labeled and validation regions (``image``, ``valid``).

        When no chip fits there (:attr:`unlabeled_from_labeled`), a random labeled chip without its
        mask; its pixels outside the labeled region count as invalid, so held-apart validation
        pixels never feed the unlabeled losses.
        """
        if self.unlabeled_from_labeled:
            chip = self.labeled_chip(generator)
            return {"image": chip["image"], "valid": chip["mask"] != IGNORE_INDEX}
        regions = [r for r in self.regions if not r.random_queries(self.tile_px, labeled=False).empty]
        for _ in range(MAX_TRIES if regions else 0):
            r = regions[int(torch.randint(len(regions), (1,), generator=generator))]
            query = r.random_queries(self.tile_px, labeled=False).draw(generator)
            if accept_unlabeled(r.chips, query, r.excluded, self.min_valid):
                return _chip(r.chips[query], labeled=False)
        grid = self.unlabeled_queries()
        if not grid:
            raise GeoccsegError(f"no {self.tile_px}-px chip outside the labeled and validation areas has enough valid pixels for unlabeled training; add scenes or lower --tile-px")
        r, query = grid[int(torch.randint(len(grid), (1,), generator=generator))]
        return _chip(r.chips[query], labeled=False)

    def labeled_queries(self) -> list[tuple[SceneRegions, tuple]]:
        """Grid of labeled chips (for counting and class statistics), computed once."""
        if self._labeled_grid is None:
            out = []
            for r in self.regions:
                if r.labeled is not None:
                    out += [(r, q) for q in grid_queries(r.chips, self.tile_px, r.labeled)
                            if accept_labeled(r.chips, q, r.labeled, self.min_inside, self.min_valid, r.validation)]
            self._labeled_grid = out
        return self._labeled_grid

    def require_labeled_chips(self) -> list[tuple[SceneRegions, tuple]]:
        """The grid of labeled chips, refusing a labeled area that holds none.

        Raises:
            GeoccsegError: labels are given but no chip fits inside the labeled area.
        """
        queries = self.labeled_queries()
        self._refuse_no_labeled_chip(bool(queries))
        return queries

    def _any_labeled_chip(self) -> bool:
        """Whether a grid chip fits inside a labeled region (stops at the first; the whole grid is
        a read of the scene's validity per chip: thousands on a large scene labeled whole)."""
        if self._labeled_grid is not None:
            return bool(self._labeled_grid)
        return any(accept_labeled(r.chips, q, r.labeled, self.min_inside, self.min_valid, r.validation)
                   for r in self.regions if r.labeled is not None for q in grid_queries(r.chips, self.tile_px, r.labeled))

    def _refuse_no_labeled_chip(self, fits: bool) -> None:
        """Refuse labels whose labeled area holds no grid chip (``fits`` False), naming the limit:
        the scene's size or the AOI's."""
        if fits or not self.has_labels:
            return
        sizes = [(r.chips.scene, round(r.chips.scene.width * r.chips.scene.res[0] / r.chips.res[0]),
                  round(r.chips.scene.height * r.chips.scene.res[1] / r.chips.res[1])) for r in self.regions if r.labeled is not None]
        if sizes and all(min(w, h) < self.tile_px for _, w, h in sizes):  # the scene, not the AOI, is the limit
            scene, w, h = sizes[0]
            raise GeoccsegError(f"scene {scene.path} is {w} x {h} pixels at {self.pixel_size_m:.2f} m/pixel, smaller than one "
                                f"{self.tile_px}-px chip; lower --tile-px (a multiple of 32, e.g. {max(32, min(w, h) // 32 * 32)}) "
                                "or train on a larger scene")
        raise GeoccsegError(
            f"no {self.tile_px}-px chip fits inside the labeled AOI at {self.pixel_size_m:.2f} m/pixel; "
            "enlarge the AOI or lower --tile-px"
        )

    def unlabeled_queries(self) -> list[tuple[SceneRegions, tuple]]:
        """Grid of chips outside the labeled and validation regions (for counting), computed once."""
        if self._unlabeled_grid is None:
            out = []
            for r in self.regions:
                out += [(r, q) for q in grid_queries(r.chips, self.tile_px)
                        if accept_unlabeled(r.chips, q, r.excluded, self.min_valid)]
            self._unlabeled_grid = out
        return self._unlabeled_grid

    def validation_queries(self) -> list[tuple[SceneRegions, tuple]]:
        """Grid of chips of the validation regions (computed once)."""
        if self._validation_grid is None:
            self._validation_grid = [(r, q) for r in self.regions if r.validation is not None
                                     for q in grid_queries(r.chips, self.tile_px, r.validation)
                                     if accept_labeled(r.chips, q, r.validation, self.min_inside, self.min_valid)]
        return self._validation_grid

    def validation_items(self) -> LazyItems:
        """Grid chips of the validation regions, with masks complete inside the validation region
        (the scene's chips mask everything outside the labeled region, which excludes it)."""
        queries = self.validation_queries()
        return LazyItems(len(queries), lambda i: _chip(queries[i][0].chips.read(queries[i][1], queries[i][0].validation), labeled=True))

    def class_counts(self) -> np.ndarray:
        """Pixel counts per class (background first) of the whole labeled area (:attr:`label_pixels`;
        the first 64 chips of the grid, all in one corner of the first scene, missed roads elsewhere).

        Raises:
            GeoccsegError: no labels, or no chip fits inside the labeled area.
        """
        self._refuse_no_labeled_chip(self._any_labeled_chip())  # at start and on every resume: not the whole grid
        if self.label_pixels is None:
            raise GeoccsegError("training on scenes needs --labels")
        return self.label_pixels.astype(np.float64)

    def describe(self) -> dict:
        """JSON-safe facts for ``geoccseg info``: the chips on a non-overlapping grid and the labeled pixels.

        Returns:
            ``{"chips": {"tile_px", "pixel_size_m" (training pixel size, metres), "labeled",
            "unlabeled", "validation", "unlabeled_from_labeled"}, "label_pixels": {class: pixels}}``,
            ``label_pixels`` (background first) only with labels.
        """
        facts = {"chips": {
            "tile_px": self.tile_px,
            "pixel_size_m": self.pixel_size_m,
            "labeled": len(self.labeled_queries()),
            "unlabeled": len(self.unlabeled_queries()),
            "validation": len(self.validation_queries()),
            "unlabeled_from_labeled": bool(self.unlabeled_from_labeled),
        }}
        if self.label_pixels is not None:
            facts["label_pixels"] = {name: int(n) for name, n in zip(["background", *self.classes], self.label_pixels)}
        return facts

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

