"""Which photos to label next: whole photos ranked by what their labels would teach.

:func:`suggest_photos` is what ``geoccseg suggest FOLDER --model crack -n N -o list.csv`` calls.
Each photo is read (:func:`geoccseg.data.photos.read_photo_valid`: its transparent part is not
scored), predicted and scored with the chip grid, blending and forward path of prediction and the
per-pixel terms of scenes
(:mod:`geoccseg.suggest.terms`), one photo at a time, and reduced to one candidate: its
``low_confidence``, ``disagreement`` and ``density`` means and mean embedding (the model's; with
``SuggestParams(embedding="imagenet")`` the frozen ImageNet encoder's, :mod:`geoccseg.suggest.imagenet`,
which no label changes). Photos that have a
mask in ``labels`` (a folder of masks named like the photos) are the labeled reference of the
novelty term and are not ranked. The others are all ranked, by default with
:func:`geoccseg.suggest.select.coverage` (the most typical photo of each kind not yet labeled;
measured on DeepCrack, the score lost to random photos and coverage did not), or by the score with
:func:`geoccseg.suggest.select.greedy` (no spatial spread between photos), and the best ``n`` are
marked ``suggested``.

The CSV holds one row per photo: ``rank`` (empty for labeled photos), ``photo`` (file name),
``status`` (``suggested``, ``unlabeled``, ``labeled``, ``transparent`` for a photo without an
opaque pixel, or ``unreadable`` for one that cannot be decoded, left out with a warning), ``score``
(empty for coverage) and its parts.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from geoccseg.errors import GeoccsegError
from geoccseg.inference.confidence import ConfidenceThresholds
from geoccseg.inference.engine import Engine
from geoccseg.inference.photos import blended_rows
from geoccseg.inference.predict import PredictOptions, bundle_files, resolve_device
from geoccseg.io.atomic import atomic_path, check_not_input, check_writable
from geoccseg.io.bundle import resolve_model
from geoccseg.models import Bundle, load_bundle
from geoccseg.suggest.imagenet import DIMS, ImagenetEmbedder
from geoccseg.suggest.select import PARTS, Candidates, SuggestParams, check_seed, check_strategy, choose
from geoccseg.suggest.terms import EMBED_DIMS, FEATURES, TermParams, cell_features, n_channels, scoring_engine

log = logging.getLogger(__name__)

COLUMNS = ("rank", "photo", "status", "score", "acquisition", *PARTS, "typicality", "novelty")
"""Columns of the photo ranking CSV."""


@dataclass
class PhotoSuggestResult:
    """What :func:`suggest_photos` found.

    Attributes:
        table: one row per photo (:data:`COLUMNS`): ranked unlabeled photos first, then labeled ones.
        path: the CSV written, or None.
        seconds: wall time, seconds.
    """

    table: pd.DataFrame
    path: Path | None
    seconds: float

    @property
    def suggested(self) -> list[str]:
        """File names of the suggested photos, best first."""
        return self.table.loc[self.table["status"] == "suggested", "photo"].tolist()


def photo_sums(bundle: Bundle, image: np.ndarray, thresholds: ConfidenceThresholds, params: TermParams, *,
               engine: Engine, tile_px: int, overlap_px: int, batch_size: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Sums of the per-pixel terms over the valid pixels of one whole photo.

    The photo is predicted one chip row at a time, as :func:`geoccseg.inference.photos.predict_photo`
    does (:func:`~geoccseg.inference.photos.blended_rows`), and the terms of a pixel are summed
    once no later chip reaches it and its likely-road neighbourhood (``params.near_px``) is
    final. Memory holds a few chip rows of blended values, not whole-photo planes (ten float32
    channels: 1.9 GB for a 48-megapixel photo); every pixel's values are those of one whole blend.

    Args:
        bundle: the loaded bundle (its classes and normalisation).
        image: (C, H, W) photo bands in file units.
        thresholds: the model's confidence thresholds.
        params: per-pixel term settings.
        tile_px: chip edge in pixels (a photo smaller than a tile is one chip of its own size).
        overlap_px: overlap of neighbouring chips in pixels.
        engine: the scoring engine of the bundle's model (:func:`~geoccseg.suggest.terms.scoring_engine`).
        batch_size: chips per forward pass.
        valid: (H, W) bool, False where the photo is transparent (not scored); None: every pixel.

    Returns:
        float64 (len(FEATURES) + EMBED_DIMS,).
    """
    height, width = image.shape[1:]
    n_classes = len(bundle.meta.classes)
    values, values_top = np.zeros((n_channels(n_classes), 0, width), np.float32), 0  # blended rows from values_top on
    summed_to, total = 0, np.zeros(len(FEATURES) + EMBED_DIMS)
    weight = np.ones((height, width), np.float32) if valid is None else valid.astype(np.float32)
    for top, rows in blended_rows(engine, bundle.meta.norm.for_image(image, valid), image, n_channels(n_classes), valid=valid,
                                  tile_px=tile_px, overlap_px=overlap_px, batch_size=batch_size):
        values = np.concatenate([values, rows], axis=1)
        last = top + rows.shape[1] == height
        sum_to = height if last else top + rows.shape[1] - params.near_px  # rows whose neighbourhood is final
        if sum_to > summed_to:
            window = slice(summed_to - values_top, sum_to - values_top)
            total += cell_features(values, weight[values_top:values_top + values.shape[1]], n_classes, thresholds, params,
                                   cell_px=(sum_to - summed_to, width), window=(window, slice(None)))[:, 0, 0]
            summed_to = sum_to
            keep_from = max(0, summed_to - params.near_px)  # the neighbourhood of the next rows to sum
            values, values_top = values[:, keep_from - values_top:], keep_from
    return total


def suggest_photos(
    photos: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    model: Bundle | str | os.PathLike = "crack",
    n: int = 5,
    labels: str | os.PathLike | None = None,
    options: PredictOptions | None = None,
    params: SuggestParams | None = None,
    strategy: str = "coverage",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> PhotoSuggestResult:
    """Rank photos to label next.

    Args:
        photos: photo files, folders of photos or glob patterns.
        out: the CSV to write; None: only return the table.
        model: a loaded bundle, a shipped model name or a bundle folder.
        n: how many photos to mark ``suggested``.
        labels: folder of masks of the photos already labeled (matched by file stem; may be empty).
        options: tile, overlap, batch and device settings (as ``geoccseg predict``).
        params: acquisition and selection settings (the spatial spread does not apply).
        strategy: ``"coverage"`` (the default: the most typical photo of each kind not yet labeled,
            :func:`geoccseg.suggest.select.coverage`; on DeepCrack it matched or beat random photos
            where the score lost), ``"acquisition"`` (the score) or ``"random"`` (the baseline).
        seed: random seed of ``strategy="coverage"`` (its clustering) and ``"random"``.
        overwrite: replace an existing ``out``.
        progress: show a progress bar over photos.

    Raises:
        GeoccsegError: bad settings, an output that exists, is not ``.csv``, cannot be written or
            is an input, a missing model, no photo, an unreadable photo, a photo whose bands do not
            match the model, all photos labeled.
    """
    from geoccseg.data.photos import assign_crs_hint, find_photos, list_images, read_photo_valid, tiff_read_as_photo  # torchgeo is slow to import

    start = time.perf_counter()
    options, params = options or PredictOptions(), params or SuggestParams()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise GeoccsegError(f"-n {n} is invalid; ask for 1 or more photos")
    check_strategy(strategy)
    check_seed(seed)
    options.check()
    params.check()
    files = find_photos([photos] if isinstance(photos, (str, os.PathLike)) else list(photos))
    bundle_path = model.path if isinstance(model, Bundle) else resolve_model(model)
    if out is not None:
        out = check_writable(out, overwrite, example="suggested.csv")
        if out.suffix.lower() != ".csv":
            if tiff := tiff_read_as_photo(files):
                raise GeoccsegError(f"{tiff} has no CRS, so it is read as a photo, and photos get a CSV ranking, not areas in "
                                    f"{out.name}: name the output .csv (e.g. {out.with_suffix('.csv')}), or, if it is a scene, {assign_crs_hint(tiff)}")
            raise GeoccsegError(f"the photo ranking {out} is a CSV table: name it .csv, e.g. {out.with_suffix('.csv')}")
        check_not_input(out, [*files, *bundle_files(bundle_path)])
    labeled = set(list_images(labels, "masks", allow_empty=True)) if labels is not None else set()  # empty: the first round
    if labeled and all(f.stem in labeled for f in files):
        raise GeoccsegError(f"every photo has a mask in {labels}: there is nothing left to suggest")
    if labeled and not any(f.stem in labeled for f in files):
        raise GeoccsegError(f"no mask in {labels} has the name of a photo (e.g. {sorted(labeled)[0]} against {files[0].stem}); "
                            "name each mask as its photo (001.png for 001.jpg) and give the labeled photos among the photos, "
                            "or leave --labels out in the first round")
    bundle = copy.deepcopy(model) if isinstance(model, Bundle) else load_bundle(bundle_path)  # the caller's model keeps its mode
    device = resolve_device(options.device)
    thresholds = ConfidenceThresholds.from_meta(bundle.meta)
    terms = TermParams(params.likely_threshold, params.near_px(bundle.meta.pixel_size_m))
    tile_px = options.scoring_tile_for(bundle.meta)
    bands = len(bundle.meta.bands)
    if bands not in (1, 3):
        raise GeoccsegError(f"the model expects {bands} input bands; photos give 1 (grey) or 3 (colour)")
    engine = scoring_engine(options.engine, bundle.model, device, bundle.meta)  # exported once (onnx)
    sums = np.zeros((len(files), len(FEATURES) + EMBED_DIMS))
    imagenet = ImagenetEmbedder(bands) if params.embedding == "imagenet" else None
    imagenet_embedding = np.zeros((len(files), DIMS)) if imagenet is not None else None  # the ImageNet embeddings
    unreadable = np.zeros(len(files), dtype=bool)
    why: list[str] = []  # the reader's messages of unreadable photos (a format it refuses says what to do)
    for i, path in enumerate(tqdm(files, unit="photo", desc="score", disable=not progress)):
        try:
            image, valid = read_photo_valid(path, bands=bands)
        except GeoccsegError as exc:  # a photo cut short by a copy: the others' scores are kept, as training leaves it out
            unreadable[i] = True
            why.append(str(exc))
            with tqdm.external_write_mode():
                log.warning("geoccseg: warning: %s is left out (%s)", path.name, exc)
            continue
        sums[i] = photo_sums(bundle, image, thresholds, terms, engine=engine, tile_px=tile_px, valid=valid,
                             overlap_px=min(options.overlap_px, tile_px - 1), batch_size=options.batch_for(tile_px))
        if imagenet is not None:
            imagenet_embedding[i] = imagenet(image, valid)
    n_valid = np.maximum(sums[:, :1], 1.0)
    parts, embedding = sums[:, 1:len(FEATURES)] / n_valid, sums[:, len(FEATURES):] / n_valid
    if imagenet_embedding is not None:
        embedding = imagenet_embedding
    is_labeled = np.array([f.stem in labeled for f in files])
    empty = (sums[:, 0] == 0) & ~unreadable  # wholly transparent: nothing to label, nothing to learn from (its means read 0)
    todo = np.flatnonzero(~is_labeled & ~empty & ~unreadable)
    if len(todo) == 0:
        first = f" ({why[0]})" if why else ""  # e.g. "... has 32-bit floating-point pixels; save it as an 8- or 16-bit image"
        raise GeoccsegError(f"every photo without a mask is wholly transparent (alpha 0) or unreadable{first}: there is nothing to suggest")
    candidates = Candidates(parts[todo], embedding[todo], np.zeros(len(todo), dtype=np.int64))
    choice = choose(candidates, embedding[is_labeled & ~empty & ~unreadable], n, params, math.inf, strategy, seed, take=len(todo))
    rows = [
        {"rank": rank, "photo": files[todo[i]].name, "status": "suggested" if rank <= n else "unlabeled", "score": score,
         "acquisition": acq, **dict(zip(PARTS, parts[todo[i]])), "typicality": typical, "novelty": novelty}
        for rank, (i, score, acq, typical, novelty) in enumerate(
            zip(choice.index, choice.score, choice.acquisition, choice.typicality, choice.novelty), start=1)
    ]
    rows += [{"rank": None, "photo": files[i].name, "status": "labeled", **dict(zip(PARTS, parts[i]))}
             for i in np.flatnonzero(is_labeled & ~unreadable)]
    rows += [{"rank": None, "photo": files[i].name, "status": "transparent"} for i in np.flatnonzero(empty & ~is_labeled)]
    rows += [{"rank": None, "photo": files[i].name, "status": "unreadable"} for i in np.flatnonzero(unreadable)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["rank"] = table["rank"].astype("Int64")
    if out is not None:
        with atomic_path(out, overwrite=overwrite) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    return PhotoSuggestResult(table, out, time.perf_counter() - start)
