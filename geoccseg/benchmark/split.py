"""The fixed held-out split of a benchmark's images: test, select and training stems.

The image stems of the data folder are shuffled once with :data:`HOLDOUT_SEED`, which does not
depend on the training seeds, so every arm, seed and fraction sees the same split. The first
:data:`TEST_FRACTION` of them form the *test* set, scored at the end; the next
:data:`SELECT_FRACTION` the *select* set, the trainer's validation folder, used only to choose which
checkpoint is saved; the rest are the *training* stems.

Where several images are crops of one photo (DeepCrack: ``11116``, ``11116-1`` ... ``11116-4``;
20 crops of ``7Q3A9060``), whole photos are shuffled instead (:data:`PHOTO_OF`, the pattern a
stem's crop suffix matches), so no held-out crop has a neighbour in training. Splits by stem (the
first protocol, recorded without a ``photo_of`` key in ``split.json``) put 37 of DeepCrack's 45
held-out crops beside a crop of the same photo in training; benchmark folders begun with them
keep them on ``--resume`` (:func:`kept_photo_of`). With a separate test folder only the select
set is taken from the data. Each part is given to the trainer as a folder of symbolic links
(:func:`link_pairs`), so the trainer never sees a held-out image.

The shipped models' datasets split the same way, or by whole tiles where neighbouring parts of one
tile must stay together (:class:`Source`); :data:`SHIPPED_SOURCES` names them for training. A
trained model records its held-out stems (``held_out`` in its bundle's training record), and every
script that scores it reads its parts from there (:func:`recorded_splits`), so each model is scored
on its own split: the shipped crack model was trained on DeepCrack split by stem, a retrained one is
split by photo.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoccseg.data.photos import list_images
from geoccseg.errors import GeoccsegError
from geoccseg.io.checksum import file_sha256

#: Seed of the test / select / train split; independent of the training seeds, never change it.
HOLDOUT_SEED = 20240611
#: Share of the data stems held out as the test set (without a test folder).
TEST_FRACTION = 0.10
#: Share of the data stems held out as the select set (checkpoint choice during training).
SELECT_FRACTION = 0.05

#: (image, mask) paths of one stem.
Pair = tuple[Path, Path]

PHOTO_OF: dict[str, str] = {"deepcrack": r"-\d+$"}
"""Per dataset, the suffix that marks a crop of a photo (removed, it names the photo); datasets not
listed are split image by image."""


def read_pairs(folder: str | os.PathLike, what: str = "data") -> dict[str, Pair]:
    """(image, mask) paths by stem of a folder holding ``images/`` and ``masks/``.

    Raises:
        GeoccsegError: a sub-folder is missing or an image has no mask.
    """
    folder = Path(folder)
    images = list_images(folder / "images", f"{what} images")
    masks = list_images(folder / "masks", f"{what} masks")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise GeoccsegError(f"{len(missing)} {what} image(s) have no mask in {folder / 'masks'} (e.g. {', '.join(missing[:3])}); masks are matched by file name stem")
    return {stem: (images[stem], masks[stem]) for stem in sorted(images)}


def split_stems(stems: Sequence[str], test_fraction: float = TEST_FRACTION, select_fraction: float = SELECT_FRACTION,
                seed: int = HOLDOUT_SEED, photo_of: str | None = None) -> dict[str, list[str]]:
    """Split stems into ``test``, ``select`` and ``train`` (each sorted) with a fixed seed.

    ``floor(n * test_fraction)`` stems go to test and ``max(1, floor(n * select_fraction))`` to
    select, taken in this order from one seeded permutation of the sorted stems. With
    ``photo_of`` (a regular expression of the crop suffix, :data:`PHOTO_OF`) the permutation is of
    the photos, and each part takes whole photos until it holds at least its count.

    Raises:
        GeoccsegError: if no training stem is left, or no test stem where one is asked for.
    """
    stems = sorted(stems)
    n_test = int(len(stems) * test_fraction + 1e-9)
    n_select = max(1, int(len(stems) * select_fraction + 1e-9))
    if n_test + n_select >= len(stems):
        raise GeoccsegError(f"{len(stems)} images are too few to hold out {n_test} test and {n_select} select images and still train; add images")
    if test_fraction > 0 and n_test == 0:  # every run would train, then find nothing to score
        raise GeoccsegError(f"{len(stems)} images are too few to hold out a test image ({test_fraction:.0%} of them); add images, "
                            "or give a folder of test images (--test-dir)")
    photos: dict[str, list[str]] = {}
    for stem in stems:
        photos.setdefault(re.sub(photo_of, "", stem) if photo_of else stem, []).append(stem)
    names = sorted(photos)
    shuffled = [photos[names[i]] for i in np.random.default_rng(seed).permutation(len(names))]
    parts: dict[str, list[str]] = {"test": [], "select": [], "train": []}
    for group in shuffled:
        part = "test" if len(parts["test"]) < n_test else "select" if len(parts["select"]) < n_select else "train"
        parts[part] += group
    if not parts["train"]:
        raise GeoccsegError(f"{len(photos)} photos are too few to hold out {n_test} test and {n_select} select images and still train; add images")
    return {part: sorted(names) for part, names in parts.items()}


def kept_photo_of(out: Path, dataset: str) -> str | None:
    """The crop pattern of the split of the benchmark folder ``out``: that its ``split.json``
    records; None (the split by stem) for a folder that holds results but no ``split.json`` (begun
    before photo-grouped splits); :data:`PHOTO_OF` for a new folder."""
    path = out / "split.json"
    if path.is_file():
        return json.loads(path.read_text()).get("photo_of")
    if (out / "results.json").is_file():
        return None
    return PHOTO_OF.get(dataset)


def check_split(out: Path, split: dict) -> None:
    """Refuse to continue the benchmark folder ``out`` with another split than its ``split.json``.

    Raises:
        GeoccsegError: ``out/split.json`` records another split.
    """
    path = out / "split.json"
    if path.is_file() and json.loads(path.read_text()) != split:
        raise GeoccsegError(f"the data differs from the split in {path}; resume with the same --data and --test-dir, "
                            "or choose another --out")


def unlabeled_folders(data: Path, split: dict) -> list[Path]:
    """``[data/unlabeled]`` when ``data`` has that folder of photos without masks, else ``[]``.

    Raises:
        GeoccsegError: an unlabeled photo is a held-out select or test image (:func:`check_unlabeled`).
    """
    folder = data / "unlabeled"
    if not folder.is_dir():
        return []
    check_unlabeled(folder, {*split["select"], *split["test"]}, split.get("photo_of"))
    return [folder]


def check_unlabeled(folder: Path, held: Iterable[str], photo_of: str | None, held_files: Iterable[Path] = ()) -> None:
    """Refuse a folder of unlabeled photos that holds a held-out (select or test) image: a copy of
    one trained on as unlabeled data would inflate its score.

    Args:
        folder: the unlabeled photos.
        held: the stems of the held-out images.
        photo_of: the pattern whose removal from a stem names its photo (a split that keeps a
            photo's crops together), or None.
        held_files: the held-out images' files, to find copies under other names (same bytes).

    Raises:
        GeoccsegError: a photo that shares its name with a held-out image, is a crop of its photo,
            or has its bytes.
    """
    def photo(stem: str) -> str:
        return re.sub(photo_of, "", stem) if photo_of else stem

    held = set(held)
    held_photos = {photo(stem) for stem in held}
    photos = list_images(folder, "unlabeled", allow_empty=True)
    found = {stem for stem in photos if stem in held or photo(stem) in held_photos}
    digests = {file_sha256(path) for path in held_files}
    if digests:
        found |= {stem for stem, path in photos.items() if file_sha256(path) in digests}
    if found:
        raise GeoccsegError(f"{len(found)} photo(s) of {folder} are held-out select or test images, by name, by photo or by their "
                            f"bytes (e.g. {', '.join(sorted(found)[:3])}); the unlabeled folder must hold other photos")


def link_pairs(root: Path, pairs: dict[str, Pair]) -> Path:
    """Make ``root/images`` and ``root/masks`` hold symbolic links to the given pairs, each named as
    the pair's file is (a dataset of links, e.g. git-annex or DVC, or one empty mask linked by many:
    the names its target has would not match the images, or would collide); return root."""
    for index, sub in enumerate(("images", "masks")):
        (root / sub).mkdir(parents=True)
        for pair in pairs.values():
            (root / sub / pair[index].name).symlink_to(pair[index].resolve())
    return root


def make_split(data: Path, test_dir: str | os.PathLike | None,
               photo_of: str | None = None) -> tuple[dict[str, Pair], dict, dict[str, Pair]]:
    """Pairs of ``data``, the fixed split (as written to ``split.json``) and the test pairs;
    ``photo_of``: keep the crops of a photo together (:func:`split_stems`).

    Raises:
        GeoccsegError: unreadable folders, or test stems that also appear in ``data``.
    """
    pairs = read_pairs(data)
    if test_dir is None:
        split = split_stems(list(pairs), photo_of=photo_of)
        test_pairs = {s: pairs[s] for s in split["test"]}
    else:
        test_pairs = read_pairs(test_dir, "test")
        shared = sorted(set(test_pairs) & set(pairs))
        if shared:
            raise GeoccsegError(f"{len(shared)} test image(s) also appear in --data (e.g. {', '.join(shared[:3])}); the test folder must hold other images")
        split = split_stems(list(pairs), test_fraction=0.0, photo_of=photo_of) | {"test": sorted(test_pairs)}
    record = {"holdout_seed": HOLDOUT_SEED, "test_dir": None if test_dir is None else str(test_dir), **split,
              **({"photo_of": photo_of} if photo_of else {})}
    return pairs, record, test_pairs


@dataclass(frozen=True)
class Source:
    """One labeled photo dataset and how its held-out parts are chosen.

    Attributes:
        name: short name in the records.
        folder: dataset folder under the data root, with ``images/`` and ``masks/``.
        group_by_tile: split by the stem's tile field (``dubai_t<tile>_<part>``: parts of a tile are
            neighbours and must not straddle the split); False: the benchmark's fixed split.
        select_tiles / test_tiles: with ``group_by_tile``, the tiles of each held-out part.
        photo_of: keep the crops of a photo together (:data:`PHOTO_OF`); None: split by stem.
    """

    name: str
    folder: str
    group_by_tile: bool = False
    select_tiles: tuple[str, ...] = ()
    test_tiles: tuple[str, ...] = ()
    photo_of: str | None = None

    def split(self, data_root: Path, held_out: dict[str, list[str]] | None = None) -> dict[str, dict[str, Pair]]:
        """``train`` / ``select`` / ``test`` pairs by stem; with ``held_out`` (``{"select": stems,
        "test": stems}``, as a model's training record holds them) those parts, and the rest as
        ``train``.

        Raises:
            GeoccsegError: a recorded held-out stem is not in the data folder.
        """
        pairs = read_pairs(data_root / self.folder, self.name)
        if held_out is not None:
            missing = sorted({s for part in ("select", "test") for s in held_out[part]} - set(pairs))
            if missing:
                raise GeoccsegError(f"{len(missing)} held-out image(s) the model records are not in {data_root / self.folder} "
                                    f"(e.g. {', '.join(missing[:3])}); score it on the data it was trained with "
                                    "(--data-root, or GEOCCSEG_DATA for the scripts without it)")
            parts = {part: list(held_out[part]) for part in ("select", "test")}
            held = set(parts["select"]) | set(parts["test"])
            parts["train"] = [s for s in pairs if s not in held]
        elif self.group_by_tile:
            tile = {s: s.split("_")[1] for s in pairs}
            parts = {"select": [s for s in pairs if tile[s] in self.select_tiles],
                     "test": [s for s in pairs if tile[s] in self.test_tiles]}
            held = set(parts["select"]) | set(parts["test"])
            parts["train"] = [s for s in pairs if s not in held]
        else:
            parts = split_stems(list(pairs), photo_of=self.photo_of)
        return {part: {s: pairs[s] for s in stems} for part, stems in parts.items()}


SHIPPED_SOURCES: dict[str, tuple[Source, ...]] = {
    "road": (Source("massachusetts", "massachusetts/train"),
             Source("dubai", "dubai-roads", group_by_tile=True, select_tiles=("t7",), test_tiles=("t8",))),
    "crack": (Source("deepcrack", "deepcrack/train", photo_of=PHOTO_OF["deepcrack"]),),
}
"""The labeled datasets of each shipped model and how a new training run holds out parts of them
(``pipelines/train_default_models.py``). A trained model is scored on the parts it recorded
(:func:`recorded_splits`), which for the crack model shipped today is DeepCrack split by stem."""


def recorded_splits(training: dict, sources: Sequence[Source], data_root: Path) -> dict[str, dict[str, dict[str, Pair]]]:
    """Each source's ``train`` / ``select`` / ``test`` pairs as a model's training record
    (``bundle.meta.training``) holds them: its ``held_out`` stems, checked against the images it
    names as trained on.

    Raises:
        GeoccsegError: the record names no held-out stems (a model not trained by
            ``pipelines/train_default_models.py``), they are not in the data, or the model trained
            on some of them.
    """
    held_out = training.get("held_out") if isinstance(training.get("held_out"), dict) else {}
    missing = [s.name for s in sources if not _stem_lists(held_out.get(s.name))]
    if missing:
        raise GeoccsegError(f"the model's training record names no held-out images of {', '.join(missing)} (a model trained "
                            "before they were recorded, or not by pipelines/train_default_models.py): train it again with that script")
    trained = set((training.get("data") or {}).get("labeled") or [])
    splits = {}
    for source in sources:
        parts = source.split(data_root, held_out[source.name])
        leaked = sorted(trained & (set(parts["select"]) | set(parts["test"])))
        if leaked:
            raise GeoccsegError(f"the model was trained on {len(leaked)} of the {source.name} images it records as held out "
                                f"(e.g. {', '.join(leaked[:3])}); train it again")
        splits[source.name] = parts
    return splits


def _stem_lists(parts) -> bool:
    """Whether a recorded ``held_out`` entry is ``{"select": [stems], "test": [stems]}``."""
    return isinstance(parts, dict) and all(isinstance(parts.get(k), list) and all(isinstance(x, str) for x in parts[k])
                                           for k in ("select", "test"))
