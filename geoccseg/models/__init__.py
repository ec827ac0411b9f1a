"""Networks of the method: a multi-stage encoder, a fusion decoder and segmentation/projection heads.

The names below are imported on first use (:mod:`geoccseg.lazy_exports`): ``geoccseg.models.config``
alone loads no PyTorch.
"""

from __future__ import annotations

from geoccseg.lazy_exports import lazy_exports

_WHERE = {
    "Bundle": "geoccseg.models.bundle", "from_bundle": "geoccseg.models.bundle", "load_bundle": "geoccseg.models.bundle",
    "ModelConfig": "geoccseg.models.config",
    "FusionSegNet": "geoccseg.models.network", "build_model": "geoccseg.models.network", "count_parameters": "geoccseg.models.network",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
