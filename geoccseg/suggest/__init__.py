"""Where to label next: rank areas of scenes, or photos, by what their labels would teach the model.

- :mod:`~geoccseg.suggest.terms`: per-pixel terms (low confidence near likely roads/cracks,
  flip disagreement, density, embeddings) through the forward path of prediction;
- :mod:`~geoccseg.suggest.blocks`: a scene scored block by block into sums over cells (Dask);
- :mod:`~geoccseg.suggest.select`: the acquisition score and the greedy, diverse choice, the
  coverage choice by embedding clusters, and the random baseline;
- :mod:`~geoccseg.suggest.areas`: :func:`suggest_areas`, squares of scenes to a GIS file;
- :mod:`~geoccseg.suggest.photos`: :func:`suggest_photos`, photos to a CSV ranking.
"""

from geoccseg.suggest.areas import SuggestResult, default_size_m, suggest_areas
from geoccseg.suggest.photos import PhotoSuggestResult, suggest_photos
from geoccseg.suggest.select import PARTS, STRATEGIES, SuggestParams

__all__ = ["PARTS", "STRATEGIES", "PhotoSuggestResult", "SuggestParams", "SuggestResult", "default_size_m", "suggest_areas", "suggest_photos"]
