#!/usr/bin/env python
"""What a decision threshold chosen on the select images is worth: the runs of a photo benchmark
scored on its test images at 0.5 and at the threshold of their best F1 on its select images.

``geoccseg train`` now chooses that threshold on its validation images and keeps it in the bundle
(README, "Train with few labels"); the benchmarks compare every run at 0.5. This script re-scores the
bundles a benchmark kept (``OUT/runs/<run>/``) both ways, with the benchmark's split
(``OUT/split.json``) and scorer::

    python pipelines/rescore_thresholds.py --bench ../bench/suggest-massachusetts-photo \\
        --dataset massachusetts --data ../shared/data/massachusetts/train --out thresholds.json

Writes ``--out`` (one record per run: the chosen threshold, the select F1 there, the test F1 at 0.5
and at the chosen threshold) and prints the change of test F1: mean, median, range.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoccseg.benchmark import DATASETS, make_split, write_json
from geoccseg.benchmark.runs import one_line_errors
from geoccseg.benchmark.score import THRESHOLD, foreground_probability, score_thresholds
from geoccseg.benchmark.split import kept_photo_of
from geoccseg.benchmark.threshold import choose_threshold
from geoccseg.errors import GeoccsegError
from geoccseg.models import load_bundle
from geoccseg.train.callbacks import run_finished


def rescore(bench: Path, dataset: str, data: Path) -> list[dict]:
    """Each kept run of the benchmark folder ``bench``, scored at 0.5 and at its select-chosen threshold."""
    if not (bench / "split.json").is_file():
        raise GeoccsegError(f"{bench} holds no split.json; give the output folder of a photo benchmark")
    pairs, split, test_pairs = make_split(data, None, kept_photo_of(bench, dataset))
    recorded = json.loads((bench / "split.json").read_text())
    if any(sorted(split[part]) != sorted(recorded.get(part, [])) for part in ("select", "test")):
        raise GeoccsegError(f"{data} does not split as {bench / 'split.json'} records; give the folder the benchmark was run on")
    select = {stem: pairs[stem] for stem in split["select"]}
    # the finished runs the benchmark recorded: a run still training (or stopped) has a bundle too
    recorded_runs = {r["run"] for r in json.loads((bench / "results.json").read_text())} if (bench / "results.json").is_file() else set()
    runs = sorted(p for p in (bench / "runs").iterdir() if p.name in recorded_runs and run_finished(p)) if (bench / "runs").is_dir() else []
    if not runs:
        raise GeoccsegError(f"{bench / 'runs'} holds no finished run that {bench / 'results.json'} records; the benchmark must "
                            "keep its runs' bundles")
    tolerance = DATASETS[dataset].tolerance_px
    records = []
    for run in runs:
        bundle = load_bundle(run)
        threshold, select_f1, _ = choose_threshold(bundle, select)
        at_half, at_chosen = score_thresholds(test_pairs, (THRESHOLD, threshold),
                                              lambda stem, image, valid, b=bundle: foreground_probability(b, image, valid=valid), tolerance,
                                              bands=len(bundle.meta.bands))
        record = {"run": run.name, "threshold": threshold, "select_f1": select_f1, "test_f1_at_0.5": at_half.pixels.f1,
                  "test_f1_at_threshold": at_chosen.pixels.f1}
        print(f"{run.name}: threshold {threshold:.2f} (select F1 {select_f1:.3f}); test F1 {record['test_f1_at_0.5']:.3f} at 0.5, "
              f"{record['test_f1_at_threshold']:.3f} at {threshold:.2f}", flush=True)
        records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "rescore_thresholds")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=Path, required=True, help="a photo benchmark's output folder (split.json, runs/)")
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--data", type=Path, required=True, help="the folder the benchmark was run on (images/, masks/)")
    p.add_argument("--out", type=Path, required=True, help="JSON file of the records")
    args = p.parse_args(argv)
    records = rescore(args.bench, args.dataset, args.data)
    change = np.array([r["test_f1_at_threshold"] - r["test_f1_at_0.5"] for r in records])
    write_json(args.out, records)
    print(f"{len(records)} runs: test F1 at the select-chosen threshold minus at 0.5: mean {change.mean():+.3f}, median "
          f"{np.median(change):+.3f}, from {change.min():+.3f} to {change.max():+.3f}; higher in {int((change > 0).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
