"""The values of ``geoccseg predict`` and ``suggest`` options that their ``--help`` shows: engines,
precisions, probability types, the chip overlap and the overlay limit. Kept here, without PyTorch, so that ``--help``
starts at once; the modules that use them (:mod:`~geoccseg.inference.engine`,
:mod:`~geoccseg.inference.predict`, :mod:`~geoccseg.inference.photos`, :mod:`~geoccseg.inference.cog`)
import them from here."""

from __future__ import annotations

ENGINES = ("auto", "torch", "onnx", "openvino")
"""Names of the engines ``--engine`` accepts."""

PRECISIONS = ("fp32", "bf16", "int8")
"""Precisions ``--precision`` accepts (on the CPU): fp32, bf16 (openvino or torch engine), int8 (onnx engine)."""

PROB_DTYPES = ("uint8", "float32")
"""Sample types of the probability COG."""

PROB_DTYPE_ALIASES = {"float16": "float32"}
"""Other accepted names of :data:`PROB_DTYPES` (GeoTIFF Float16 needs GDAL >= 3.11)."""

DEFAULT_OVERLAP_PX = 32
"""Default overlap of neighbouring prediction chips, in pixels (:attr:`PredictOptions.overlap_px`,
``geoccseg predict --overlap-px``, :func:`geoccseg.predict`, photos and scenes alike).

Each pixel in an overlap is predicted by several chips and blended, a small test-time ensemble, so
a wider overlap is slightly better and slower. Measured with the shipped models at 512-px chips
(``pipelines/benchmark_tiles.py``, README "Chip size and overlap"): overlap 32 instead of 64 changes
held-out F1 at the model's threshold by -0.0009 on the Dubai select and test images, +0.0002 and
+0.0005 on DeepCrack select and test, 0 on Massachusetts (400-px crops, one chip), and computes
1.13x the scene's pixels instead of 1.30x (8192-px scene): whole ``geoccseg predict`` on an
8192-px scene 42.8 s against 47.7 s (mean of 3 alternating runs, 2 cores)."""

OVERLAY_AUTO_MAX = 500
"""Overlays are drawn by default for runs of up to this many photos."""
