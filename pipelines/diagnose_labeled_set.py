#!/usr/bin/env python
"""Why did one run of a photo benchmark score as it did? Train its labeled set again, changed.

A run of ``benchmark_suggest_photos.py`` (or any photo benchmark that keeps ``split.json`` and
``results.json`` with each run's ``labeled`` stems) is trained again on the same labeled photos, the
same split and budget, with one change: another arm (``--arm sup_imbalance``: the labels alone,
without the method's unlabeled terms), another training seed, a photo left out (``--drop``), another
run's labeled set (``--labeled-from``), or training options (``--option key=value``). Each call
trains one variant (about 4 minutes supervised, 9 with the method, on 2 CPU cores) and adds its
record (the benchmark's, with the model's own threshold and its test F1) to ``OUT/results.json``::

    python pipelines/diagnose_labeled_set.py --bench ../bench/suggest-massachusetts-photo \\
        --run massachusetts_coverage_r1_s5 --dataset massachusetts --data ../shared/data/massachusetts/train \\
        --out ../bench/diagnose-s5 --name sup --arm sup_imbalance

The variants of seed 5's collapse (README, "Where to label next") are in
``pipelines/results/suggest-photos-massachusetts-photo-6seeds/diagnose-s5.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from geoccseg.benchmark import ARMS, DATASETS, PROFILES, RunSpec, link_pairs, load_records, make_split, quiet_lightning, write_json
from geoccseg.benchmark.design import train_options
from geoccseg.benchmark.runs import one_line_errors, train_and_score
from geoccseg.benchmark.split import kept_photo_of
from geoccseg.errors import GeoccsegError


def diagnose(args: argparse.Namespace) -> dict:
    """Train and score one variant of ``args.run``; return its record."""
    records = {r["run"]: r for r in load_records(args.bench / "results.json")}
    if args.run not in records:
        raise GeoccsegError(f"{args.bench / 'results.json'} holds no run {args.run!r}")
    base = records[args.run]
    if args.labeled_from and args.labeled_from not in records:
        raise GeoccsegError(f"{args.bench / 'results.json'} holds no run {args.labeled_from!r} (--labeled-from)")
    labeled = list(records[args.labeled_from]["labeled"] if args.labeled_from else base["labeled"])
    missing = sorted(set(args.drop) - set(labeled))
    if missing:
        raise GeoccsegError(f"--drop {', '.join(missing)}: not labeled in {args.labeled_from or args.run}")
    labeled = [s for s in labeled if s not in set(args.drop)]
    pairs, split, test_pairs = make_split(args.data, None, kept_photo_of(args.bench, args.dataset))
    recorded = json.loads((args.bench / "split.json").read_text())
    if sorted(split["train"]) != sorted(recorded["train"]):
        raise GeoccsegError(f"{args.data} does not split as {args.bench / 'split.json'} records; give the benchmark's --data")
    options = train_options(args.option)
    profile = PROFILES[args.profile].with_steps(base["max_steps"])
    profile = replace(profile, encoder=base["encoder"], train={**profile.train, **options})
    seed = base["seed"] if args.seed is None else args.seed
    out = args.out
    done = {r["run"]: r for r in load_records(out / "results.json")}
    if args.name in done:
        raise GeoccsegError(f"{out / 'results.json'} already holds a variant named {args.name!r}; choose another --name")
    with tempfile.TemporaryDirectory(prefix="geoccseg-diagnose-") as tmp:
        folders = {part: link_pairs(Path(tmp) / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
        print(f"{args.name}: training {profile.max_steps} steps ({args.arm}, seed {seed}) with {len(labeled)} labeled photos", flush=True)
        record = train_and_score(RunSpec(args.arm, len(labeled) / len(split["train"]), seed), args.dataset, profile, folders,
                                 list(split["train"]), [], test_pairs, out, labeled=labeled, name=args.name)
    record |= {"variant_of": args.run, "options": options, "dropped": list(args.drop), "labeled_from": args.labeled_from}
    write_json(out / "results.json", [*done.values(), record])
    threshold = "" if record["model_threshold"] is None else (f", {record['model_threshold_f1']:.3f} at its threshold "
                                                               f"{record['model_threshold']:.2f}")
    print(f"{args.name}: test F1 {record['f1']:.3f} at 0.5{threshold}, ODS {record['ods_f1']:.3f} at {record['ods_threshold']:.2f} "
          f"(the run itself: {base['f1']:.3f} at 0.5)")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "diagnose_labeled_set")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=Path, required=True, help="the benchmark's output folder (results.json, split.json)")
    p.add_argument("--run", required=True, help="the run whose labeled set is trained again")
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--data", type=Path, required=True, help="the folder the benchmark was run on")
    p.add_argument("--out", type=Path, required=True, help="folder of the variants (results.json, runs/)")
    p.add_argument("--name", required=True, help="the variant's name")
    p.add_argument("--arm", default="full", choices=list(ARMS), help="the benchmark arm (default full: the method)")
    p.add_argument("--seed", type=int, help="training seed (default: the run's)")
    p.add_argument("--drop", nargs="+", default=[], help="labeled stems to leave out")
    p.add_argument("--labeled-from", help="train on this other run's labeled set instead")
    p.add_argument("--option", nargs="+", default=[], help="training options KEY=VALUE (value read as YAML), e.g. foreground_share=0.33")
    p.add_argument("--profile", default="cpu", choices=list(PROFILES), help="the benchmark's profile (its steps are the run's)")
    quiet_lightning()
    diagnose(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
