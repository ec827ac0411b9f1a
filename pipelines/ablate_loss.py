#!/usr/bin/env python
"""Loss ablation: which data imbalance loss, and which contrastive weight, the method's defaults use.

The defaults of :class:`~geoccseg.train.config.TrainConfig` (``class_weighting``,
``class_weight_beta``, ``region``, ``lambda_con``) were chosen with this script, on the *select*
part of the quality benchmark's fixed split (never on its test part, so the benchmark's test
figures stay free of this choice)::

    python pipelines/ablate_loss.py --dataset deepcrack --data ../shared/data/deepcrack/train \\
        --out ../bench/loss-ablation

Every variant trains on the same labeled stems (3.5 % of the benchmark's training stems, seed 0)
for the same steps, and reports the select-set precision, recall and F1 of its best checkpoint
(validated every 50 steps). ``sup_*`` variants use the labeled images alone; ``full_*`` variants
are the whole method (pseudo-labels and contrastive loss on the other training images).
Outputs in ``--out``: ``results.json`` (one record per variant, rewritten after each) and
``results.md``. Running the command again continues it: variants it holds are kept, a variant
stopped after a checkpoint continues from it; one folder holds one setting (dataset, seed, steps,
labeled fraction), and another is refused.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from geoccseg import benchmark
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.runs import continue_or_clear, one_line_errors
from geoccseg.benchmark.split import check_split
from geoccseg.data.photos import split_labeled
from geoccseg.errors import GeoccsegError
from geoccseg.io.atomic import atomic_path
from geoccseg.train import train

#: Variant name → TrainConfig fields it sets (on top of the trainer's defaults).
SUP = {"pseudo": False, "contrastive": False}
FULL = {"pseudo": True, "contrastive": True}
OLD_LOSS = {"class_weighting": "effective", "class_weight_beta": 0.995, "region": "tversky"}
NEW_LOSS = {"class_weighting": "effective", "class_weight_beta": 0.98, "region": "dice"}
#: The contrastive weight the ablation chose (the trainer's default ``lambda_con``).
CHOSEN_LAMBDA_CON = 0.1
VARIANTS: dict[str, dict] = {
    "sup_ce": {**SUP, "loss": "ce"},
    "sup_eff995_tversky": {**SUP, **OLD_LOSS},
    "sup_eff995_dice": {**SUP, **OLD_LOSS, "region": "dice"},
    "sup_none_tversky": {**SUP, **OLD_LOSS, "class_weighting": "none"},
    "sup_none_dice": {**SUP, **NEW_LOSS, "class_weighting": "none"},
    "sup_eff98_dice": {**SUP, **NEW_LOSS},
    "full_eff98_dice_con0.5": {**FULL, **NEW_LOSS, "lambda_con": 0.5},
    "full_eff98_dice_con0.1": {**FULL, **NEW_LOSS, "lambda_con": 0.1},
    "full_eff98_dice_con0.1_tau0.99": {**FULL, **NEW_LOSS, "lambda_con": 0.1, "tau_high": 0.99},
}


def run_variant(name: str, dataset: str, folders: dict[str, Path], labeled: list[str], out: Path, max_steps: int, seed: int,
                labeled_fraction: float) -> dict:
    """Train one variant into ``out/runs/<name>`` and return its select-set record.

    The run is the benchmark's (:func:`geoccseg.benchmark.train_config`, cpu profile, validated every
    50 steps) with the variant's settings on top."""
    ds = benchmark.DATASETS[dataset]
    profile = replace(benchmark.PROFILES["cpu"].with_steps(max_steps), val_every=min(50, max_steps))
    spec = benchmark.RunSpec(arm="full", labeled_fraction=labeled_fraction, seed=seed)
    run_dir = out / "runs" / name
    config = benchmark.train_config(spec, dataset, profile, folders, labeled, [], run_dir, **VARIANTS[name])
    resumed = continue_or_clear(run_dir, config)
    result = train(replace(config, resume=resumed is not None))
    cls = ds.classes[0]
    return {
        "variant": name, "dataset": dataset, "seed": seed, "labeled_fraction": labeled_fraction, "max_steps": max_steps,
        "steps": result.steps, "train_seconds": round(result.seconds, 1),  # of this invocation (the resumed part only)
        **({"resumed_from_step": resumed} if resumed is not None else {}), "machine": machine(),
        "settings": VARIANTS[name], "n_labeled": len(labeled), "labeled": sorted(labeled),
        **{k: result.validation.get(f"{k}_{cls}") for k in ("precision", "recall", "f1", "iou")},
    }


def check_records(records: Sequence[dict], dataset: str, seed: int, max_steps: int, labeled_fraction: float,
                  labeled: Sequence[str]) -> None:
    """Refuse to add variants to records of another setting (their table would mix budgets) or of
    another split: one whose labeled images were not ``labeled`` (a folder whose ``split.json``
    was lost, whose split :func:`~geoccseg.benchmark.split.kept_photo_of` can only guess).

    Raises:
        GeoccsegError: a record of another dataset, seed, step budget or labeled fraction (records
            before December 2026 name no budget: they count as another), or other labeled images.
    """
    setting = {"dataset": dataset, "seed": seed, "max_steps": max_steps, "labeled_fraction": labeled_fraction}
    for r in records:
        other = {k: r.get(k) for k, v in setting.items() if r.get(k) != v}
        if other:
            raise GeoccsegError(f"{r['variant']} in results.json was run with {other} (now {setting}); choose another --out")
        if "labeled" in r and r["labeled"] != sorted(labeled):
            raise GeoccsegError(f"{r['variant']} in results.json was trained on other labeled images than this split's; resume "
                                "with the ablation's own data and split.json, or choose another --out")


def table(records: Sequence[dict]) -> str:
    """Markdown table of the records."""
    lines = ["| variant | select precision | select recall | select F1 | steps | minutes |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['variant']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['steps']} | {r['train_seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "ablate_loss")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="deepcrack", choices=sorted(benchmark.DATASETS))
    p.add_argument("--data", required=True, help="folder with images/ and masks/")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--labeled-fraction", type=float, default=0.035)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    benchmark.quiet_lightning()
    pairs, split, _ = benchmark.make_split(Path(args.data), None, benchmark.kept_photo_of(args.out, args.dataset))
    check_split(args.out, split)
    labeled = split_labeled(list(split["train"]), args.labeled_fraction, args.seed)[0]
    results_path = args.out / "results.json"
    records = benchmark.load_records(results_path, key="variant")
    check_records(records, args.dataset, args.seed, args.max_steps, args.labeled_fraction, labeled)  # before split.json is written
    args.out.mkdir(parents=True, exist_ok=True)
    benchmark.write_json(args.out / "split.json", split)
    done = {r["variant"] for r in records}
    with tempfile.TemporaryDirectory(prefix="geoccseg-ablation-") as tmp:
        folders = {part: benchmark.link_pairs(Path(tmp) / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
        for name in args.variants:
            if name in done:
                print(f"{name}: in results.json, kept", flush=True)
                continue
            record = run_variant(name, args.dataset, folders, labeled, args.out, args.max_steps, args.seed, args.labeled_fraction)
            records.append(record)
            print(f"{name}: select F1 {record['f1']:.3f} (P {record['precision']:.3f}, R {record['recall']:.3f})", flush=True)
            benchmark.write_json(results_path, records)
            with atomic_path(args.out / "results.md", overwrite=True) as md:
                md.write_text(table(records))
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
