#!/usr/bin/env python
"""Quality benchmark: the ablation arms and the label-fraction sweep of the method on real photo data.

Run from the repository root, e.g.::

    python pipelines/benchmark_quality.py --dataset deepcrack --data ../shared/data/deepcrack/train \\
        --labeled-fraction 0.035 --profile cpu --seeds 0 1 2 --out ../bench/deepcrack-cpu

The command line of :func:`geoccseg.benchmark.run_benchmark`; the split, arms, scoring and outputs
are described in :mod:`geoccseg.benchmark`. ``--resume`` continues an output folder (skipping the
runs its ``results.json`` holds); ``--no-keep-bundles`` removes each run's bundle after scoring.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

from geoccseg.benchmark import ARMS, DATASETS, PROFILES, quiet_lightning, run_benchmark, summarise
from geoccseg.benchmark.runs import one_line_errors
from geoccseg.models.config import ENCODERS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (and optionally unlabeled/)")
    p.add_argument("--test-dir", help="score on this folder (images/ + masks/) instead of a held-out part of --data")
    p.add_argument("--labeled-fraction", type=float, default=0.035, help="labeled share of the training images (default 0.035)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="compute budget (default cpu)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="default: all of them")
    p.add_argument("--sweep", action="store_true", help="also run sup_imbalance and full at each of --fractions")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.035, 0.1, 1.0])
    p.add_argument("--encoder", choices=ENCODERS, help="override the profile's encoder (every arm)")
    p.add_argument("--max-steps", type=int, help="override the profile's steps (every arm)")
    p.add_argument("--device", default="auto", help="scoring device: auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="keep out/results.json and skip its runs")
    p.add_argument("--no-keep-bundles", dest="keep_bundles", action="store_false", help="delete each run's bundle after scoring")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; print progress and the final table."""
    return one_line_errors(_run, argv, "benchmark_quality")


def _run(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    quiet_lightning()
    profile = PROFILES[args.profile]
    if args.encoder:
        profile = replace(profile, name=f"{profile.name}+{args.encoder}", encoder=args.encoder)
    if args.max_steps:
        profile = profile.with_steps(args.max_steps)
    start = time.perf_counter()
    records = run_benchmark(
        args.dataset, args.data, args.out, profile=profile, seeds=args.seeds, labeled_fraction=args.labeled_fraction,
        arms=args.arms, sweep=args.sweep, fractions=args.fractions, test_dir=args.test_dir, resume=args.resume,
        keep_bundles=args.keep_bundles, device=args.device,
    )
    print(summarise(records))
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
