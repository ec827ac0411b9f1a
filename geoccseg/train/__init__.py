"""Semi-supervised training: ``train(TrainConfig(...))`` writes a model bundle."""

from __future__ import annotations

from geoccseg.train.config import TrainConfig
from geoccseg.train.run import TrainResult, build_data, train

__all__ = ["TrainConfig", "TrainResult", "build_data", "train"]
