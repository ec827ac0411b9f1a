"""``geoccseg demo``: the tool's workflow on the shipped sample scene, in one command on a CPU.

(a) The shipped road model maps the SpaceNet Las Vegas sample (resampled to the model's 1 m pixels
and back): probability COG and road lines. (b) "Label a strip": the sample's truth centrelines in its
western 40 % are the labels of a labeled area (AOI), the road model is fine-tuned on them with the
method, and the fine-tuned model maps the rest. Both are scored on the unlabeled eastern 60 %
(:mod:`geoccseg.evaluate.strip`, as ``pipelines/benchmark_own_scene.py`` does), and ``preview.png``
shows them side by side. ``quick`` runs (a) alone. It is the first command a newcomer runs.

The settings (:mod:`geoccseg.demo.settings`) load with the package, the rest on first use
(:mod:`geoccseg.lazy_exports`): ``geoccseg demo --help`` shows the settings without loading PyTorch.
"""

from __future__ import annotations

from geoccseg.demo.settings import BUFFER_M, FINE_TUNE, LABELED_FRACTION, STEPS
from geoccseg.lazy_exports import lazy_exports

_RUN = ("DemoResult", "StripResult", "fine_tune_options", "render_preview", "run_demo", "strip_config", "write_strip")
_WHERE = {**dict.fromkeys(_RUN, "geoccseg.demo.run"), "sample_roads": "geoccseg.io.catalog", "sample_scene": "geoccseg.io.catalog"}
__all__ = ["BUFFER_M", "FINE_TUNE", "LABELED_FRACTION", "STEPS", "DemoResult", "StripResult", "fine_tune_options",
           "render_preview", "run_demo", "sample_roads", "sample_scene", "strip_config", "write_strip"]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
