"""Where to label next: rank areas of scenes, or photos, by what their labels would teach the model.

- :mod:`~geoccseg.suggest.terms`: per-pixel terms (low confidence near likely roads/cracks,
  flip disagreement, density, embeddings) through the forward path of prediction;
- :mod:`~geoccseg.suggest.blocks`: a scene scored block by block into sums over cells (Dask);
- :mod:`~geoccseg.suggest.select`: the acquisition score and the greedy, diverse choice, the
  coverage choice by embedding clusters, and the random baseline;
- :mod:`~geoccseg.suggest.areas`: :func:`suggest_areas`, squares of scenes to a GIS file;
- :mod:`~geoccseg.suggest.photos`: :func:`suggest_photos`, photos to a CSV ranking.

The names below are imported on first use (:mod:`geoccseg.lazy_exports`): ``geoccseg.suggest.select``
alone loads no PyTorch.
"""

from __future__ import annotations

from geoccseg.lazy_exports import lazy_exports

_WHERE = {
    "SuggestResult": "geoccseg.suggest.areas", "default_size_m": "geoccseg.suggest.areas", "suggest_areas": "geoccseg.suggest.areas",
    "PhotoSuggestResult": "geoccseg.suggest.photos", "suggest_photos": "geoccseg.suggest.photos",
    "PARTS": "geoccseg.suggest.select", "STRATEGIES": "geoccseg.suggest.select", "SuggestParams": "geoccseg.suggest.select",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
