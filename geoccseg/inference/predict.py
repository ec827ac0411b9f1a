"""Block-wise prediction of a whole scene into a seamless probability raster.

:func:`predict_scene` cuts the scene's global chip grid (:mod:`geoccseg.inference.blend`) into
blocks. Each block is one task (:func:`predict_block`): read the block's pixels once through
:meth:`Scene.read` (boundless, resampled to the model's pixel size when it differs), normalise
them with the bundle's statistics, run its chips through the inference engine in batches
(:mod:`geoccseg.inference.engine`: PyTorch or ONNX Runtime) and return the
weighted sums ``sum(w * p)`` and ``sum(w)`` over the block's region. A single writer adds the
results into a temporary accumulator as they arrive, in any order, and a final streaming pass
writes the probability COG (:mod:`geoccseg.inference.cog`). Memory is bounded by the block and
batch sizes and the number of blocks in flight, never by the scene size.

Tasks run in this process (a small thread pool sharing the model), in a local Dask cluster of
single-threaded worker processes (``workers=N``), or on an existing Dask cluster
(``scheduler="tcp://..."``). Dask workers load the bundle themselves from its path, once per
process; the model never travels through the scheduler.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from geoccseg.errors import GeoccsegError, first_line
from geoccseg.inference.blend import Block, ChipGrid, blend_window
from geoccseg.inference.choices import DEFAULT_OVERLAP_PX
from geoccseg.inference.cluster import parse_device, settle_on_workers
from geoccseg.inference.cog import COG_BLOCK_PX, Accumulator, check_prob_suffix, prob_dtype_name, provenance, write_probability_cog
from geoccseg.inference.engine import Engine, build_engine, check_engine, check_precision, engine_label, settle_engine
from geoccseg.io.atomic import check_not_input, check_writable, scratch_dir, warn_if_short_of_space
from geoccseg.io.bundle import META, BundleMeta, bundle_stamp, is_weights_file, read_bundle
from geoccseg.io.normalize import NormStats, compute_stats
from geoccseg.io.scene import Scene, open_scene, resampling_for
from geoccseg.models import Bundle, load_bundle
from geoccseg.models.bundle import state_sha256

if TYPE_CHECKING:
    import distributed

DEFAULT_TILE_PX = 512
"""Smallest default prediction tile, in model pixels: the bundle's training tile is raised to this
(:meth:`PredictOptions.tile_for`, the one place the default tile is chosen, for scenes and photos).

A fully convolutional network predicts on tiles larger than it trained on, and ONNX Runtime's
forward rate per chip pixel is about the same at 256, 512 and 1024 px (one thread: 2.1-2.2 Mpx/s),
so a bigger tile costs only by its overlaps: at 64-px overlaps an 8192-px scene computes 1.76x its
pixels in 256-px chips, 1.30x in 512-px chips, 1.13x in 1024-px chips. Held-out F1 at the model's
threshold at 256 / 512 / 1024 px (overlap 64; ``pipelines/benchmark_tiles.py``,
``pipelines/results/tiles/``): DeepCrack test 0.8594 / 0.8631 / 0.8638 (544 x 384 photos),
Massachusetts test 0.6035 / 0.6074 / 0.6074 (400-px crops: one chip from 512 px up), Dubai select
0.6423 / 0.6387 / 0.6369 and test 0.7282 / 0.7236 / 0.7213 (about 2149 x 1480 px: fewer chips
average each pixel as tiles grow). 512 px gains on DeepCrack and Massachusetts and loses 0.0036 on
the Dubai select images; 1024 px would lose another 0.0018 there for 13 % fewer chip pixels."""

DEFAULT_BATCH_PX = 4 * 256 * 256
"""Chip pixels per forward pass by default (:meth:`PredictOptions.batch_for`): 4 chips of 256 px,
1 of 512 px or more. ONNX Runtime's and PyTorch's forward rates on the CPU do not grow with the
batch at these sizes (provisional, one thread: ONNX Runtime 2.1-2.2 Mpx/s for 1, 2 and 4 chips of
512 px), while memory does (ONNX Runtime: +55 MiB for one 512-px chip, +440 MiB for four)."""

CUDA_BATCH_PX = 8 * 512 * 512
"""Chip pixels per forward pass by default on CUDA (:meth:`PredictOptions.batch_for`): 8 chips of
512 px. A GPU needs big batches where a CPU does not: on an NVIDIA H200 (bf16 autocast, the
shipped road model, ``pipelines/profile_predict.py``, ``pipelines/results/predict-gpu/``) the
forward pass ran at 48 Mpx/s with one 512-px chip, 416 with 8, 564 with 16, and ``predict_scene``
on an 8192-px scene at 17.0 Mpx/s with 8 chips per pass (2 blocks at once, as on CUDA by
default). A pass of eight chips grew the peak memory by about 0.6 GB in float32 on the CPU; under
bf16 autocast it holds less (not measured on the GPU)."""


def blocks_at_once(device: str) -> int:
    """How many blocks one process predicts at a time on ``device``: 1 on the CPU (the engine's
    forward pass already takes every core), 2 on CUDA (one block reads and blends while the other
    runs on the GPU, as :data:`CUDA_BATCH_PX` was measured)."""
    return 1 if device == "cpu" else 2


MIN_TILE_PX = 256
"""Smallest default tile of ``geoccseg suggest``'s scoring (the bundle's training tile is raised to
this); prediction's is :data:`DEFAULT_TILE_PX`. Scoring stayed at 256 px when prediction moved to
512: every measurement of suggested against random labels (README) was made with it, and
moving would need them all again. It is also faster there, as a scored block computes every chip
that reaches its cells and their halo, a narrower ring with smaller chips: at 8192 px 83.5 s
against 99.0 s with 512-px chips, peak RSS 1594 against 1574 MB (one run each, ONNX Runtime)."""

SCALE_TOLERANCE = 0.05
"""Relative pixel-size difference (scene vs model) below which the scene is used as it is."""

MIN_SCALE = 0.25
"""Fewest scene pixels per model pixel: a scene whose pixels are more than 4 times the model's is
refused (a 10 m scene for a 1 m model would be predicted on a grid 100 times its own)."""

GDAL_CACHE_BYTES = 64 * 2**20
"""GDAL block cache while predicting (bytes: rasterio passes it to ``GDALSetCacheMax64``), so that
memory does not grow with the scene size."""

_MODELS: dict[tuple[str, str, str, str], tuple[torch.nn.Module, BundleMeta]] = {}  # (path, device, state, meta): ModelRef's
_ENGINES: dict[tuple[str, str, int, Callable], tuple[torch.nn.Module, Engine]] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class PredictOptions:
    """How a scene is cut into chips and blocks and where they run (the probabilities do not
    depend on ``block_px``, ``batch_size``, ``workers`` or ``scheduler`` beyond the order of float32
    sums: at most 1/255 in a few pixels).

    Attributes:
        tile_px: chip edge in model-grid pixels; None: :meth:`tile_for` (the bundle's training
            tile, at least :data:`DEFAULT_TILE_PX`: bigger tiles waste less on overlap).
        overlap_px: overlap of neighbouring chips in pixels (the blending ramp).
        block_px: block edge in pixels, rounded to a multiple of the stride; one task each.
        batch_size: chips per forward pass; None: :meth:`batch_for` (:data:`DEFAULT_BATCH_PX` pixels,
            :data:`CUDA_BATCH_PX` on CUDA).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (mixed precision on CUDA).
        engine: ``"auto"``, ``"torch"``, ``"onnx"`` or ``"openvino"`` (:func:`geoccseg.inference.engine.settle_engine`;
            ``auto``: torch on CUDA, the faster one on the CPU, torch where the network cannot be exported).
        precision: ``"fp32"``, ``"bf16"`` (openvino or torch engine) or ``"int8"`` (onnx engine), on the CPU
            (experimental; CUDA always runs under bf16 autocast).
        workers: run blocks on a local Dask cluster of this many single-threaded processes.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); its workers must
            see the scene and bundle paths.
        prob_dtype: ``"uint8"`` (p x 255, mask nodata) or ``"float32"`` (NaN nodata); ``"float16"``
            is another name of ``"float32"`` (see :mod:`geoccseg.inference.cog`).
    """

    tile_px: int | None = None
    overlap_px: int = DEFAULT_OVERLAP_PX
    block_px: int = 2048
    batch_size: int | None = None
    device: str = "auto"
    engine: str = "auto"
    precision: str = "fp32"
    workers: int | None = None
    scheduler: str | None = None
    prob_dtype: str = "uint8"

    def check(self) -> None:
        """Raise :class:`GeoccsegError` for settings that cannot work (the grid checks the sizes)."""
        prob_dtype_name(self.prob_dtype)
        check_engine(self.engine)
        check_precision(self.precision)
        if self.workers is not None and self.scheduler is not None:
            raise GeoccsegError("give either --workers (a local Dask cluster) or --scheduler (an existing one), not both")
        if self.workers is not None and self.workers < 1:
            raise GeoccsegError(f"--workers {self.workers} is invalid; use 1 or more worker processes")
        if self.batch_size is not None and self.batch_size < 1:
            raise GeoccsegError(f"--batch-size {self.batch_size} is invalid; use 1 or more chips per batch")
        if self.tile_px is not None and self.tile_px < 1:
            raise GeoccsegError(f"--tile-px {self.tile_px} is invalid; give the chip edge in pixels, e.g. 512")

    def tile_for(self, meta: BundleMeta) -> int:
        """The chip edge in model-grid pixels for a bundle: :attr:`tile_px`, or by default the bundle's
        training tile raised to :data:`DEFAULT_TILE_PX`."""
        return self.tile_px if self.tile_px is not None else max(meta.tile_px, DEFAULT_TILE_PX)

    def scoring_tile_for(self, meta: BundleMeta) -> int:
        """The chip edge of ``geoccseg suggest``'s scoring (scenes and photos): :attr:`tile_px`, or by
        default the bundle's training tile raised to :data:`MIN_TILE_PX`."""
        return self.tile_px if self.tile_px is not None else max(meta.tile_px, MIN_TILE_PX)

    def batch_for(self, tile_px: int, device: str | None = None) -> int:
        """Chips per forward pass for chips of ``tile_px`` pixels: :attr:`batch_size`, or by default
        as many as make :data:`DEFAULT_BATCH_PX` pixels (:data:`CUDA_BATCH_PX` on CUDA), at least one.

        Args:
            tile_px: the chip edge in pixels.
            device: the resolved device the chips run on (on a Dask cluster the workers', not this
                machine's); None: :attr:`device`, ``auto`` counting as CUDA where this machine has it.
        """
        if self.batch_size is not None:
            return self.batch_size
        device = device or self.device
        cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        return max(1, (CUDA_BATCH_PX if cuda else DEFAULT_BATCH_PX) // tile_px**2)


@dataclass(frozen=True)
class ModelRef:
    """What the jobs of a run name their model by (small and picklable; :func:`model_ref`).

    Attributes:
        path: the bundle folder, absolute (Dask workers started elsewhere see the same one).
        stamp: :func:`weights_stamp` of the folder when the run began ("" where it cannot be read:
            a bundle built in memory); a process that loads the folder refuses it rewritten since.
        state: :func:`~geoccseg.models.bundle.state_sha256` of the model the run predicts with:
            the model this process shares (:func:`share_bundle`) is found by it, and a process that
            loads the folder instead refuses weights other than these, so one output never mixes
            two models nor names a model that did not run.
        meta: :func:`meta_sha256` of the metadata the run predicts with, found and checked like
            ``state`` (two copies of one model whose normalisation differs are two models).
    """

    path: str
    stamp: str
    state: str
    meta: str


def model_ref(bundle: Bundle) -> ModelRef:
    """The :class:`ModelRef` of a loaded bundle, for the jobs of one run."""
    return ModelRef(str(Path(bundle.path).resolve()), weights_stamp(bundle.path), state_sha256(bundle.model), meta_sha256(bundle.meta))


PREDICTION_META = ("model", "classes", "bands", "norm", "pixel_size_m")
"""What prediction takes from a bundle's metadata (not its threshold, applied where the lines are
drawn, nor its training record)."""


def meta_sha256(meta: BundleMeta) -> str:
    """Hex SHA-256 of the :data:`PREDICTION_META` of a bundle's metadata as it is in memory, every
    number read as a float (``pixel_size_m=1`` set in a notebook is the 1.0 its file holds, a numpy
    scalar the number it holds)."""
    used = {key: value for key, value in meta.to_dict().items() if key in PREDICTION_META}
    return hashlib.sha256(json.dumps(_numbers_as_floats(used), sort_keys=True).encode()).hexdigest()


def _numbers_as_floats(value):
    """``value`` (JSON-like: dicts, lists, tuples, numbers, strings) with every number a float."""
    if isinstance(value, dict):
        return {key: _numbers_as_floats(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(item) for item in value]
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to predict one block (small and picklable: no model, no pixels).

    Attributes:
        scene: the scene (re-opens its file in the worker).
        model: the model (:func:`cached_model`: this process's shared one, else loaded from its
            folder once per process).
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        grid: the global chip grid, in model-grid pixels.
        block: the block to predict.
        scale: model pixel size / scene pixel size (scene pixels per model pixel; 1.0: no resampling).
        batch_size: chips per forward pass.
        engine: the settled engine name (``torch``, ``onnx`` or ``openvino``, :func:`~geoccseg.inference.engine.settle_engine`).
        precision: the engine's precision (``fp32``, ``bf16``, ``int8``).
        norm: the scene's own statistics for a per-image model (:func:`scene_norm`); None: the bundle's.
    """

    scene: Scene
    model: ModelRef
    device: str
    grid: ChipGrid
    block: Block
    scale: float
    batch_size: int
    engine: str
    precision: str = "fp32"
    norm: NormStats | None = None


@dataclass
class BlockResult:
    """Blended sums of one block over its region of the model grid (clipped to the grid).

    Attributes:
        row_px: top of the region in model-grid pixels.
        col_px: left of the region in model-grid pixels.
        weighted: float32 (C, h, w), sum of weight x probability per foreground class.
        weight: float32 (h, w), sum of weights; 0 where the scene has no valid data.
    """

    row_px: int
    col_px: int
    weighted: np.ndarray
    weight: np.ndarray

    @property
    def window(self) -> Window:
        return Window(self.col_px, self.row_px, self.weight.shape[1], self.weight.shape[0])


# -- model -------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; check that a requested device exists.

    Raises:
        GeoccsegError: an unknown device name, CUDA requested on a machine without it, or a GPU
            number the machine does not have.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    parsed = parse_device(device)
    kind, index = parsed.type, parsed.index
    if kind == "cuda" and not torch.cuda.is_available():
        raise GeoccsegError(f"--device {device} was requested but no CUDA GPU is available; use --device cpu or auto")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        which = "only cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise GeoccsegError(f"device {device}: this machine has {count} CUDA GPU{'s' if count > 1 else ''}, {which}; use cuda "
                            "(the first) or one of those")
    return device


def weights_stamp(bundle_path: str | os.PathLike) -> str:
    """What tells a bundle rewritten with another model (:func:`~geoccseg.io.bundle.bundle_stamp`:
    its weights' checksum, architecture, classes, bands and normalisation; "" if unreadable)."""
    return bundle_stamp(Path(bundle_path).resolve())


def share_bundle(bundle: Bundle, device: str, ref: ModelRef) -> None:
    """Make an already loaded bundle the model of this process on ``device`` for the jobs that name
    it by ``ref`` (:func:`model_ref`; in-process runs: they use the model in memory, whatever its
    folder holds meanwhile). A copy is kept: the caller's model stays in its mode (a notebook's, in
    training, was switched to eval), and what is done to it later (trained on in place) never
    reaches a run or lazy array that names ``ref``, whose digest it no longer has."""
    model = copy.deepcopy(bundle.model).to(device)
    with _MODELS_LOCK:
        _MODELS.clear()
        _ENGINES.clear()
        _MODELS[(ref.path, device, ref.state, ref.meta)] = (model.eval(), copy.deepcopy(bundle.meta))


def cached_model(ref: ModelRef, device: str) -> tuple[torch.nn.Module, BundleMeta]:
    """The model and metadata ``ref`` names on ``device``: the one this process shares
    (:func:`share_bundle`), else its bundle folder's, loaded once per process (one bundle kept).

    Raises:
        GeoccsegError: the folder cannot be read, was rewritten since the run began (a training run
            writing into it), or does not hold the model the run predicts with (weights or metadata
            changed in memory after loading); a damaged bundle.
    """
    key = (ref.path, device, ref.state, ref.meta)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
    now = weights_stamp(ref.path)
    if not now:
        raise GeoccsegError(f"this process cannot read model bundle {ref.path} (moved or deleted during the run? on a Dask "
                            "cluster every worker must see the bundle and the scene at the same paths as the client)")
    rewritten = GeoccsegError(f"model bundle {ref.path} was rewritten while this run used it (a training run writing "
                              "into it?); run again once that is finished, or use a copy of the bundle")
    if ref.stamp and now != ref.stamp:
        raise rewritten
    with _MODELS_LOCK:
        if key not in _MODELS:
            bundle = load_bundle(ref.path)
            if ref.stamp and bundle.stamp != ref.stamp:  # rewritten between the check and the read
                raise rewritten
            if bundle.loaded_state_sha256 != ref.state or meta_sha256(bundle.meta) != ref.meta:
                raise GeoccsegError(f"model bundle {ref.path} does not hold the model this run predicts with (its weights or "
                                    "metadata were changed in memory after it was loaded, or the folder rewritten since); save the model with "
                                    "geoccseg.io.bundle.save_bundle and predict from that folder (a lazy array: compute it before predicting with another model)")
            _MODELS.clear()
            _ENGINES.clear()
            _MODELS[key] = (bundle.model.to(device).eval(), bundle.meta)
        return _MODELS[key]


def cached_engine(
    ref: ModelRef, device: str, engine: str, precision: str = "fp32",
    build: Callable[[str, torch.nn.Module, str, BundleMeta, str], Engine] = build_engine,
) -> tuple[Engine, BundleMeta]:
    """The engine ``engine`` (resolved name) running the process's model ``ref`` names on ``device`` at
    ``precision`` (:func:`cached_model`; built by ``build``, prediction's
    :func:`geoccseg.inference.engine.build_engine` or the acquisition terms'
    :func:`geoccseg.suggest.terms.scoring_engine`), and the bundle's metadata.

    The engine is built once per process model (a new :func:`share_bundle` or a reloaded bundle builds
    it again): the exported engines' cache key hashes every weight, which each block would repeat.
    """
    model, meta = cached_model(ref, device)
    key = (engine, precision, torch.get_num_threads(), build)
    with _MODELS_LOCK:
        found = _ENGINES.get(key)
    if found is not None and found[0] is model:
        return found[1], meta
    built = build(engine, model, device, meta, precision)
    with _MODELS_LOCK:
        _ENGINES.clear()
        _ENGINES[key] = (model, built)
    return built, meta


# -- one block ---------------------------------------------------------------------------------
def read_model_window(scene: Scene, window: Window, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Read a model-grid window (boundless), resampled from the scene when ``scale != 1``.

    Returns:
        ``image`` float32 (C, h, w) in file units, 0 where invalid, and ``valid`` bool (h, w).
    """
    if scale == 1.0:
        return scene.read(window)
    native = Window(window.col_off * scale, window.row_off * scale, window.width * scale, window.height * scale)
    return scene.read(native, out_shape=(int(window.height), int(window.width)), resampling=resampling_for(scale))


def blend_chips(
    engine: Engine,
    norm: NormStats,
    image: np.ndarray,
    valid: np.ndarray | None,
    chips: Sequence[tuple[int, int, int, int]],
    blend: np.ndarray,
    batch_size: int,
    n_classes: int,
    keep: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict chips of one in-memory region and add them up with their blend weights.

    The one forward path of prediction: scene blocks (:func:`predict_block`) and in-memory images
    (:func:`geoccseg.inference.array.predict_array`) both run through it, whatever the engine. Chips
    of one shape (edge chips are cut at the raster's edge) are batched, normalised on the engine's
    device and zeroed where invalid, as in training. Chips without any valid pixel are skipped.
    Weights are zeroed on invalid pixels, so that ``sum(w) == 0`` marks nodata.

    Args:
        engine: the inference engine (:mod:`geoccseg.inference.engine`): normalised chips to
            probabilities of the foreground classes (acquisition scores blend other values through
            a :class:`~geoccseg.inference.engine.TorchEngine` with another forward,
            :mod:`geoccseg.suggest.terms`).
        norm: the model's normalisation statistics.
        image: (C, h, w) pixels of the region in file units (any numeric dtype).
        valid: (h, w) bool, valid pixels; None when every pixel is valid.
        chips: (row_px, col_px, height_px, width_px) of each chip, relative to the region.
        blend: float32 (tile_px, tile_px) blend weights (:func:`~geoccseg.inference.blend.blend_window`).
        batch_size: chips per forward pass.
        n_classes: number of channels the engine returns (the model's foreground classes).
        keep: (row_px, col_px, height_px, width_px) of the part of the region to add up, relative
            to it; the chips are still predicted whole (the rest of the region only feeds them).
            None: the whole region. A scene block scored with a halo needs its cells and the halo,
            not every pixel of the chips that reach them (chips reach up to a stride further).

    Returns:
        ``weighted`` float32 (n_classes, h, w), sum of weight x probability per foreground class,
        and ``weight`` float32 (h, w), sum of weights; h, w are those of ``keep`` when given.
    """
    device = engine.device
    all_valid = valid is None or bool(valid.all())
    top, left, height, width = keep if keep is not None else (0, 0, *image.shape[1:])
    weighted = np.zeros((n_classes, height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    chips = [ch for ch in chips if ch[0] < top + height and ch[0] + ch[2] > top and ch[1] < left + width and ch[1] + ch[3] > left]
    if not all_valid:
        chips = [ch for ch in chips if valid[ch[0]:ch[0] + ch[2], ch[1]:ch[1] + ch[3]].any()]
    for (h, w), same_shape in groupby(sorted(chips, key=lambda ch: ch[2:]), key=lambda ch: ch[2:]):
        same_shape = list(same_shape)
        blend_on_device = torch.from_numpy(blend[:h, :w]).to(device)
        for start in range(0, len(same_shape), batch_size):
            batch = [(r, c) for r, c, _, _ in same_shape[start:start + batch_size]]
            x = norm.apply(torch.from_numpy(np.stack([image[:, r:r + h, c:c + w] for r, c in batch])).to(device))
            if not all_valid:
                x = x * torch.from_numpy(np.stack([valid[r:r + h, c:c + w] for r, c in batch])[:, None]).to(device)
            probs = (engine(x) * blend_on_device).cpu().numpy()
            for (r, c), p in zip(batch, probs):
                r0, r1 = max(r, top), min(r + h, top + height)  # the chip's part inside ``keep``
                c0, c1 = max(c, left), min(c + w, left + width)
                chip = (slice(r0 - r, r1 - r), slice(c0 - c, c1 - c))
                out = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
                if all_valid:
                    weighted[:, out[0], out[1]] += p[:, chip[0], chip[1]]
                    weight[out] += blend[chip]
                else:
                    inside = valid[r0:r1, c0:c1]
                    weighted[:, out[0], out[1]] += p[:, chip[0], chip[1]] * inside
                    weight[out] += blend[chip] * inside
    return weighted, weight


def predict_block(job: BlockJob) -> BlockResult:
    """Predict every chip of one block and blend them over the block's region (:func:`blend_chips`),
    then hand the C heap's free pages back to the system (:func:`trim_heap`).

    The block's pixels are read once; weights are zeroed on invalid pixels, so that ``sum(w) == 0``
    marks nodata in the accumulator.
    """
    with block_slot(job.device):
        result = _predict_block(job)
    trim_heap()
    return result


_BLOCK_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_BLOCK_SLOTS_LOCK = threading.Lock()


def block_slot(device: str) -> contextlib.AbstractContextManager:
    """One of this process's places to predict a block on ``device``: :func:`blocks_at_once` of
    them on a GPU, and on the CPU where the engine takes every thread of the process (whoever runs
    the blocks: Dask's threaded scheduler under :mod:`geoccseg.api` runs one per core); any number
    on the CPU where each block runs on one thread (a Dask worker process, whose nanny sets one
    thread: the worker's threads are its blocks)."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return contextlib.nullcontext()
    with _BLOCK_SLOTS_LOCK:
        return _BLOCK_SLOTS.setdefault(device, threading.BoundedSemaphore(blocks_at_once(device)))


def _predict_block(job: BlockJob) -> BlockResult:
    engine, meta = cached_engine(job.model, job.device, job.engine, job.precision)
    window = job.block.window
    image, valid = read_model_window(job.scene, window, job.scale)
    top, left = int(window.row_off), int(window.col_off)
    chips = [(r - top, c - left, *job.grid.chip_shape(r, c)) for r, c in job.block.chips]
    blend = blend_window(job.grid.tile_px, job.grid.overlap_px)
    weighted, weight = blend_chips(engine, job.norm or meta.norm, image, valid, chips, blend, job.batch_size, len(meta.classes))
    return BlockResult(top, left, weighted, weight)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library is another."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """Return the C heap's free memory to the system (glibc; nothing elsewhere); block tasks call it
    when they end (:func:`predict_block`, :func:`geoccseg.suggest.blocks.score_block`).

    A block allocates and frees a few hundred MB of arrays of many sizes. glibc keeps freed
    memory below its mmap threshold (which rises up to 32 MB as large arrays are freed) in its
    heaps, where fragments of it cannot serve the next block's arrays, so the peak crept up block
    after block (measured on ``geoccseg suggest`` with ONNX Runtime: 1697 MB at 8192 px against
    1507 MB at 2048 px, 1.13x; with a trim after each block 1568 against 1499 MB, 1.05x, and no slower).
    Prediction's blocks creep less: 1440 MB at 16384 px against 1290 MB at 2048 px (1.12x), with the
    trim 1397 against 1273 MB (1.10x), wall time the same within the machine's noise
    (``pipelines/results/predict-cpu/heap-trim/``).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# -- running blocks ----------------------------------------------------------------------------
def _run_local(jobs: Iterable, threads: int, task: Callable = predict_block) -> Iterator:
    """Run ``task(job)`` for each job in a thread pool of this process, yielding results as they complete
    (close it, ``contextlib.closing``, where the consumer may raise: its threads end then, not when
    the generator is collected).

    At most ``threads + 1`` blocks are in flight, so memory stays bounded (the local Dask
    schedulers would only hand results back all at once). ``task`` is :func:`predict_block`, or
    another block task of the same shape (:func:`geoccseg.suggest.blocks.score_block`).
    """
    jobs = iter(jobs)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geoccseg-block")
    try:
        pending = {pool.submit(task, job) for job in islice(jobs, threads + 1)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = next(jobs, None)
                if job is not None:
                    pending.add(pool.submit(task, job))
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(client: distributed.Client, jobs: Iterable, task: Callable = predict_block) -> Iterator:
    """Submit ``task(job)`` to a Dask cluster and yield the results as they complete, keeping two
    blocks queued per worker thread (a block runs on one thread), counted again after every block:
    a ``dask worker`` of one process with all its cores' threads gets work for each, and workers
    that join later get theirs."""
    import distributed
    import distributed.scheduler

    jobs = iter(jobs)
    futures = distributed.as_completed()
    queued = 0

    def fill() -> None:
        nonlocal queued
        for job in islice(jobs, max(0, 2 * max(1, sum(client.nthreads().values())) - queued)):
            futures.add(client.submit(task, job, pure=False))
            queued += 1

    fill()
    for future in futures:
        try:
            result = future.result()
        except distributed.scheduler.KilledWorker:  # was distributed's traceback, after the retries
            raise GeoccsegError("a Dask worker died running one block, each time it was tried (killed for memory? each worker "
                                "holds the model and a block, about 1.5 GB); use fewer --workers, or workers with more memory") from None
        future.release()
        queued -= 1
        fill()
        yield result


WORKER_WAIT_S = 120.0
"""How long prediction waits for a worker of an existing Dask scheduler (``--scheduler``)."""


def _connect(scheduler: str) -> distributed.Client:
    """A client of the Dask scheduler at ``scheduler``.

    Raises:
        GeoccsegError: no scheduler answers there, the address is not one, TLS settings missing.
    """
    import dask
    import distributed
    from distributed import client as dask_clients

    before, clients = copy.deepcopy(dask.config.config), set(dask_clients._global_clients)
    try:
        return distributed.Client(scheduler, timeout=15)
    except BaseException as exc:
        # a Client that fails to start has already made itself dask's default scheduler: every later
        # compute in this process (a notebook's lazy arrays) failed with "no Client active", or hung on it
        dask.config.config.clear()
        dask.config.config.update(before)
        for key in set(dask_clients._global_clients) - clients:
            dask_clients._global_clients.pop(key, None)
        if isinstance(exc, (OSError, TimeoutError)):
            raise GeoccsegError(f"cannot connect to the Dask scheduler at {scheduler} ({exc}); check the address and that it runs") from None
        if isinstance(exc, ValueError):  # an unknown scheme (the dashboard's http://) or port
            raise GeoccsegError(f"--scheduler {scheduler} is not a Dask scheduler address ({exc}); give the scheduler's "
                                "tcp://host:8786 (its dashboard's http:// address is another)") from None
        if isinstance(exc, TypeError) and "TLS" in str(exc):  # distributed's "TLS expects a ssl_context"
            raise GeoccsegError(f"the Dask scheduler at {scheduler} needs TLS settings (distributed.comm.tls.* in the Dask "
                                f"configuration: certificates and keys); {first_line(exc)}") from None
        raise


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None, workdir: str | os.PathLike) -> Iterator[distributed.Client | None]:
    """A Dask client: a new local cluster of ``workers`` single-threaded processes (scratch space in
    ``workdir``), an existing cluster at ``scheduler``, or None (run in this process)."""
    if workers is None and scheduler is None:
        yield None
        return
    import distributed

    if scheduler is not None:
        client = _connect(scheduler)
        with client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except (OSError, TimeoutError):
                raise GeoccsegError(f"the Dask scheduler at {scheduler} has no worker (waited {WORKER_WAIT_S:g} s); start workers "
                                    f"(dask worker {scheduler}) or use --workers N for a local cluster") from None
            yield client
        return
    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.WARNING,
        local_directory=str(workdir),
        # the machine's memory for each worker, not Dask's share of it (the machine's over N), which paused for good a
        # worker whose model and block passed 80 % of it (the run hung); Dask still ends a worker that outgrows the machine
        memory_limit=1.0,
    ) as cluster, distributed.Client(cluster) as client:
        yield client


# -- the outputs -------------------------------------------------------------------------------
def bundle_files(bundle: Bundle | str | os.PathLike) -> list[Path]:
    """The files a bundle is read from (inputs no output may replace)."""
    folder = Path(bundle.path if isinstance(bundle, Bundle) else bundle)
    folder = folder.parent if folder.name == META else folder
    weights = [p for p in folder.iterdir() if is_weights_file(p.name)] if folder.is_dir() else []
    return [*weights, folder / META]


def check_workers_read_the_same_model(bundle: Bundle, options: PredictOptions) -> None:
    """Dask workers (``workers``, ``scheduler``) load the model from the bundle's folder: refuse a
    model in memory that differs from it (weights changed or metadata replaced after loading), which
    the workers would silently not use.

    Raises:
        GeoccsegError: workers requested and the model in memory is not the one in its folder.
    """
    if options.workers is None and options.scheduler is None:
        return
    fix = "save it with geoccseg.io.bundle.save_bundle and predict from that folder, or predict without workers"
    try:
        stored = read_bundle(bundle.path)
    except GeoccsegError as exc:
        raise GeoccsegError(f"Dask workers load the model from {bundle.path}, which cannot be read ({exc}); {fix}") from None
    state = bundle.model.state_dict()
    same = meta_sha256(stored.meta) == meta_sha256(bundle.meta) and state.keys() == stored.state.keys() and all(
        torch.equal(state[k].detach().cpu(), stored.state[k].to(state[k].dtype)) for k in state)
    if not same:
        raise GeoccsegError(f"Dask workers load the model from {bundle.path}, and the model in memory differs from it; {fix}")


def check_prob_out(prob_out: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike]) -> Path:
    """Check the probability COG's path before any work: a writable file (see
    :func:`geoccseg.io.atomic.check_writable`) named ``.tif`` or ``.tiff`` that is none of ``inputs``.

    Raises:
        GeoccsegError: what is wrong with the path.
    """
    prob_out = check_writable(prob_out, overwrite, example="probability.tif")
    check_prob_suffix(prob_out)
    check_not_input(prob_out, inputs)
    return prob_out


# -- the scene ---------------------------------------------------------------------------------
def scene_norm(scene: Scene, meta: BundleMeta) -> NormStats | None:
    """The statistics a scene is normalised with when they are not the bundle's: the scene's own
    percentiles (one Dask pass over its valid pixels) for a per-image model; None otherwise."""
    return compute_stats(scene, meta.norm.percentiles) if meta.norm.per_image else None


def open_scene_for(path: str | os.PathLike, meta: BundleMeta) -> Scene:
    """Open a scene with the input bands a model expects.

    The scene's own input bands (all but alpha) are used when their number matches the model's;
    otherwise the model's band indices are selected when the scene has them.

    Raises:
        GeoccsegError: the scene cannot provide the model's number of bands.
    """
    scene = open_scene(path)
    if len(scene.bands) == len(meta.bands):
        return scene
    if max(meta.bands) <= scene.band_count:
        return open_scene(path, meta.bands)
    raise GeoccsegError(
        f"scene {path} has {len(scene.bands)} input band(s) but the model expects {len(meta.bands)} "
        f"(bands {meta.bands}); give a scene with the bands the model was trained on"
    )


def model_scale(scene: Scene, model_pixel_size_m: float | None) -> float:
    """Scene pixels per model pixel: 1.0 when the model's pixel size is unknown or within 5 % of the scene's.

    Raises:
        GeoccsegError: the scene's pixels are more than ``1 / MIN_SCALE`` times the model's (the model
            would run on a grid that many times larger in each direction, on blurred roads).
    """
    if model_pixel_size_m is None:
        return 1.0
    scale = model_pixel_size_m / scene.pixel_size_m
    if scale < MIN_SCALE:
        raise GeoccsegError(
            f"scene {scene.path} has {scene.pixel_size_m:.3g} m pixels, {1 / scale:.3g} times the model's {model_pixel_size_m:g} m: "
            f"it would predict on a grid {1 / scale**2:.3g} times the scene's, with the roads blurred; give imagery of at most "
            f"{model_pixel_size_m / MIN_SCALE:g} m pixels, or a model trained at this pixel size (geoccseg train --pixel-size-m {scene.pixel_size_m:.3g})"
        )
    return 1.0 if abs(scale - 1.0) <= SCALE_TOLERANCE else scale


def predict_scene(
    scene: str | os.PathLike,
    bundle: Bundle | str | os.PathLike,
    prob_out: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    threshold: float | None = None,
    as_cog: bool = True,
) -> Path:
    """Predict class probabilities over a whole scene and write them as a Cloud-Optimised GeoTIFF
    (or, with ``as_cog=False``, a plain tiled GeoTIFF).

    Args:
        scene: the GeoTIFF scene (any size; read block by block).
        bundle: a loaded :class:`Bundle` or the path of a bundle folder.
        prob_out: the probability COG to write (one band per foreground class, scene grid).
        options: tiling, batching, device, engine and Dask settings; None for :class:`PredictOptions` defaults.
        overwrite: replace an existing ``prob_out``.
        progress: show a progress bar over blocks.
        threshold: the vectoriser's threshold, recorded among the COG's provenance tags
            (:func:`geoccseg.inference.cog.provenance`) when lines are drawn from it.
        as_cog: False: a plain tiled GeoTIFF, uncompressed and without overviews (a temporary
            raster that only the vectoriser reads).

    Returns:
        ``prob_out`` as a Path.

    Raises:
        GeoccsegError: bad options, an output that exists, cannot be written, is not named .tif
            or is one of the inputs, a missing or damaged bundle, a scene without CRS or with bands
            that do not match the model, an engine that cannot run (not installed, the network
            cannot be exported).
    """
    options = options or PredictOptions()
    options.check()
    prob_out = check_prob_out(prob_out, overwrite, [scene, *bundle_files(bundle)])
    if isinstance(bundle, Bundle):
        check_workers_read_the_same_model(bundle, options)
    else:
        bundle = load_bundle(bundle)
    ref = model_ref(bundle)  # the run begins: a folder rewritten from now on is refused by the processes that load it
    on_cluster = options.scheduler is not None  # its workers settle the device and engine (geoccseg.inference.cluster)
    device = None if on_cluster else resolve_device(options.device)
    opened = open_scene_for(scene, bundle.meta)
    scale = model_scale(opened, bundle.meta.pixel_size_m)
    tile_px = options.tile_for(bundle.meta)
    block_px = options.block_px
    grid = ChipGrid.create(math.ceil(opened.height / scale), math.ceil(opened.width / scale), tile_px, options.overlap_px, block_px)
    blocks = grid.blocks()
    engine = None if on_cluster else settle_engine(options.engine, device, bundle.model, bundle.meta, options.precision)  # exported once
    norm = scene_norm(opened, bundle.meta)
    model_transform = opened.transform @ Affine.scale(scale)
    classes, scene_px = len(bundle.meta.classes), opened.height * opened.width
    sums = 4 * (classes + 1) * grid.height_px * grid.width_px  # the blend sums, float32, on the model grid
    staging = (classes * (1 if options.prob_dtype == "uint8" else 4) + 1) * scene_px * (4 / 3 if as_cog else 1)  # with overviews
    warn_if_short_of_space(prob_out, sums + staging * (2 if as_cog else 1), f"predicting {scene}")
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES),
        scratch_dir(prob_out) as workdir,
        Accumulator(workdir / "sums.tif", len(bundle.meta.classes), grid.height_px, grid.width_px, opened.crs, model_transform) as acc,
    ):
        with (
            dask_client(options.workers, options.scheduler, workdir) as client,
            tqdm(total=len(blocks), unit="block", desc="predict", disable=not progress) as bar,
        ):
            if on_cluster:
                settle = lambda device: settle_engine(options.engine, device, bundle.model, bundle.meta, options.precision)  # noqa: E731
                device, engine = settle_on_workers(client, options.device, options.engine, options.precision, settle)
            jobs = (BlockJob(opened, ref, device, grid, block, scale, options.batch_for(tile_px, device), engine, options.precision, norm)
                    for block in blocks)
            if client is None:
                share_bundle(bundle, device, ref)
                results = _run_local(jobs, threads=blocks_at_once(device))
            else:
                results = _run_dask(client, jobs)
            with contextlib.closing(results):  # an error here (a full disk) ends the block threads before the work folder goes
                for result in results:
                    acc.add(result.window, result.weighted, result.weight)
                    bar.update()
        chunk_px = COG_BLOCK_PX * max(1, round(block_px / COG_BLOCK_PX))
        write_probability_cog(acc, opened, scale, prob_out, bundle.meta.classes, workdir, options.prob_dtype, overwrite, chunk_px,
                              tags=provenance(bundle, threshold, engine=engine_label(engine, options.precision), state=ref.state),
                              as_cog=as_cog)
    return prob_out
