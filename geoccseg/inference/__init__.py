"""Scene-scale prediction: the global chip grid and its blending, block-wise prediction with Dask,
the probability COG, and the pipeline from a scene to GIS lines.

- :mod:`~geoccseg.inference.blend`: the chip grid of a scene and the blend weights;
- :mod:`~geoccseg.inference.predict`: block tasks, their scheduling and :func:`predict_scene`;
- :mod:`~geoccseg.inference.cog`: the on-disk accumulator and the probability COG;
- :mod:`~geoccseg.inference.pipeline`: :func:`run_predict`, scene to probability COG to lines;
- :mod:`~geoccseg.inference.array`: one in-memory image (photos).
"""

from geoccseg.inference.blend import ChipGrid, blend_window
from geoccseg.inference.pipeline import PredictResult, run_predict
from geoccseg.inference.predict import PredictOptions, predict_scene

__all__ = ["ChipGrid", "PredictOptions", "PredictResult", "blend_window", "predict_scene", "run_predict"]
