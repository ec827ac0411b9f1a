"""The values of label masks, shared by every layer that reads, makes or scores labels.

A label mask holds one class index per pixel: 0 is the background, 1 .. K-1 the foreground classes
(in the order of a model's ``classes``), and :data:`IGNORE_INDEX` a pixel without a label (nodata,
outside the labeled area, a padded border, an unreliable pseudo-label). The readers in
:mod:`geoccseg.io.labels` and :mod:`geoccseg.data` write it, the losses and the training targets
leave it out.
"""

from __future__ import annotations

IGNORE_INDEX = 255
"""Label value of a pixel without a label: counted by no loss, metric or class weight."""
