"""Prediction on one in-memory image (photos, notebook cells, benchmark evaluation).

Scenes go through :func:`geoccseg.inference.predict.predict_scene` (block-wise, any size); this is
the path for an image that fits in memory. Both run the same code: the chip grid and blend
weights of :mod:`geoccseg.inference.blend`, the device and engine choice of
:func:`~geoccseg.inference.predict.resolve_device` and
:func:`~geoccseg.inference.engine.settle_engine`, and
:func:`~geoccseg.inference.predict.blend_chips` (normalisation with the bundle's statistics,
batched forward passes of the engine, blending).
"""

from __future__ import annotations

import operator

import numpy as np

from geoccseg.errors import GeoccsegError
from geoccseg.inference.blend import ChipGrid, blend_window
from geoccseg.inference.engine import ready_engine
from geoccseg.inference.choices import DEFAULT_OVERLAP_PX
from geoccseg.inference.predict import blend_chips, resolve_device
from geoccseg.models import Bundle


def predict_array(
    bundle: Bundle,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    device: str = "auto",
    tile_px: int | None = None,
    overlap_px: int = DEFAULT_OVERLAP_PX,
    batch_size: int = 4,
    engine: str = "auto",
    precision: str = "fp32",
) -> np.ndarray:
    """Class probabilities of one image.

    Args:
        bundle: a loaded model bundle (:func:`geoccseg.models.load_bundle`); its model is moved
            to ``device`` (to the CPU for the ``onnx`` engine).
        image: (C, H, W) array in file units (e.g. uint8 photo bands).
        valid: (H, W) bool, the valid pixels (NaN in the result elsewhere); None: every pixel.
        device: ``auto``, ``cpu`` or ``cuda`` (mixed precision on CUDA), as ``geoccseg predict``.
        tile_px: chip edge in pixels, blended over ``overlap_px`` as ``geoccseg predict`` does;
            None: the whole image is one chip (the network sees all of it at once).
        overlap_px: overlap of neighbouring chips in pixels (with ``tile_px``).
        batch_size: chips per forward pass.
        engine: ``auto``, ``torch``, ``onnx`` or ``openvino`` (:func:`~geoccseg.inference.engine.settle_engine`),
            as ``geoccseg predict``.
        precision: ``fp32``, ``bf16`` (openvino or torch engine) or ``int8`` (onnx engine), on the CPU (experimental).

    Returns:
        (K, H, W) float32 probabilities (class 0 = background, 1 minus the foreground classes), NaN
        where ``valid`` is False.

    Raises:
        GeoccsegError: an unknown or unavailable device or engine, a bad tile, overlap or batch
            size, an image that is not (C, H, W), or one whose bands do not match the bundle's
            normalisation.
    """
    if getattr(image, "ndim", None) != 3 or 0 in image.shape:
        shape = getattr(image, "shape", type(image).__name__)
        raise GeoccsegError(f"the image must be a (bands, height, width) array, got shape {shape}; "
                            "add a band axis to a single-band image (image[None])")
    try:
        batch_size = operator.index(batch_size)  # numpy integers too
    except TypeError:
        batch_size = 0
    if isinstance(batch_size, bool) or batch_size < 1:
        raise GeoccsegError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = resolve_device(device)
    built = ready_engine(engine, device, bundle.model, bundle.meta, precision)
    height, width = image.shape[1:]
    if tile_px is None:
        tile_px, overlap_px = max(height, width), 0
    grid = ChipGrid.create(height, width, tile_px, overlap_px, block_px=max(height, width, tile_px))
    chips = [(r, c, *grid.chip_shape(r, c)) for block in grid.blocks() for r, c in block.chips]
    weighted, weight = blend_chips(
        built, bundle.meta.norm.for_image(image, valid), image, valid, chips,
        blend_window(tile_px, overlap_px), batch_size, len(bundle.meta.classes),
    )
    foreground = np.divide(weighted, weight, out=np.full_like(weighted, np.nan), where=weight > 0)
    background = np.clip(1.0 - foreground.sum(0, keepdims=True), 0.0, 1.0)  # NaN stays NaN
    return np.concatenate([background, foreground]).astype(np.float32)
