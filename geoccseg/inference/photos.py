"""Predict ordinary photos: crack probabilities, measurements and a summary, for one or thousands.

:func:`predict_photos` is what ``geoccseg predict PHOTO|FOLDER|GLOB -o OUT_DIR`` and notebooks
call. Each photo is

1. read in a thread (:func:`geoccseg.data.photos.read_photo_valid`, EXIF orientation honoured, so
   the outputs follow the photo as viewers show it; its transparent pixels, if any, are nodata:
   probability 0, no crack); a photo that cannot be read is skipped with its reason, and the
   others go on (``keep_going``);
2. predicted by :func:`predict_photo`: the chip grid, blending, normalisation, batching, device
   and inference engine of scene prediction (:func:`geoccseg.inference.predict.blend_chips`, the
   one forward path), one row of chips at a time, so that no whole-photo float array is ever held;
3. measured (:func:`geoccseg.vectorize.measure.measure_cracks`) and written (probability PNG and
   overlay, :mod:`geoccseg.inference.photo_outputs`) in a writer thread while the model predicts
   the next photo.

Memory is bounded by a few photos in flight (``read_threads + 4``) and one row of chips, never by
the number of photos. ``cracks.gpkg``, ``summary.csv`` and ``summary.json`` are written at the end,
atomically. With ``resume`` a photo whose outputs are complete is not predicted again: its
measurements are read back from its probability PNG.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from geoccseg.data.photos import assign_crs_hint, find_photos, photo_size, read_photo_valid, tiff_read_as_photo
from geoccseg.errors import GeoccsegError
from geoccseg.inference.blend import ChipGrid, blend_window
from geoccseg.inference.choices import OVERLAY_AUTO_MAX
from geoccseg.inference.cog import provenance
from geoccseg.inference.confidence import ConfidenceThresholds, write_confidence_png
from geoccseg.inference.engine import Engine, build_engine, ready_engine, settle_engine
from geoccseg.inference.photo_outputs import (
    SUMMARY_COLUMNS,
    overlay_drawn_with,
    probability_png_info,
    read_probability_png,
    write_overlay,
    write_probability_png,
    write_summary,
)
from geoccseg.inference.predict import PredictOptions, blend_chips, resolve_device
from geoccseg.io.atomic import check_writable, swept
from geoccseg.io.bundle import resolve_model
from geoccseg.io.formats import GEOTIFF_SUFFIXES, VECTOR_DRIVERS
from geoccseg.io.normalize import NormStats
from geoccseg.io.orientation import shown_size, turned_for_display
from geoccseg.io.probability import STATE_TAG, TURN_TAG, WEIGHTS_TAG, encode_uint8
from geoccseg.io.vector_write import write_vectors
from geoccseg.models import Bundle, load_bundle
from geoccseg.vectorize.measure import COLUMNS, CrackMeasurements, CrackParams, empty_branches, measure_cracks, summary_numbers

log = logging.getLogger(__name__)

LINES_NAME = "cracks.gpkg"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"


@dataclass
class PhotoRunResult:
    """What :func:`predict_photos` did.

    Attributes:
        out_dir: the output folder.
        rows: one summary row per photo, in input order (:data:`SUMMARY_COLUMNS`).
        predicted: photos predicted in this run.
        resumed: photos whose complete outputs were kept (``resume``).
        skipped: file name -> one-line reason, for each photo skipped.
        branches: crack branches written to ``cracks.gpkg``.
        overlay: whether overlays were drawn.
        seconds: wall time of the run, seconds.
    """

    out_dir: Path
    rows: list[dict]
    predicted: int
    resumed: int
    skipped: dict[str, str] = field(default_factory=dict)
    branches: int = 0
    overlay: bool = False
    seconds: float = 0.0

    @property
    def total_length_px(self) -> float:
        """Total crack length over all photos, pixels."""
        return float(sum(row["total_length_px"] or 0.0 for row in self.rows))


def predict_photo(
    bundle: Bundle,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tile_px: int,
    overlap_px: int,
    device: str,
    batch_size: int,
    engine: str | Engine = "auto",
    precision: str = "fp32",
) -> np.ndarray:
    """Class probabilities of one photo as uint8 (p x 255), one row of chips at a time.

    The chips are those of :class:`~geoccseg.inference.blend.ChipGrid` over the photo, blended as
    in scene prediction; the result equals
    ``geoccseg.inference.array.predict_array(bundle, image, tile_px=..., overlap_px=...)`` encoded
    as uint8 (up to float rounding), without its whole-photo float arrays: only one row of chips
    is held in float32. A photo smaller than a tile is one chip of the photo's own size (never
    upscaled); the network pads it to a multiple of 32 pixels by reflection.

    Args:
        bundle: a loaded model bundle; its model is moved to ``device``.
        image: (C, H, W) uint8 photo bands.
        valid: (H, W) bool, False where the photo is transparent (its probabilities are 0 there);
            None: every pixel valid.
        tile_px: chip edge in pixels.
        overlap_px: overlap of neighbouring chips in pixels.
        device: a resolved torch device (``cpu``, ``cuda``; see
            :func:`~geoccseg.inference.predict.resolve_device`).
        batch_size: chips per forward pass.
        engine: ``auto``, ``torch``, ``onnx`` or ``openvino`` (:func:`~geoccseg.inference.engine.settle_engine`),
            or an engine already built for the bundle's model on ``device``
            (:func:`~geoccseg.inference.engine.build_engine`, as :func:`predict_photos` passes it).
        precision: ``fp32``, ``bf16`` or ``int8`` (with an engine name; an engine has its own).

    Returns:
        (K, H, W) uint8 probabilities of the foreground classes, ``round(p x 255)``.
    """
    if isinstance(engine, str):
        engine = ready_engine(engine, device, bundle.model, bundle.meta, precision)
    norm = bundle.meta.norm.for_image(image, valid)  # the bundle's statistics, or the photo's own (per-image models)
    out = np.empty((len(bundle.meta.classes), *image.shape[1:]), dtype=np.uint8)
    for top, prob in blended_rows(engine, norm, image, len(bundle.meta.classes), valid=valid, tile_px=tile_px,
                                  overlap_px=overlap_px, batch_size=batch_size):
        out[:, top:top + prob.shape[1]] = encode_uint8(prob)
    return out


def blended_rows(engine: Engine, norm: NormStats, image: np.ndarray, channels: int, *, valid: np.ndarray | None = None,
                 tile_px: int, overlap_px: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """The blended outputs of a whole photo, top to bottom, one row of chips at a time.

    The chips are those of :class:`~geoccseg.inference.blend.ChipGrid` over the photo; the blend
    sums of a chip row's overlap are carried to the next, so every value is that of one blend of
    the whole photo while only one chip row is held in float32.

    Args:
        engine: the engine of the model (``channels`` outputs per pixel).
        norm: the statistics to apply to this photo.
        image: (C, H, W) photo bands in file units.
        channels: outputs per pixel.
        valid: (H, W) bool, the photo's valid pixels (:func:`~geoccseg.data.photos.read_photo_valid`);
            None: every pixel.

    Yields:
        ``(top, values)``: float32 (channels, rows, W) of the photo rows ``top`` to ``top + rows``,
        which no later chip reaches; 0 on invalid pixels.
    """
    _, height, width = image.shape
    grid = ChipGrid.create(height, width, tile_px, overlap_px, block_px=tile_px)
    blend, stride = blend_window(tile_px, overlap_px), grid.stride_px
    carry_weighted = np.zeros((channels, 0, width), dtype=np.float32)
    carry_weight = np.zeros((0, width), dtype=np.float32)
    n_rows, n_cols = grid.shape
    for i in range(n_rows):
        top = i * stride
        rows_px = min(tile_px, height - top)
        chips = [(0, j * stride, *grid.chip_shape(top, j * stride)) for j in range(n_cols)]
        rows_valid = valid[top:top + rows_px] if valid is not None else None
        weighted, weight = blend_chips(engine, norm, image[:, top:top + rows_px], rows_valid, chips, blend, batch_size, channels)
        carried = carry_weight.shape[0]  # rows of the previous chip row's overlap
        weighted[:, :carried] += carry_weighted
        weight[:carried] += carry_weight
        final = stride if i < n_rows - 1 else rows_px  # rows no later chip reaches
        done = weight[:final]
        yield top, np.divide(weighted[:, :final], done, out=np.zeros_like(weighted[:, :final]), where=done > 0)
        carry_weighted, carry_weight = weighted[:, final:], weight[final:]


@dataclass(frozen=True)
class _Run:
    """Settings shared by every photo of a run."""

    out_dir: Path
    bundle: Bundle
    device: str
    engine: str
    precision: str
    tile_px: int
    overlap_px: int
    batch_size: int
    bands: int
    params: CrackParams
    pixel_size_mm: float | None
    overlay: bool
    replace: bool
    confidence: ConfidenceThresholds | None = None
    made_by: dict[str, str] = field(default_factory=dict)
    """What predicts the probabilities (the provenance tags and the chips, :data:`MADE_BY` among
    them), written into each probability PNG."""

    @property
    def drawn_with(self) -> str:
        """The settings the crack branches are measured with, kept in each overlay's comment."""
        return "geoccseg cracks " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(self.params).items())

    def probability(self, photo: Path) -> Path:
        return self.out_dir / "probability" / f"{photo.stem}.png"

    def overlay_path(self, photo: Path) -> Path:
        return self.out_dir / "overlay" / f"{photo.stem}.jpg"

    def confidence_path(self, photo: Path) -> Path:
        return self.out_dir / "confidence" / f"{photo.stem}.png"

    def outputs(self, photo: Path) -> list[Path]:
        return [self.probability(photo), *([self.overlay_path(photo)] if self.overlay else []),
                *([self.confidence_path(photo)] if self.confidence else [])]

    def complete(self, photo: Path) -> bool:
        """The photo's outputs are all there, and its probability PNG has the photo's size, was
        predicted from this very file (:data:`SOURCE_TAG`, where recorded) and records its EXIF turn
        (:data:`TURN_TAG`): a photo replaced since, or a turned one predicted before the turn was
        recorded, is predicted again.

        Raises:
            GeoccsegError: the probability PNG was predicted by another model or with other chips.
        """
        if not all(path.is_file() for path in self.outputs(photo)):
            return False
        info = probability_png_info(self.probability(photo))
        turn, stored = turned_for_display(photo), photo_size(photo)  # the turn read once: the size shown, and its record
        if info is None or stored is None or info[0] != shown_size(stored, turn):
            return False
        recorded, stamp = info[1], source_stamp(photo)
        if recorded.get(SOURCE_TAG, stamp) != stamp:  # unrecorded: an older run's
            return False
        if STATE_TAG not in recorded and WEIGHTS_TAG in recorded:  # written before the state tag: the weights tag held this digest
            recorded = recorded | {STATE_TAG: recorded[WEIGHTS_TAG]}
        other = {key: recorded[key] for key in MADE_BY if recorded.get(key, self.made_by[key]) != self.made_by[key]}  # unrecorded: old
        if other:
            was = ", ".join(f"{MADE_BY[key]} {value}" for key, value in other.items())
            now = ", ".join(f"{MADE_BY[key]} {self.made_by[key]}" for key in other)
            raise GeoccsegError(f"{self.probability(photo)} was predicted with {was}, this run uses {now}; resume with the model and "
                                "chips that wrote it, or pass --overwrite to redo every photo")
        # a run's from before the turn was recorded: evaluate would score it as stored
        return recorded.get(TURN_TAG) == (str(turn) if turn else None)


def check_output_names(photos: Sequence[Path]) -> None:
    """Refuse photos whose output files would be one file where names ignore case or accents'
    spelling (macOS, Windows): ``Crack.jpg`` and ``crack.png``.

    Raises:
        GeoccsegError: two such photos.
    """
    seen: dict[str, Path] = {}
    for photo in photos:
        key = unicodedata.normalize("NFC", photo.stem).casefold()
        if key in seen:
            raise GeoccsegError(f"{seen[key]} and {photo} share the name {photo.stem} but for case or accents; their outputs "
                                "would be one file on macOS and Windows, rename one or predict them in separate runs")
        seen[key] = photo


OUTPUT_FOLDERS = ("probability", "overlay", "confidence")
"""Subfolders of a run's output folder that hold its images (never read as input photos)."""


def output_folders(out_dir: str | os.PathLike) -> list[Path]:
    """The folders of ``out_dir`` whose images a run writes: folders and patterns leave them out
    (``'site/**/*.jpg' -o site/out`` does not predict its own overlays)."""
    return [Path(out_dir) / sub for sub in OUTPUT_FOLDERS]


MADE_BY = {STATE_TAG: "weights (digest in memory)", "GEOCCSEG_TILE_PX": "tile (px)", "GEOCCSEG_OVERLAP_PX": "overlap (px)"}
"""PNG text keys of a probability PNG that a resumed run must share (what each names)."""


def predict_photos(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: Bundle | str | os.PathLike = "crack",
    options: PredictOptions | None = None,
    params: CrackParams | None = None,
    threshold: float | None = None,
    pixel_size_mm: float | None = None,
    overlay: bool | None = None,
    confidence: bool = False,
    keep_going: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    read_threads: int = 2,
    on_skip: Callable[[Path, str], None] | None = None,
) -> PhotoRunResult:
    """Predict photos and write their probabilities, crack lines, overlays and summary to a folder.

    Outputs in ``out_dir``: ``probability/<stem>.png`` (uint8, p x 255, the photo's size),
    ``overlay/<stem>.jpg`` (with ``overlay``), ``cracks.gpkg`` (one layer per class, one
    LineString per crack branch in the photo's pixel coordinates, see
    :mod:`geoccseg.vectorize.measure`), ``summary.csv`` and ``summary.json`` (one row per photo).

    Args:
        inputs: photos, folders of photos and glob patterns (:func:`geoccseg.data.photos.find_photos`).
        out_dir: the output folder; created if missing (its parent must exist).
        model: a loaded bundle, a shipped model name or a bundle folder (one foreground class).
        options: ``tile_px`` (default: :meth:`~geoccseg.inference.predict.PredictOptions.tile_for`), ``overlap_px``,
            ``batch_size``, ``device``, ``engine`` and ``precision`` as for scenes; the block,
            Dask and raster-type settings do not apply to photos.
        params: measurement settings (pixels); None for the defaults.
        threshold: overrides ``params.threshold`` (probability 0-1); None: ``params``' threshold,
            whose default (None) is the bundle's own (else 0.5).
        pixel_size_mm: size of one photo pixel in millimetres, for the ``*_mm`` columns; None: the
            bundle's pixel size when it has one, else the millimetre columns stay empty.
        overlay: draw overlays; None: when the run has at most :data:`OVERLAY_AUTO_MAX` photos.
        confidence: also write ``confidence/<stem>.png``, the confidence level of each pixel with
            the bundle's thresholds (:func:`geoccseg.inference.confidence.write_confidence_png`).
        keep_going: skip unreadable photos and go on (their reason in the summary); False: stop at
            the first one, after writing the summary of the photos done so far.
        resume: keep the photos whose outputs are complete (their measurements are read back
            from their probability PNGs) and redo the others; the summary and lines are rewritten.
            Outputs recorded as predicted by another model or with other chips (:data:`MADE_BY`) are
            refused (those of versions that did not record it are kept).
        overwrite: redo every photo, replacing its outputs and the summary.
        progress: show a progress bar (only where stderr is a terminal).
        read_threads: threads that read and decode photos ahead of the model.
        on_skip: called with the photo and the one-line reason of each photo skipped.

    Returns:
        The run's rows and counts.

    Raises:
        GeoccsegError: before any work: no photo found, two photos with one name, an output
            folder that is a file or cannot be written, outputs of an earlier run without
            ``resume`` or ``overwrite``, both of them, a model that is not a one-class model of 1
            or 3 bands, bad options, a resumed photo predicted with other settings. During the run:
            the first unreadable photo without
            ``keep_going``.
    """
    start = time.perf_counter()
    photos = find_photos([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs), exclude=output_folders(out_dir))
    check_output_names(photos)
    options = options or PredictOptions()
    options.check()
    bundle = model if isinstance(model, Bundle) else load_bundle(resolve_model(model))
    meta = bundle.meta
    params = params or CrackParams()
    if threshold is not None:
        params = dataclasses.replace(params, threshold=threshold)
    params = params.resolved(meta.threshold)  # the model's own decision threshold, unless one is given
    if len(meta.classes) != 1 or len(meta.bands) not in (1, 3):
        raise GeoccsegError(
            f"model {bundle.path} has {len(meta.classes)} class(es) and {len(meta.bands)} band(s); photos need a model "
            "of one class on 1 (grey) or 3 (colour) bands, such as --model crack"
        )
    if pixel_size_mm is None and meta.pixel_size_m is not None:
        pixel_size_mm = meta.pixel_size_m * 1000.0
    if pixel_size_mm is not None and not (math.isfinite(pixel_size_mm) and pixel_size_mm > 0):
        raise GeoccsegError(f"--pixel-size-mm {pixel_size_mm} is invalid; give the size of one photo pixel in millimetres, e.g. 0.25")
    tile_px = options.tile_for(meta)
    ChipGrid.create(1, 1, tile_px, options.overlap_px, tile_px)  # checks the tile and overlap
    if read_threads < 1:
        raise GeoccsegError(f"read_threads {read_threads} is invalid; use 1 or more")
    device = resolve_device(options.device)
    engine_name = settle_engine(options.engine, device, bundle.model, meta, options.precision)  # exported now (onnx)
    run = _Run(
        out_dir=Path(out_dir), bundle=bundle, device=device, engine=engine_name, precision=options.precision, tile_px=tile_px,
        overlap_px=options.overlap_px, batch_size=options.batch_for(tile_px), bands=len(meta.bands), params=params,
        pixel_size_mm=pixel_size_mm, overlay=len(photos) <= OVERLAY_AUTO_MAX if overlay is None else overlay,
        replace=overwrite or resume, confidence=ConfidenceThresholds.from_meta(meta) if confidence else None,
        # the model's threshold, not this run's --threshold: a resumed run keeps the PNGs of another one
        made_by=provenance(bundle, meta.threshold) | {"GEOCCSEG_TILE_PX": str(tile_px), "GEOCCSEG_OVERLAP_PX": str(options.overlap_px)},
    )
    _prepare(run, photos, resume, overwrite)

    done = [resume and run.complete(photo) for photo in photos]
    engine = None if all(done) else build_engine(run.engine, bundle.model, run.device, meta, run.precision)  # once for all photos
    rows: list[dict | None] = [None] * len(photos)
    frames: list[gpd.GeoDataFrame] = []
    skipped: dict[str, str] = {}
    stop: str | None = None
    predicted = resumed = 0
    readers = ThreadPoolExecutor(read_threads, thread_name_prefix="geoccseg-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="geoccseg-write")
    reads: dict[int, Future] = {}
    writes: deque[tuple[int, Future]] = deque()
    ahead = deque(i for i, d in enumerate(done) if not d)
    bar = tqdm(total=len(photos), unit="photo", desc="predict", disable=None if progress else True, file=sys.stderr)

    def collect(i: int, future: Future) -> None:
        rows[i], branches = future.result()
        frames.append(branches)
        bar.update()

    with swept([folder for folder in output_folders(run.out_dir) if folder.is_dir()]):  # listed once, not per file
        try:
            for i, photo in enumerate(photos):
                if done[i]:
                    writes.append((i, writer.submit(_remeasure, run, photo)))
                    resumed += 1
                else:
                    while ahead and len(reads) <= read_threads and ahead[0] not in reads:
                        j = ahead.popleft()
                        reads[j] = readers.submit(_read_stamped, photos[j], run.bands)
                    try:
                        stamp, image, valid = reads.pop(i).result()
                    except GeoccsegError as exc:
                        reason = str(exc)
                        skipped[photo.name] = reason
                        rows[i] = _skipped_row(photo, reason)
                        bar.update()
                        if on_skip is not None:
                            with tqdm.external_write_mode(file=sys.stderr):
                                on_skip(photo, reason)
                        if not keep_going:
                            stop = f"{photo}: {reason}; stopped at the first unreadable photo (--no-keep-going)"
                            break
                        continue
                    prob = predict_photo(
                        bundle, image, valid, tile_px=run.tile_px, overlap_px=run.overlap_px, device=run.device, batch_size=run.batch_size,
                        engine=engine,
                    )[0]
                    writes.append((i, writer.submit(_finish, run, photo, image, prob, stamp)))
                    predicted += 1
                while len(writes) > 2:
                    collect(*writes.popleft())
            while writes:
                collect(*writes.popleft())
        finally:
            for future in reads.values():
                future.cancel()
            readers.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
            bar.close()

    rows = [row for row in rows if row is not None]
    lines = pd.concat(frames, ignore_index=True) if frames else empty_branches()
    lines = gpd.GeoDataFrame(lines[list(COLUMNS)], geometry=lines.geometry, crs=None)
    write_vectors({meta.classes[0]: lines}, run.out_dir / LINES_NAME, overwrite=run.replace, pixel_coordinates=True)
    result = PhotoRunResult(
        out_dir=run.out_dir, rows=rows, predicted=predicted, resumed=resumed, skipped=skipped, branches=len(lines),
        overlay=run.overlay, seconds=time.perf_counter() - start,
    )
    summary = {
        "model": str(model) if isinstance(model, (str, os.PathLike)) else str(bundle.path),
        "classes": meta.classes, "engine": run.engine, "precision": run.precision, "tile_px": run.tile_px, "overlap_px": run.overlap_px, "threshold": params.threshold,
        "pixel_size_mm": pixel_size_mm, "photos": len(photos), "predicted": result.predicted, "resumed": result.resumed,
        "skipped": len(skipped), "stopped": stop,
    }
    write_summary(rows, run.out_dir / SUMMARY_CSV, run.out_dir / SUMMARY_JSON, run=summary, overwrite=run.replace)
    if stop is not None:
        raise GeoccsegError(stop)
    return result


def _prepare(run: _Run, photos: list[Path], resume: bool, overwrite: bool) -> None:
    """Check the output folder before any work and create it and its subfolders.

    Raises:
        GeoccsegError: see :func:`predict_photos`.
    """
    out_dir = run.out_dir
    if resume and overwrite:
        raise GeoccsegError("give either --resume (keep complete photos) or --overwrite (redo every photo), not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise GeoccsegError(f"{out_dir} is a file; photos write a folder of outputs, give -o a folder name")
    if not out_dir.exists() and out_dir.suffix.lower() in (*VECTOR_DRIVERS, *GEOTIFF_SUFFIXES, ".csv", ".json"):
        if len(photos) == 1 and (tiff := tiff_read_as_photo(photos)):  # a scene that lost its CRS, most likely
            raise GeoccsegError(
                f"{tiff} has no CRS, so it is read as a photo, and photos write a folder, not one {out_dir.suffix} file: "
                f"give a folder name such as {out_dir.with_suffix('')}, or, if it is a scene, {assign_crs_hint(tiff)}"
            )
        raise GeoccsegError(
            f"-o {out_dir}: photos write a folder (probability images, {LINES_NAME}, {SUMMARY_CSV}), not one "
            f"{out_dir.suffix} file; give a folder name such as {out_dir.with_suffix('')}"
        )
    if not out_dir.parent.is_dir():
        raise GeoccsegError(f"cannot write {out_dir}: folder {out_dir.parent} does not exist; create it first")
    finals = [out_dir / name for name in (LINES_NAME, SUMMARY_CSV, SUMMARY_JSON)]
    found = [path for path in finals + [p for photo in photos for p in run.outputs(photo)] if os.path.lexists(path)]
    if found and not (resume or overwrite):
        names = ", ".join(str(path.relative_to(out_dir)) for path in found[:3]) + (", ..." if len(found) > 3 else "")
        raise GeoccsegError(f"{out_dir} already holds outputs of a run ({names}); pass --resume to finish it or --overwrite to redo it")
    inputs = {photo.resolve() for photo in photos}
    for photo in photos:
        for path in run.outputs(photo):
            if path.resolve() in inputs:
                raise GeoccsegError(f"{path} is also an input photo; write the outputs to another folder")
    try:
        for folder in (out_dir, out_dir / "probability", *([out_dir / "overlay"] if run.overlay else []),
                       *([out_dir / "confidence"] if run.confidence else [])):
            folder.mkdir(exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GeoccsegError(f"cannot create the folders of {out_dir}: a file stands where a folder should be; choose another output folder") from None
    except OSError as exc:
        raise GeoccsegError(f"cannot create {out_dir} ({exc.strerror}); choose another output folder") from None
    for path in finals:
        check_writable(path, overwrite=True)  # a folder there, or a read-only folder, is refused now


SOURCE_TAG = "GEOCCSEG_SOURCE"
"""Probability PNG text key: the photo it was predicted from, as :func:`source_stamp` names it."""


def source_stamp(photo: Path) -> str | None:
    """The photo file as a resume recognises it: its size in bytes and modification time (ns); None
    when it cannot be read. A photo replaced by another of the same name and pixel size (a site shot
    again), or turned by a viewer that rewrites only its EXIF orientation, has another stamp."""
    try:
        stat = photo.stat()
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_stamped(photo: Path, bands: int) -> tuple[str | None, np.ndarray, np.ndarray | None]:
    """The photo's :func:`source_stamp`, taken before it is read, and the photo as prediction reads it.

    Raises:
        GeoccsegError: an unreadable photo, or one without an opaque pixel (it was predicted as "ok"
            with no crack; there is nothing to predict).
    """
    stamp = source_stamp(photo)
    image, valid = read_photo_valid(photo, bands=bands, exif_orientation=True)
    if valid is not None and not valid.any():
        raise GeoccsegError(f"photo {photo.name} is wholly transparent (alpha 0 everywhere): nothing to predict")
    return stamp, image, valid


def _finish(run: _Run, photo: Path, image: np.ndarray, prob: np.ndarray, stamp: str | None) -> tuple[dict, gpd.GeoDataFrame]:
    """Measure a predicted photo and write its overlay, then its probability PNG (the mark of a
    complete photo, with the photo's ``stamp`` as read)."""
    measured = measure_cracks(prob, image=photo.name, params=run.params, pixel_size_mm=run.pixel_size_mm)
    if run.overlay:
        write_overlay(image, measured.branches, run.overlay_path(photo), overwrite=run.replace, drawn_with=run.drawn_with)
    if run.confidence:
        write_confidence_png(prob, run.confidence, run.confidence_path(photo), overwrite=run.replace)
    turn = turned_for_display(photo)  # evaluate turns it back to the stored pixels, which masks follow
    tags = run.made_by | ({SOURCE_TAG: stamp} if stamp else {}) | ({TURN_TAG: str(turn)} if turn else {})
    write_probability_png(prob, run.probability(photo), overwrite=run.replace, tags=tags)
    return _row(photo, measured), measured.branches


def _remeasure(run: _Run, photo: Path) -> tuple[dict, gpd.GeoDataFrame]:
    """Measure a complete photo of an earlier run from its probability PNG; its overlay is drawn
    again where it shows branches of other settings (``--threshold``, ...) than this run measures."""
    measured = measure_cracks(read_probability_png(run.probability(photo)), image=photo.name, params=run.params, pixel_size_mm=run.pixel_size_mm)
    if run.overlay and overlay_drawn_with(run.overlay_path(photo)) != run.drawn_with:
        try:
            image, _ = read_photo_valid(photo, bands=run.bands, exif_orientation=True)
        except GeoccsegError as exc:  # the photo is no longer readable: its outputs stand, the old overlay with them
            log.warning("geoccseg: warning: the overlay of %s is not drawn again (%s)", photo.name, exc)
        else:
            write_overlay(image, measured.branches, run.overlay_path(photo), overwrite=True, drawn_with=run.drawn_with)
    return _row(photo, measured), measured.branches


def _row(photo: Path, measured: CrackMeasurements) -> dict:
    return {"image": photo.name, "width": measured.width_px, "height": measured.height_px, **summary_numbers(measured), "status": "ok"}


def _skipped_row(photo: Path, reason: str) -> dict:
    return {**dict.fromkeys(SUMMARY_COLUMNS), "image": photo.name, "status": reason}
