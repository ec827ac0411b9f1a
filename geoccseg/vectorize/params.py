"""Settings of the vectoriser, all lengths and areas in metres.

The defaults suit road probability maps at about 1 m/pixel; crack maps at millimetre pixels
need every length scaled down accordingly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from geoccseg.errors import GeoccsegError

DEFAULT_THRESHOLD = 0.5
"""The threshold of a model that records none."""


@dataclass(frozen=True)
class VectorizeParams:
    """How probabilities become polylines.

    Attributes:
        threshold: probability at or above which a pixel is foreground (0-1); None: the model's
            own (recorded in the bundle, a probability GeoTIFF's tags or :func:`geoccseg.predict`'s
            array), else :data:`DEFAULT_THRESHOLD` (:meth:`resolved`).
        low_threshold: hysteresis: pixels at or above this lower probability are kept when their
            8-connected region holds at least one pixel at or above ``threshold``. ``None`` means
            a single threshold.
        min_blob_m2: foreground blobs smaller than this area (square metres) are removed.
            Default 30 m²: a few car lengths of false positives.
        max_hole_m2: background holes inside foreground smaller than this area (square metres)
            are filled, so that cars and shadows on a road do not split it into a loop.
            Default 50 m².
        spur_m: end branches shorter than this (metres) that hang off a junction are pruned,
            repeatedly until none is left. Default 10 m: the skeleton stubs of a wide road.
        min_length_m: connected networks whose total line length is shorter (metres) are
            dropped. Default 20 m.
        gap_m: a line end is bridged to another line end, or onto another line, when the gap
            between the two road surfaces (the distance minus the half-widths at both sides)
            is at most this (metres) and the bridge points within 45° of the end direction(s).
            Default 10 m; 0 disables bridging.
        simplify_m: Douglas-Peucker tolerance (metres) of the output lines. Default 1 m;
            0 keeps every skeleton pixel.
    """

    threshold: float | None = None
    low_threshold: float | None = None
    min_blob_m2: float = 30.0
    max_hole_m2: float = 50.0
    spur_m: float = 10.0
    min_length_m: float = 20.0
    gap_m: float = 10.0
    simplify_m: float = 1.0

    def __post_init__(self) -> None:
        check_thresholds(self.threshold, self.low_threshold)
        for name in ("min_blob_m2", "max_hole_m2", "spur_m", "min_length_m", "gap_m", "simplify_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):  # inf passed ">= 0" and crashed the block halo after a whole prediction
                raise GeoccsegError(f"{name} must be a finite number >= 0, got {value}")

    def resolved(self, model_threshold: float | None) -> VectorizeParams:
        """These settings at a definite threshold: their own; without one ``model_threshold`` (the
        model's), else :data:`DEFAULT_THRESHOLD`. The low threshold is checked against it."""
        if self.threshold is not None:
            return self
        threshold = DEFAULT_THRESHOLD if model_threshold is None else float(model_threshold)
        if self.low_threshold is not None and self.low_threshold > threshold:
            raise GeoccsegError(f"--low-threshold {self.low_threshold:g} is above the model's own decision threshold {threshold:g} "
                                "(chosen on its validation images); give a lower --low-threshold, or --threshold too")
        return replace(self, threshold=threshold)


def check_thresholds(threshold: float | None, low_threshold: float | None) -> None:
    """Refuse a threshold outside (0, 1] and a low threshold outside (0, threshold] ((0, 1] while
    the threshold is the model's, not known yet)."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise GeoccsegError(f"threshold must be in (0, 1], got {threshold}")
    if low_threshold is not None and not 0.0 < low_threshold <= (1.0 if threshold is None else threshold):
        raise GeoccsegError(f"low_threshold must be in (0, threshold={threshold if threshold is not None else 1}], got {low_threshold}")
