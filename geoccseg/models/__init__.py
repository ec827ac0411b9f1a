"""Networks of the method: a multi-stage encoder, a fusion decoder and segmentation/projection heads."""

from __future__ import annotations

from geoccseg.models.bundle import Bundle, from_bundle, load_bundle
from geoccseg.models.config import ModelConfig
from geoccseg.models.network import FusionSegNet, build_model, count_parameters

__all__ = ["Bundle", "FusionSegNet", "ModelConfig", "build_model", "count_parameters", "from_bundle", "load_bundle"]
