"""Per-pixel terms of the acquisition score: what a label at each pixel could teach the model.

One forward pass of the teacher (the bundle's network) gives the class probabilities p and the
projection head's embeddings; a second pass on the chip turned by 180 degrees (both axes
flipped), turned back, gives p_flip. A bundle keeps only the EMA teacher, so test-time
augmentation stands in for the teacher-student disagreement of training. Both are blended over
the chip grid by :func:`geoccseg.inference.predict.blend_chips`, the one forward path of
prediction, with the engine of :func:`scoring_engine`: on the CPU the network's ``scoring`` ONNX
export in ONNX Runtime (:class:`OnnxScoringEngine`), else (CUDA, ``--engine torch``, or a network
that cannot be exported) PyTorch with :func:`scoring_forward`; both give the same values (within
ONNX Runtime's rounding), and p is what ``geoccseg predict`` writes with the same chips (scoring's
default chips are smaller, :data:`~geoccseg.inference.predict.MIN_TILE_PX`).

From the blended values, per valid pixel (:func:`cell_features`):

* ``low_confidence``: 1 where the pixel is not of high confidence (the method's levels and the
  bundle's thresholds, :func:`geoccseg.inference.confidence.confidence_map`) and lies within
  ``near_px`` of a likely road or crack (a foreground probability >= ``likely_threshold``);
* ``disagreement``: max over the foreground classes of |p - p_flip|;
* ``density``: the foreground probability mass, sum of p (how much road or crack there is);
* the embedding, projected to :data:`EMBED_DIMS` channels by a fixed random projection (for the
  diversity of the selection, :mod:`geoccseg.suggest.select`).

:func:`cell_features` adds them up over cells of whole pixels; the scores of squares and photos
are sums of cells divided by their valid pixels.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from geoccseg.inference.confidence import HIGH, ConfidenceThresholds, confidence_map
from geoccseg.errors import GeoccsegError
from geoccseg.inference.engine import Engine, TorchEngine, autocast, for_inference, keep_engine, onnx_session, resolve_engine
from geoccseg.io.bundle import BundleMeta
from geoccseg.models import FusionSegNet

log = logging.getLogger(__name__)

EMBED_DIMS = 8
"""Channels the embeddings are projected to before blending (memory: 2 C + 8 channels per pixel)."""

FEATURES = ("valid", "low_confidence", "disagreement", "density")
"""Leading channels of :func:`cell_features`; the :data:`EMBED_DIMS` embedding channels follow."""


@dataclass(frozen=True)
class TermParams:
    """Settings of the per-pixel terms.

    Attributes:
        likely_threshold: foreground probability from which a pixel is a likely road or crack.
        near_px: low-confidence pixels count within this distance of a likely one, in model pixels.
    """

    likely_threshold: float = 0.3
    near_px: int = 8


def n_channels(n_classes: int) -> int:
    """Channels :func:`scoring_forward` returns for a model of ``n_classes`` foreground classes."""
    return 2 * n_classes + EMBED_DIMS


@functools.cache
def projection(dims: int) -> torch.Tensor:
    """Fixed random projection (dims, :data:`EMBED_DIMS`) of embeddings, the same in every process
    (seeded), columns of unit norm (distances are kept up to a factor, Johnson-Lindenstrauss)."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(dims, EMBED_DIMS, generator=generator, dtype=torch.float32)
    return matrix / matrix.norm(dim=0, keepdim=True)


def scoring_forward(model: torch.nn.Module, chips: torch.Tensor, device: str) -> torch.Tensor:
    """Probabilities, flipped-view probabilities and projected embeddings of a batch of chips.

    The ``forward`` of the :class:`~geoccseg.inference.engine.TorchEngine` that
    :func:`geoccseg.inference.predict.blend_chips` runs for scoring.

    Args:
        model: the bundle's network (``forward`` returns ``logits`` and ``embed``; a network with
            only ``forward_logits`` gives zero embeddings).
        chips: normalised images (B, C_in, H, W), float32.
        device: torch device string; CUDA runs under autocast.

    Returns:
        float32 (B, 2 K + :data:`EMBED_DIMS`, H, W) on ``device``: p of the K foreground classes,
        p of the flipped view (turned back), the projected embedding (nearest-upsampled from stride 4).
    """
    with torch.inference_mode():
        x = chips.to(device, non_blocking=True)
        height, width = x.shape[-2:]
        with autocast(device):
            out = model(x) if isinstance(model, FusionSegNet) else {"logits": model.forward_logits(x)}
            flipped = model.forward_logits(x.flip(-2, -1)).flip(-2, -1)
        p = out["logits"].float().softmax(dim=1)[:, 1:]
        p_flip = flipped.float().softmax(dim=1)[:, 1:]
        if "embed" in out:
            embed = project_embeddings(out["embed"], height, width)
        else:
            embed = torch.zeros((x.shape[0], EMBED_DIMS, height, width), device=x.device)
        return torch.cat([p, p_flip, embed], dim=1)


def project_embeddings(embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Stride-4 embeddings (B, D, h, w) projected to :data:`EMBED_DIMS` channels (:func:`projection`)
    and nearest-upsampled to (B, EMBED_DIMS, height, width)."""
    embed = torch.einsum("bdhw,de->behw", embed.float(), projection(embed.shape[1]).to(embed.device))
    return F.interpolate(embed, scale_factor=4, mode="nearest")[..., :height, :width]


class OnnxScoringEngine(Engine):
    """:func:`scoring_forward` with the network's ``scoring`` ONNX export in ONNX Runtime on the CPU.

    Each chip is run as the PyTorch network runs it: padded to a multiple of the output stride
    (:func:`geoccseg.models.network.pad_to_multiple`), and its flipped view flipped *before* it is
    padded, so chips cut at a scene's edge see the same context as in :func:`scoring_forward`.

    Args:
        model_bytes: the ``scoring`` export (:func:`geoccseg.inference.export.exported_model`).
        threads: ONNX Runtime intra-op threads (inter-op: 1).
    """

    name = "onnx"

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        from geoccseg.inference.export import EMBEDDING, INPUT, OUTPUT

        self.session = onnx_session(model_bytes, threads)
        self.device = "cpu"
        self._input, self._outputs = INPUT, (OUTPUT, EMBEDDING)

    def _run(self, chips: torch.Tensor, outputs: tuple[str, ...]) -> list[torch.Tensor]:
        from geoccseg.models.network import pad_to_multiple

        height, width = chips.shape[-2:]
        padded = pad_to_multiple(chips).contiguous().numpy()
        got = self.session.run(list(outputs), {self._input: padded})
        return [torch.from_numpy(got[0][..., :height, :width].copy()), *[torch.from_numpy(g) for g in got[1:]]]

    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            x = torch.as_tensor(chips).to("cpu", torch.float32)
            height, width = x.shape[-2:]
            p, embed = self._run(x, self._outputs)
            (p_flip,) = self._run(x.flip(-2, -1), self._outputs[:1])
            return torch.cat([p, p_flip.flip(-2, -1), project_embeddings(embed, height, width)], dim=1)


def scoring_engine(engine: str, model: torch.nn.Module, device: str, meta: BundleMeta, precision: str = "fp32") -> Engine:
    """The engine of the acquisition terms (``(B, 2 K + EMBED_DIMS, H, W)`` per batch, as :func:`scoring_forward`),
    with :func:`geoccseg.inference.engine.build_engine`'s arguments (``precision`` is not used: scoring runs fp32).

    Where ``engine`` resolves to ``onnx`` (``auto`` on the CPU, :func:`geoccseg.inference.engine.resolve_engine`)
    and the network has embeddings (:class:`~geoccseg.models.FusionSegNet`), the network's ``scoring``
    export in ONNX Runtime, exported once per set of weights (cached like prediction's) and kept
    for the process; where it cannot be exported, PyTorch, with a one-line warning. Otherwise
    (CUDA, ``torch``, ``openvino``: scoring has no OpenVINO path) PyTorch on ``device``.

    Raises:
        GeoccsegError: an unknown engine, ``onnx`` on CUDA or without ONNX Runtime.
    """
    if not _scores_with_onnx(engine, model, device):
        return TorchEngine(for_inference(model, device), device, scoring_forward)
    from geoccseg.inference.export import export_key, exported_model

    model = for_inference(model, "cpu")
    threads = torch.get_num_threads()
    try:
        key = export_key(model, len(meta.bands), graph="scoring")
        make = lambda: OnnxScoringEngine(exported_model(model, len(meta.bands), key, graph="scoring"), threads)  # noqa: E731
        return keep_engine(("onnx", "scoring", key, threads), make)
    except GeoccsegError as exc:
        log.warning("geoccseg: warning: scoring with the torch engine (%s)", str(exc).removesuffix("; use --engine torch"))
        return TorchEngine(model, device, scoring_forward)


def settle_scoring(engine: str, model: torch.nn.Module, device: str, meta: BundleMeta) -> str:
    """The name of the engine :func:`scoring_engine` gives (``onnx`` or ``torch``), for block tasks
    to build in their own process; the ONNX export is made (or read from the cache) now, once, and
    a network that cannot be exported falls back to ``torch`` here, with its warning. Nothing is
    moved to ``device``."""
    return scoring_engine(engine, model, device, meta).name if _scores_with_onnx(engine, model, device) else "torch"


def _scores_with_onnx(engine: str, model: torch.nn.Module, device: str) -> bool:
    """Whether scoring is to run the network's ONNX export: ``engine`` resolves to ``onnx`` and the
    network has embeddings (a :class:`~geoccseg.models.FusionSegNet`).

    Raises:
        GeoccsegError: as :func:`geoccseg.inference.engine.resolve_engine`.
    """
    return resolve_engine(engine, device) == "onnx" and isinstance(model, FusionSegNet)


#: Radius (pixels) up to which :func:`near_likely` dilates by a disk; above, it thresholds the
#: Euclidean distance transform (same pixels; time independent of the radius, about 33 bytes per
#: pixel of the region while it runs, where the dilation holds a few bytes).
DILATE_UP_TO_PX = 8


def near_likely(likely: np.ndarray, near_px: int) -> np.ndarray:
    """The pixels within ``near_px`` (Euclidean, in pixels) of a likely one: the dilation of
    ``likely`` by a disk of that radius. The dilation's time grows with the disk's area (a
    radius of 160 pixels, 8 m at 5 cm, took minutes a block; a 0.5 mm crack model's 16,000 pixels
    built a 16 GB disk), so a radius above :data:`DILATE_UP_TO_PX` takes the distance transform."""
    if near_px <= 0 or not likely.any():
        return likely
    if near_px <= DILATE_UP_TO_PX:
        return ndimage.binary_dilation(likely, structure=_disk(near_px))
    return ndimage.distance_transform_edt(~likely) <= near_px


@functools.cache
def _disk(radius_px: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius_px:radius_px + 1, -radius_px:radius_px + 1]
    return xx**2 + yy**2 <= radius_px**2


def cell_features(
    weighted: np.ndarray, weight: np.ndarray, n_classes: int, thresholds: ConfidenceThresholds, params: TermParams,
    cell_px: tuple[int, int], window: tuple[slice, slice] | None = None, offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Sums over cells of the per-pixel terms of blended :func:`scoring_forward` values.

    Memory: ``weighted`` is divided by ``weight`` in place (the caller's blend sums are consumed),
    only the likely-road mask covers the whole region (its neighbourhood reaches into the halo),
    and the terms are summed one plane at a time on ``window`` alone: beside the blend sums, a
    scene block holds a few planes of its cells, not a copy of every term.

    Args:
        weighted: float32 (2 K + E, h, w) blend sums of :func:`scoring_forward`'s channels;
            overwritten with the blended values.
        weight: float32 (h, w) sum of blend weights; 0 where there is no valid pixel.
        n_classes: K, the foreground classes.
        thresholds: the model's confidence thresholds.
        params: likely-road threshold and neighbourhood.
        cell_px: (height, width) of a cell in pixels (a photo is one cell of its own size).
        window: (rows, cols) slices of the region to sum over; None: all of it.
        offset: (row, column) of the window's first pixel inside its cell; where a scene block cuts
            cells larger than itself, it holds parts of cells (:func:`cell_sums`).

    Returns:
        float64 (4 + E, cell rows, cell columns) over the cells the window reaches: :data:`FEATURES`
        then the embedding, each summed over the valid pixels of a cell (invalid pixels add 0).
    """
    valid = weight > 0
    np.divide(weighted, weight, out=weighted, where=valid)
    weighted[:, ~valid] = 0.0
    p = weighted[:n_classes]
    likely = valid & (p.max(axis=0) >= params.likely_threshold)
    near = near_likely(likely, params.near_px)
    rows, cols = window if window is not None else (slice(None), slice(None))
    valid, near, values = valid[rows, cols], near[rows, cols], weighted[:, rows, cols]
    p, p_flip = values[:n_classes], values[n_classes:2 * n_classes]
    _, level = confidence_map(np.where(valid, p, np.nan), thresholds)
    planes = (valid, valid & near & (level != HIGH), np.abs(p - p_flip).max(axis=0), p.sum(axis=0), *values[2 * n_classes:])
    return np.stack([cell_sums(plane, *cell_px, offset) for plane in planes])  # embeddings are already 0 where not valid


def cell_sums(plane: np.ndarray, cell_h_px: int, cell_w_px: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Sums of a plane over cells of ``cell_h_px x cell_w_px`` pixels.

    Args:
        plane: (h, w) pixels (a view is not copied).
        cell_h_px: cell height.
        cell_w_px: cell width.
        offset: (row, column) of the plane's first pixel inside its cell; the first and last row
            and column of cells may be parts of cells, whose sums the caller adds to the rest.

    Returns:
        float64 (cell rows, cell columns) that the plane reaches.
    """
    h, w = plane.shape
    if offset == (0, 0) and h % cell_h_px == 0 and w % cell_w_px == 0:  # whole cells
        return plane.reshape(h // cell_h_px, cell_h_px, w // cell_w_px, cell_w_px).sum(axis=(1, 3), dtype=np.float64)
    rows = np.r_[0, np.arange(cell_h_px - offset[0], h, cell_h_px)]  # where each cell's part starts
    cols = np.r_[0, np.arange(cell_w_px - offset[1], w, cell_w_px)]
    return np.add.reduceat(np.add.reduceat(plane, rows, axis=0, dtype=np.float64), cols, axis=1)
