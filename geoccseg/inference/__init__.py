"""Scene-scale prediction: the global chip grid and its blending, block-wise prediction with Dask,
the probability COG, and the pipeline from a scene to GIS lines.

- :mod:`~geoccseg.inference.blend`: the chip grid of a scene and the blend weights;
- :mod:`~geoccseg.inference.predict`: block tasks, their scheduling and :func:`predict_scene`;
- :mod:`~geoccseg.inference.engine`: the inference engines (PyTorch, ONNX Runtime), normalised
  chips to probabilities, which every prediction runs;
- :mod:`~geoccseg.inference.export`: the network exported to ONNX once per set of weights, cached;
- :mod:`~geoccseg.inference.cog`: the on-disk accumulator and the probability COG;
- :mod:`~geoccseg.inference.pipeline`: :func:`run_predict`, scene to probability COG to lines;
- :mod:`~geoccseg.inference.array`: one in-memory image (benchmark scoring, notebooks);
- :mod:`~geoccseg.inference.photos`: :func:`predict_photos`, photos to probability images, crack
  measurements and a summary (:mod:`~geoccseg.inference.photo_outputs` writes them).

The names below are imported on first use (:mod:`geoccseg.lazy_exports`): ``geoccseg.inference.choices``
(the values ``predict --help`` shows) loads no PyTorch.
"""

from __future__ import annotations

from geoccseg.lazy_exports import lazy_exports

_WHERE = {
    "ChipGrid": "geoccseg.inference.blend", "blend_window": "geoccseg.inference.blend",
    "PhotoRunResult": "geoccseg.inference.photos", "predict_photos": "geoccseg.inference.photos",
    "PredictResult": "geoccseg.inference.pipeline", "run_predict": "geoccseg.inference.pipeline",
    "PredictOptions": "geoccseg.inference.predict", "predict_scene": "geoccseg.inference.predict",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
