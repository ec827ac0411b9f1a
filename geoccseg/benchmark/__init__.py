"""The quality benchmark: the ablation arms and the label-fraction sweep of the method on real photo data.

``pipelines/benchmark_quality.py`` is its command line; the loss ablation, the own-scene benchmark,
the release of the shipped models and the results notebook use the same pieces:

- :mod:`~geoccseg.benchmark.design`: compute budgets (:data:`PROFILES`), arms (:data:`ARMS`),
  datasets (:data:`DATASETS`), the runs of a benchmark (:func:`plan_runs`) and their
  :class:`~geoccseg.train.TrainConfig` (:func:`train_config`);
- :mod:`~geoccseg.benchmark.split`: the fixed test / select / train split (:func:`make_split`);
- :mod:`~geoccseg.benchmark.score`: scoring a bundle on the test images (:func:`score_bundle`),
  through :class:`geoccseg.evaluate.PixelScorer` and the forward path of ``geoccseg predict``;
- :mod:`~geoccseg.benchmark.runs`: training and scoring each run with resumable records
  (:func:`run_benchmark`);
- :mod:`~geoccseg.benchmark.report`: mean ± std over seeds, the markdown table and the plots
  (:func:`summarise`, :func:`write_reports`), from the records alone.
- :mod:`~geoccseg.benchmark.machine`: the machine a record was made on (:func:`machine`); identical
  runs differ by 0.01-0.02 F1 between processors, so arms are paired on one machine only.

**Split.** The image stems of the data are shuffled once with a fixed seed that does not depend on
the training seeds, so every arm, seed and fraction sees the same split (written to ``split.json``):
10 % *test* images, scored at the end; 5 % *select* images, the trainer's validation folder, used
only to choose which checkpoint is saved; the rest are the *training* images. Choosing the
checkpoint on images that are not scored keeps the reported numbers free of selection bias. With a
test folder, the test set is that folder and only the select set is taken from the data.

**Arms** (:data:`ARMS`), each changing one thing, all with the same profile (steps, batch, tile)::

    sup_ce              labeled part alone, plain cross-entropy
    sup_imbalance       + data imbalance loss
    pseudo              + pseudo-labels on unlabeled images
    full                + confidence-level contrastive loss (the method)
    full_da             the method with the teacher's class shares aligned to the labeled ones
    full_single_fusion  the method with single-stage fusion
    fully_supervised    every training image labeled, imbalance loss (the ceiling)

A sweep adds ``sup_imbalance`` and ``full`` at each of several labeled fractions; at fraction 1.0
both are the ``fully_supervised`` run. A run is named ``<dataset>_<arm>_<fraction>_s<seed>`` and is
trained once, however many of these ask for it; one output folder holds the runs of one profile.

**Scoring.** Each test image is predicted whole with the saved bundle (the EMA teacher of the best
select-set F1); the foreground probability gives pixel precision, recall, F1 and IoU at 0.5, ODS
and OIS F1 over a threshold grid and, for roads, relaxed F1 with a tolerance of 3 pixels. Counts
are summed over the test images (micro average); OIS averages per-image best F1.

**Outputs** in the output folder: ``results.json`` (one record per run, rewritten atomically after
every run), ``results.md`` (mean ± sample standard deviation over seeds), ``f1_vs_fraction.png``,
``examples.png``, ``split.json``, ``examples/<run>.npz`` (the foreground probabilities of the
example images, as uint8 0..255) and ``runs/<run>/`` (the bundle and training logs of each run;
optimiser checkpoints are always removed).
"""

from __future__ import annotations

from geoccseg.benchmark.design import (
    ARMS,
    DATASETS,
    EXAMPLE_ARMS,
    PROFILES,
    SWEEP_ARMS,
    Arm,
    DatasetSpec,
    Profile,
    RunSpec,
    plan_runs,
    train_config,
)
from geoccseg.benchmark.report import mean_std, summarise, write_reports
from geoccseg.benchmark.runs import RECORD_FIELDS, load_records, quiet_lightning, run_benchmark, write_json
from geoccseg.benchmark.score import Score, score_bundle
from geoccseg.benchmark.split import HOLDOUT_SEED, PHOTO_OF, kept_photo_of, link_pairs, make_split, split_stems

__all__ = [
    "ARMS",
    "DATASETS",
    "EXAMPLE_ARMS",
    "HOLDOUT_SEED",
    "PHOTO_OF",
    "PROFILES",
    "RECORD_FIELDS",
    "SWEEP_ARMS",
    "Arm",
    "DatasetSpec",
    "Profile",
    "RunSpec",
    "Score",
    "kept_photo_of",
    "link_pairs",
    "load_records",
    "make_split",
    "mean_std",
    "plan_runs",
    "quiet_lightning",
    "run_benchmark",
    "score_bundle",
    "split_stems",
    "summarise",
    "train_config",
    "write_json",
    "write_reports",
]
