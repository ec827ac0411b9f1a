"""Networks of the method: a multi-stage encoder, a fusion decoder and segmentation/projection heads."""

from __future__ import annotations

from geoccseg.models.config import ModelConfig
from geoccseg.models.network import FusionSegNet, build_model, count_parameters

__all__ = ["FusionSegNet", "ModelConfig", "build_model", "count_parameters"]
