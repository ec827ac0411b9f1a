"""The demo's settings: light, so that ``geoccseg demo --help`` shows them without loading PyTorch."""

from __future__ import annotations

LABELED_FRACTION = 0.4
"""Share of the sample's width, from the west, whose roads are the labels of part (b)."""
BUFFER_M = 5.0
"""Centreline buffer of the scores, in metres."""
STEPS = 200
"""Fine-tuning steps of part (b); see :data:`FINE_TUNE`."""
FINE_TUNE = {"width_m": 8.0, "tile_px": 128, "batch_size": 4, "unlabeled_batch_size": 4, "lr": 1e-3,
             "unlabeled_start_steps": 50, "rampup_steps": 200}
"""Training options of part (b), besides the data and ``init_from``: the ``tuned_full`` arm of
``pipelines/benchmark_own_scene.py`` (labels 8 m wide, 128-px chips, batches of 4 labeled and 4
unlabeled chips, learning rate 1e-3, the unlabeled terms from step 50 over a 200-step ramp-up as
in its 300-step runs), at the road model's pixel size (1 m), with ``geoccseg train``'s default
centreline band (3 px; measured on one machine: completeness 0.94 against 0.92 without it, the
same correctness 0.94 and time). 200 steps instead of its 300 keep the
demo within about 1-2 minutes on 2 CPU cores (measured: README, quick start)."""
