"""How probabilities are stored: the one encoding of the probability rasters and images.

``geoccseg predict`` writes probabilities p in [0, 1] either as ``uint8`` = ``round(p x 255)``
(the default: probability COGs of scenes, probability PNGs of photos, and the confidence band of
the confidence COG) or as ``float32`` p with NaN nodata. A ``uint8`` raster keeps its nodata in
an internal dataset mask (255 valid, 0 nodata; :func:`encode_mask`), so that every value 0-255 is
a probability. Its files are marked with :data:`PROBABILITY_TAG`, whose value is the sample type.

Every writer encodes with :func:`encode_uint8` and every reader decodes with :func:`decode_uint8`
(or :func:`probabilities` for a raster of either sample type), so that the value a threshold meets
is the same everywhere: ``decode_uint8(51) == float32(0.2)`` exactly.
"""

from __future__ import annotations

import numpy as np

from geoccseg.errors import GeoccsegError

PROBABILITY_TAG = "GEOCCSEG_PROBABILITY"
"""Dataset tag (PNG text key for photos) of the probability rasters written by ``geoccseg predict``;
its value is the sample type (``uint8``: p x 255, ``float32``: p)."""

THRESHOLD_TAG = "GEOCCSEG_THRESHOLD"
"""Dataset tag holding the threshold of the model that wrote the probabilities (``geoccseg predict``)."""

WEIGHTS_TAG = "GEOCCSEG_WEIGHTS_SHA256"
"""Dataset tag (PNG text key) holding the SHA-256 of the bundle weights file that predicted the
probabilities, as ``geoccseg models`` shows it (left out when the model that ran was built or
changed in memory)."""

STATE_TAG = "GEOCCSEG_STATE_SHA256"
"""Dataset tag (PNG text key) holding the digest of the weights that ran as they were in memory
(:func:`geoccseg.models.bundle.state_sha256`): what a resumed photo run compares."""

TURN_TAG = "GEOCCSEG_EXIF_ORIENTATION"
"""PNG text key of a photo's probability PNG where ``geoccseg predict`` turned the photo by its EXIF
orientation (2-8) first, as viewers show it: ``evaluate`` turns it back to the stored pixels, which
masks follow as training reads them."""

CONFIDENCE_TAG = "GEOCCSEG_CONFIDENCE"
"""Dataset tag (PNG text key for photos) of the confidence rasters of ``geoccseg predict
--confidence-out``; its value is ``max_probability,level`` (photos: ``level``)."""


CLASS_MAP_MAX = 10
"""An untagged uint8 raster whose largest value is 2 to this may be a class map (0 background, 1
road, 2 building, ...) rather than probabilities x 255, which it would read as at most 0.04 and
draw nothing from: vectorize and evaluate warn (not refuse: another tool's probabilities of an
image without roads look the same). A 0/1 mask, largest value 1, is refused by vectorize and read
as a mask by evaluate."""


def parse_threshold(value: str | None) -> float | None:
    """A recorded :data:`THRESHOLD_TAG` value as a decision threshold in (0, 1] (what predict,
    vectorize and evaluate take), or None where it is missing, not a number or out of range."""
    try:
        threshold = float(value) if value is not None else None
    except ValueError:
        return None
    return threshold if threshold is not None and 0 < threshold <= 1 else None


def refuse_confidence(tags, path) -> None:
    """Refuse a confidence raster (``tags``: its dataset tags or PNG text keys) where probabilities
    are read: its max-class probability is at least 0.5 wherever there is data, so every pixel
    would be a road or a crack.

    Raises:
        GeoccsegError: ``tags`` hold :data:`CONFIDENCE_TAG`.
    """
    if CONFIDENCE_TAG in tags:
        raise GeoccsegError(f"{path} is a confidence raster of `geoccseg predict --confidence-out` (the teacher's confidence "
                            "and level), not probabilities; give the probability raster (--prob-out, or probability/<stem>.png "
                            "for photos)")


UINT8_MAX = 255
"""Stored value of p = 1 in a ``uint8`` raster."""

UINT8_SCALE = 1 / UINT8_MAX
"""Scale of the ``uint8`` bands, as GDAL and QGIS apply it: p = value x 1/255 (offset 0)."""


def encode_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities as stored in ``uint8``: ``round(p x 255)``, NaN (nodata) as 0.

    Args:
        prob: probabilities in [0, 1], any shape, float; NaN where there is no data (the dataset
            mask, :func:`encode_mask`, records it).

    Returns:
        uint8 array of the same shape.
    """
    return np.round(np.nan_to_num(prob) * UINT8_MAX).clip(0, UINT8_MAX).astype(np.uint8)


def decode_uint8(values: np.ndarray) -> np.ndarray:
    """Probabilities of stored ``uint8`` values: ``value / 255`` as float32 (correctly rounded).

    Args:
        values: stored values 0-255, any shape (uint8, or an integer type holding such values).

    Returns:
        float32 array of the same shape, in [0, 1].
    """
    return values.astype(np.float32) / np.float32(UINT8_MAX)


def probabilities(values: np.ndarray) -> np.ndarray:
    """Probabilities of the values of a probability raster of either sample type, as float32.

    ``uint8`` values are decoded (:func:`decode_uint8`); floating-point values are probabilities
    already and are only cast.
    """
    return decode_uint8(values) if values.dtype == np.uint8 else values.astype(np.float32)


def encode_mask(valid: np.ndarray) -> np.ndarray:
    """The dataset mask of a ``uint8`` probability raster: 255 where ``valid``, 0 (nodata) elsewhere."""
    return valid.astype(np.uint8) * UINT8_MAX
