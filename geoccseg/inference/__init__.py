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
"""

from geoccseg.inference.blend import ChipGrid, blend_window
from geoccseg.inference.photos import PhotoRunResult, predict_photos
from geoccseg.inference.pipeline import PredictResult, run_predict
from geoccseg.inference.predict import PredictOptions, predict_scene

__all__ = [
    "ChipGrid", "PhotoRunResult", "PredictOptions", "PredictResult", "blend_window", "predict_photos", "predict_scene",
    "run_predict",
]
