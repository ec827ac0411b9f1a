"""geoccseg: roads and cracks from imagery with very few labels.

The package follows the data flow: ``io`` reads scenes, labels and areas of interest;
``data`` samples chips; ``models`` and ``losses`` hold the method; ``train`` fits it;
``inference`` predicts whole scenes block by block; ``vectorize`` turns probabilities into
polylines; ``evaluate`` scores them. The CLI in ``cli`` is a thin layer over these.

The top-level API, for notebooks and scripts (:mod:`geoccseg.api`):

- ``geoccseg.predict(scene, model=None, ...)`` -> lazy :class:`xarray.DataArray` of probabilities
  (dims ``class``, ``y``, ``x``; CRS and transform through ``.rio``; NaN nodata);
- ``geoccseg.vectorize(prob)`` -> ``{class: GeoDataFrame}`` of lines, from that array or a GeoTIFF;
- ``geoccseg.train(geoccseg.train.TrainConfig(...))`` -> ``TrainResult`` (writes a model bundle);
- ``geoccseg.evaluate(pred, truth, ...)`` -> ``EvaluationResult``.

``import geoccseg`` imports none of them (nor torch): each is imported on first use. ``vectorize``,
``train`` and ``evaluate`` are also the subpackages of those steps (``geoccseg.train.TrainConfig``,
``geoccseg.vectorize.VectorizeParams``), so these three subpackages are callable: calling one
calls its step's function.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "predict", "train", "vectorize"]

#: Callable subpackages: name -> (module, function) that calling ``geoccseg.<name>(...)`` runs.
_CALLS = {
    "vectorize": ("geoccseg.api", "vectorize"),
    "train": ("geoccseg.train.run", "train"),
    "evaluate": ("geoccseg.evaluate.report", "evaluate"),
}


class _CallablePackage(types.ModuleType):
    """A subpackage that is also the top-level API function of the same name."""

    def __call__(self, *args, **kwargs):
        module, function = _CALLS[self.__name__.rpartition(".")[2]]
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``geoccseg`` package: makes the subpackages of :data:`_CALLS` callable as they are imported."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _CALLS and type(value) is types.ModuleType:
            value.__class__ = _CallablePackage
        super().__setattr__(name, value)


def __getattr__(name: str) -> object:
    """The API on first use: ``predict`` from :mod:`geoccseg.api`, the callable subpackages."""
    if name == "predict":
        from geoccseg.api import predict

        return predict
    if name in _CALLS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
