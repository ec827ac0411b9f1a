"""Semi-supervised training: ``train(TrainConfig(...))`` writes a model bundle.

The names below are imported on first use (:mod:`geoccseg.lazy_exports`): ``geoccseg.train.config``
alone loads neither PyTorch nor Lightning.
"""

from __future__ import annotations

from geoccseg.lazy_exports import lazy_exports

_WHERE = {"TrainConfig": "geoccseg.train.config", "TrainResult": "geoccseg.train.run", "build_data": "geoccseg.train.run",
          "train": "geoccseg.train.run"}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
