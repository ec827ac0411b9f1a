"""Training data from photo folders (``images/`` + ``masks/``), e.g. crack datasets.

Images and masks are matched by file stem. A fixed share of the images (``labeled_fraction``,
chosen with a seed) carries labels; the others are offered as unlabeled images, and their masks are
never opened. A validation part can be held apart first (``val_fraction``), or given as its own
folders. Photos have no georeferencing; their pixel size may be declared (e.g. 1 m for the
Massachusetts aerial crops) so that prediction on scenes can resample to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geoccseg.data.base import TrainingData
from geoccseg.data.chips import check_tile_px
from geoccseg.errors import GeoccsegError
from geoccseg.io.labels import IGNORE_INDEX
from geoccseg.io.normalize import NormStats, stats_from_arrays

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def list_images(folder: str | os.PathLike, what: str = "images") -> dict[str, Path]:
    """Image files of a folder by stem, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeoccsegError(f"{what} folder {folder} does not exist")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise GeoccsegError(f"{what} folder {folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_photo(path: Path) -> np.ndarray:
    """A photo as uint8 (C, H, W): 1 band for grayscale, 3 for colour (alpha dropped)."""
    with Image.open(path) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "LA") and im.mode != "LA" else "L")
        arr = np.asarray(im)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def read_mask(path: Path) -> np.ndarray:
    """A mask as class indices (H, W) uint8: 0/255 and 0/1 masks become 0/1."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"))
    values = np.unique(arr)
    if set(values.tolist()) <= {0, 1}:
        return arr.astype(np.uint8)
    return (arr >= 128).astype(np.uint8)


def split_labeled(names: list[str], labeled_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Choose ``floor(len(names) * labeled_fraction)`` labeled names with a seed; the rest are unlabeled.

    Raises:
        GeoccsegError: if the fraction is outside (0, 1] or leaves no labeled image.
    """
    if not 0 < labeled_fraction <= 1:
        raise GeoccsegError(f"labeled fraction {labeled_fraction} must be in (0, 1], e.g. 0.035 for 3.5 %")
    n = int(len(names) * labeled_fraction + 1e-9)
    if n == 0:
        raise GeoccsegError(f"labeled fraction {labeled_fraction} of {len(names)} images leaves no labeled image; raise it to at least {1 / len(names):.4f}")
    order = np.random.default_rng(seed).permutation(len(names))
    labeled = sorted(names[i] for i in order[:n])
    chosen = set(labeled)
    return labeled, [n_ for n_ in names if n_ not in chosen]


class PhotoTrainingData(TrainingData):
    """Chips cropped from photos.

    Args:
        images: folder of photos.
        masks: folder of masks matched by stem (only the labeled ones are read).
        labeled_fraction: share of the (non-validation) images that carry labels.
        seed: seed of the labeled / validation choice.
        val_fraction: share of the images held apart for validation (chosen with the seed, before
            the labeled choice); ignored when ``val_images`` is given.
        val_images: folder of validation photos (with ``val_masks``).
        val_masks: folder of validation masks.
        unlabeled_dirs: extra folders of unlabeled photos.
        classes: foreground class names (default ``["crack"]``).
        tile_px: crop edge in pixels.
        pixel_size_m: declared pixel size in metres (None when unknown).
        labeled_names: use exactly these stems as the labeled set (overrides ``labeled_fraction``).
        norm: reuse these statistics instead of computing them.
    """

    def __init__(
        self,
        images: str | os.PathLike,
        masks: str | os.PathLike,
        labeled_fraction: float = 1.0,
        seed: int = 0,
        val_fraction: float = 0.0,
        val_images: str | os.PathLike | None = None,
        val_masks: str | os.PathLike | None = None,
        unlabeled_dirs: list[str | os.PathLike] | None = None,
        classes: list[str] | None = None,
        tile_px: int = 256,
        pixel_size_m: float | None = None,
        labeled_names: list[str] | None = None,
        norm: NormStats | None = None,
    ) -> None:
        self.classes = list(classes or ["crack"])
        self.tile_px = check_tile_px(tile_px)
        self.pixel_size_m = pixel_size_m
        image_files = list_images(images)
        mask_files = list_images(masks, "masks")
        missing = sorted(set(image_files) - set(mask_files))
        if missing:
            raise GeoccsegError(f"{len(missing)} image(s) have no mask in {masks} (e.g. {', '.join(missing[:3])}); masks are matched by file name stem")
        names = sorted(image_files)
        if val_images is not None:
            val_image_files = list_images(val_images, "validation images")
            val_mask_files = list_images(val_masks, "validation masks") if val_masks else {}
            val_names = sorted(val_image_files)
            missing = sorted(set(val_names) - set(val_mask_files))
            if missing:
                raise GeoccsegError(
                    f"{len(missing)} validation image(s) have no mask (first: {missing[0]}); "
                    "pass --val-masks with a mask for every validation image"
                )
            self.val_pairs = [(val_image_files[n], val_mask_files[n]) for n in val_names]
        else:
            if not 0 <= val_fraction < 1:
                raise GeoccsegError(f"validation fraction {val_fraction} must be in [0, 1)")
            n_val = int(len(names) * val_fraction)
            order = np.random.default_rng(seed + 1_000_003).permutation(len(names))
            held = sorted(names[i] for i in order[:n_val])
            self.val_pairs = [(image_files[n], mask_files[n]) for n in held]
            names = [n for n in names if n not in set(held)]
        if labeled_names is not None:
            unknown = sorted(set(labeled_names) - set(names))
            if unknown:
                raise GeoccsegError(f"labeled names not among the training images: {', '.join(unknown[:5])}")
            labeled = sorted(labeled_names)
            unlabeled = [n for n in names if n not in set(labeled)]
        else:
            labeled, unlabeled = split_labeled(names, labeled_fraction, seed)
        self.labeled_names = labeled
        self.labeled_pairs = [(image_files[n], mask_files[n]) for n in labeled]
        self.unlabeled_paths = [image_files[n] for n in unlabeled]
        for folder in unlabeled_dirs or []:
            self.unlabeled_paths += list(list_images(folder, "unlabeled images").values())
        self._check_sizes()
        self._counts = self._count_labels(masks)
        first = read_photo(self.labeled_pairs[0][0])
        self.bands = list(range(1, first.shape[0] + 1))
        if norm is None:
            sample = [p for p, _ in self.labeled_pairs] + self.unlabeled_paths
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(sample), size=min(64, len(sample)), replace=False)
            norm = stats_from_arrays([read_photo(sample[i]) for i in sorted(pick)])
        self.norm = norm

    def _count_labels(self, masks: str | os.PathLike) -> np.ndarray:
        """Pixels per class (background first) of the labeled masks; refuse a foreground class without any."""
        counts = np.zeros(len(self.classes) + 1, dtype=np.float64)
        for _, mask in self.labeled_pairs:
            counts += np.bincount(read_mask(mask).ravel(), minlength=len(counts))[: len(counts)]
        for i, name in enumerate(self.classes, start=1):
            if counts[i] == 0:
                names = ", ".join(m.name for _, m in self.labeled_pairs[:3]) + (", ..." if len(self.labeled_pairs) > 3 else "")
                raise GeoccsegError(
                    f"masks {masks}: 0 {name} pixels in the {len(self.labeled_pairs)} labeled mask(s) ({names}); "
                    "label images that show it: raise --labeled-fraction, choose another --seed or --labeled-names"
                )
        return counts

    def _check_sizes(self) -> None:
        for image, mask in self.labeled_pairs + self.val_pairs:
            with Image.open(image) as a, Image.open(mask) as b:
                if a.size != b.size:
                    raise GeoccsegError(f"mask {mask.name} is {b.size[0]}x{b.size[1]} but image {image.name} is {a.size[0]}x{a.size[1]}; masks must match their images")

    # -- interface ----------------------------------------------------------------------------
    def _load(self, image_path: Path, mask_path: Path | None) -> dict:
        image = read_photo(image_path)
        if image.shape[0] != self.num_bands:
            raise GeoccsegError(f"{image_path.name} has {image.shape[0]} band(s), the other photos {self.num_bands}; use photos of one kind")
        item = {"image": torch.from_numpy(self.norm.apply(image)), "valid": torch.ones(image.shape[1:], dtype=torch.bool)}
        if mask_path is not None:
            item["mask"] = torch.from_numpy(read_mask(mask_path).astype(np.int64))
        return item

    def _crop(self, item: dict, generator: torch.Generator) -> dict:
        t = self.tile_px
        _, h, w = item["image"].shape
        pad_h, pad_w = max(0, t - h), max(0, t - w)
        if pad_h or pad_w:
            item = {
                "image": torch.nn.functional.pad(item["image"], (0, pad_w, 0, pad_h)),
                "valid": torch.nn.functional.pad(item["valid"], (0, pad_w, 0, pad_h), value=False),
                **({"mask": torch.nn.functional.pad(item["mask"], (0, pad_w, 0, pad_h), value=IGNORE_INDEX)} if "mask" in item else {}),
            }
            h, w = h + pad_h, w + pad_w
        top = int(torch.randint(h - t + 1, (1,), generator=generator))
        left = int(torch.randint(w - t + 1, (1,), generator=generator))
        return {k: v[..., top:top + t, left:left + t] for k, v in item.items()}

    def labeled_chip(self, generator: torch.Generator) -> dict:
        image, mask = self.labeled_pairs[int(torch.randint(len(self.labeled_pairs), (1,), generator=generator))]
        return self._crop(self._load(image, mask), generator)

    def unlabeled_chip(self, generator: torch.Generator) -> dict:
        if not self.unlabeled_paths:
            return {k: v for k, v in self.labeled_chip(generator).items() if k != "mask"}
        path = self.unlabeled_paths[int(torch.randint(len(self.unlabeled_paths), (1,), generator=generator))]
        return self._crop(self._load(path, None), generator)

    def validation_items(self) -> list[dict]:
        return [self._load(i, m) for i, m in self.val_pairs]

    def class_counts(self) -> np.ndarray:
        return self._counts.copy()

    def summary(self) -> dict:
        return {
            "source": "photos",
            "labeled": self.labeled_names,
            "num_labeled": len(self.labeled_pairs),
            "num_unlabeled": len(self.unlabeled_paths),
            "num_validation": len(self.val_pairs),
            "tile_px": self.tile_px,
            "pixel_size_m": self.pixel_size_m,
        }
