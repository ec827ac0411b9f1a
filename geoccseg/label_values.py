"""The values of label masks, shared by every layer that reads, makes or scores labels.

A label mask holds one class index per pixel: 0 is the background, 1 .. K-1 the foreground classes
(in the order of a model's ``classes``), and :data:`IGNORE_INDEX` a pixel without a label (nodata,
outside the labeled area, a padded border, an unreliable pseudo-label). The readers in
:mod:`geoccseg.io.labels` and :mod:`geoccseg.data` write it, the losses and the training targets
leave it out.

How a file's values read as such classes (a 0/255 mask, class indices, class indices with 255 for
unlabeled pixels) is decided once, from every value it holds, by :func:`label_mode`: for label
rasters, photo masks and evaluated truth alike.
"""

from __future__ import annotations

import numpy as np

from geoccseg.errors import GeoccsegError

IGNORE_INDEX = 255
"""Label value of a pixel without a label: counted by no loss, metric or class weight."""

COLOUR_TOLERANCE = 48
"""Largest difference between a grey mask's channels (JPEG's colour noise, an editor's off-grey
stroke); more is a colour mask, which is refused (red on black would read as background)."""


def held_values(values: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Which of the integers 0..255 an array of label values (any dtype, no NaN) holds.

    Returns:
        ``held``: (256,) bool, value v present; ``odd``: the value of largest magnitude outside
        the integers 0..255 (fractional, negative or larger), None when there is none.
    """
    if values.dtype == np.uint8:
        return np.bincount(values.ravel(), minlength=256) > 0, None
    held = np.zeros(256, dtype=bool)
    whole = (values >= 0) & (values <= 255) & (values == np.round(values))
    held[np.unique(values[whole]).astype(np.int64)] = True
    if whole.all():
        return held, None
    others = values[~whole]
    return held, float(others[np.argmax(np.abs(others))])


def unlabeled_is_255(held: np.ndarray) -> bool:
    """A class-index raster that marks unlabeled pixels with 255: it holds 255 and values from 1
    to 127, nothing from 128 to 254 (a 0/255 mask holds no small value, a smoothed one values
    from 128 up too). ``held``: (256,) bool, value v present."""
    return bool(held[255] and held[1:128].any() and not held[128:255].any())


def marks_unlabeled_255(held: np.ndarray, k: int) -> bool:
    """Class indices of ``k`` foreground classes with 255 for unlabeled pixels: :func:`unlabeled_is_255`
    with no value above ``k`` below 128 (``label_mode``'s reading; a mask holding 0, 100 and 255, or
    a class the model lacks, is no such mask and must not decide how a folder's 0/255 masks read)."""
    return unlabeled_is_255(held) and not held[k + 1:128].any()


def label_mode(name: str, held: np.ndarray, odd: float | None, k: int, classes: list[str] | None = None) -> tuple[bool, bool]:
    """``(mask, unlabeled_255)`` of labels holding the values ``held`` (:func:`held_values`): one rule
    for label rasters, photo masks and evaluated truth.

    Class indices 0..k, with or without 255 for unlabeled pixels (:func:`unlabeled_is_255`); a
    0/255 mask, possibly smoothed (values between, the class from 128 up). Anything else is refused.

    Args:
        name: the labels as messages name them, e.g. ``"mask 001.png"``.
        k: the number of foreground classes.
        classes: their names, for the message.
    """
    values = np.flatnonzero(held)
    indices, high, between = values[(values >= 1) & (values <= k)], values[values >= 128], values[(values > k) & (values < 128)]
    if odd is None and len(high) == 0 and len(between) == 0:
        return False, False
    if odd is None and marks_unlabeled_255(held, k):
        return False, True
    smoothed = held[128:255].any()  # smoothing a 0/255 mask leaves values on both sides of 128
    if odd is None and len(high) and (len(indices) == 0 or (len(between) and smoothed)):
        return True, False
    if odd is None and len(high) and len(between) and not smoothed:  # e.g. 0, 1, 2 and 255: classes the model lacks beside unlabeled pixels
        held_text = f"class indices up to {int(between.max())} and 255"
    else:
        held_text = f"values up to {int(values.max())}" if odd is None else f"value {odd:g}"
    named = f"the classes {', '.join(classes)}" if classes else f"{k} class(es)"
    raise GeoccsegError(f"{name} holds {held_text}: give a 0/255 or 0/1 mask, or class indices 0..{k} (background and {named}; "
                        "255 may mark unlabeled pixels); resample masks with nearest, never bilinear")
