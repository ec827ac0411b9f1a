"""int8 for the ``onnx`` engine (``--precision int8``, experimental): the fp32 export, statically quantised.

:func:`quantized_model` takes the network's fp32 export (:func:`geoccseg.inference.export.exported_model`)
and quantises it with ONNX Runtime's static quantisation: QDQ format, int8 weights per output
channel, uint8 activations whose ranges are calibrated (min-max) on :data:`CALIBRATION_CHIPS`
chips of :data:`CALIBRATION_TILE_PX` pixels from the shipped sample scene
(:func:`geoccseg.io.catalog.sample_scene`, the SpaceNet Las Vegas chip, read at the model's pixel
size where that is coarser, normalised with the bundle's statistics), so that the same bundle
always gives the same int8 model. It is cached like the fp32 export, under its own key
(:func:`geoccseg.inference.export.export_key` with precision ``int8`` and the calibration). Unlike
the fp32 export it is not checked against PyTorch: quantisation changes the probabilities, by how
much is for the benchmark to measure.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from rasterio.enums import Resampling

from geoccseg.errors import GeoccsegError, first_line
from geoccseg.inference.export import INPUT, cached, export_key, exported_model
from geoccseg.io.bundle import BundleMeta
from geoccseg.io.catalog import sample_scene
from geoccseg.io.scene import open_scene

CALIBRATION = "geoccseg-sample/minmax/4x256"
"""Identifies the calibration (images, method, chips); part of the int8 cache key."""

CALIBRATION_TILE_PX = 256
"""Edge of the calibration chips, pixels."""

CALIBRATION_CHIPS = 4
"""Number of calibration chips (a 2 x 2 grid at the centre of the sample)."""


#: Weights quantised to 7 of their 8 bits (see :func:`quantize_int8`); part of the cache key.
REDUCE_RANGE = True


def calibration_record(meta: BundleMeta) -> dict:
    """What the int8 model of a bundle is calibrated on, for its cache key."""
    return {"images": CALIBRATION, "bands": meta.bands, "norm": meta.norm.to_dict(), "pixel_size_m": meta.pixel_size_m,
            "reduce_range": REDUCE_RANGE}


def calibration_chips(meta: BundleMeta) -> list[np.ndarray]:
    """float32 (1, C, 256, 256) normalised chips of the sample scene, in the model's bands.

    Raises:
        GeoccsegError: the model needs bands the sample (RGB) does not have.
    """
    if max(meta.bands) > 3:
        raise GeoccsegError(
            f"--precision int8 calibrates on the shipped RGB sample, but the model reads bands {meta.bands}; use --precision fp32"
        )
    scene = open_scene(sample_scene(), meta.bands)
    scale = 1.0 if meta.pixel_size_m is None else max(1.0, meta.pixel_size_m / scene.pixel_size_m)
    shape = (max(CALIBRATION_TILE_PX, round(scene.height / scale)), max(CALIBRATION_TILE_PX, round(scene.width / scale)))
    image, valid = scene.read(out_shape=shape, resampling=Resampling.average)
    x = meta.norm.for_image(image).apply(image).astype(np.float32) * valid[None]
    height, width = x.shape[1:]
    tops = sorted({max(0, min(height - CALIBRATION_TILE_PX, height // 2 - CALIBRATION_TILE_PX + i * CALIBRATION_TILE_PX)) for i in (0, 1)})
    lefts = sorted({max(0, min(width - CALIBRATION_TILE_PX, width // 2 - CALIBRATION_TILE_PX + j * CALIBRATION_TILE_PX)) for j in (0, 1)})
    return [np.ascontiguousarray(x[None, :, r:r + CALIBRATION_TILE_PX, c:c + CALIBRATION_TILE_PX]) for r in tops for c in lefts]


def quantized_model(model: torch.nn.Module, meta: BundleMeta, key: str | None = None) -> bytes:
    """The int8 ONNX model of ``model``, from the cache when a valid one is there, else quantised now and cached.

    Args:
        model: the network (on the CPU, eval mode).
        meta: the bundle's metadata (bands, normalisation, pixel size: the calibration images).
        key: :func:`int8_key` of the model when the caller has it already.

    Raises:
        GeoccsegError: the fp32 export fails, or the model's bands are not the sample's.
    """
    in_channels = len(meta.bands)
    return cached(key or int8_key(model, meta),
                  lambda: quantize_int8(exported_model(model, in_channels), calibration_chips(meta)))


def int8_key(model: torch.nn.Module, meta: BundleMeta) -> str:
    """The cache key of a bundle's int8 model."""
    return export_key(model, len(meta.bands), "int8", calibration_record(meta))


def quantize_int8(fp32: bytes, chips: list[np.ndarray]) -> bytes:
    """Statically quantise an fp32 ONNX model (QDQ, per-channel int8 weights, uint8 activations,
    min-max calibration on ``chips``).

    Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without AVX-512 VNNI, ONNX
    Runtime's uint8 x int8 kernels can saturate with full-range weights (measured on a 2-core AMD
    EPYC: the sample's probabilities off by 5.2/255 on average, against under 4 where VNNI exists).
    """
    from geoccseg.inference.runtimes import import_onnxruntime

    import_onnxruntime()  # first, with its telemetry off
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.chips = iter(chips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            chip = next(self.chips, None)
            return None if chip is None else {INPUT: chip}

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # ONNX Runtime's quantiser logs its advice through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="geoccseg-int8-") as tmp:
            folder = Path(tmp)
            (folder / "fp32.onnx").write_bytes(fp32)
            quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"), skip_symbolic_shape=True)
            quantize_static(
                str(folder / "pre.onnx"), str(folder / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                reduce_range=REDUCE_RANGE,
            )
            return (folder / "int8.onnx").read_bytes()
    except Exception as exc:  # noqa: BLE001 - any quantiser failure becomes one line
        raise GeoccsegError(f"cannot quantise the network to int8 ({first_line(exc)}); use --precision fp32") from None
    finally:
        logging.disable(previous)
