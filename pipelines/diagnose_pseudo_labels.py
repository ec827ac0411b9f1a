#!/usr/bin/env python
"""How good are a model's pseudo-labels? Confidence levels scored against the true masks.

The unlabeled terms of the method trust the teacher where it is confident (high level: pseudo-label
loss and contrastive keys) and pull its low-confidence pixels towards the class prototypes (low
level: contrastive anchors). Whether that helps depends on how right the confident pseudo-labels
are, above all for the rare class. On a benchmark's unlabeled images the true masks exist (the
trainer never reads them), so this script measures it::

    python pipelines/diagnose_pseudo_labels.py --bundle ../bench/deepcrack-cpu/runs/deepcrack_full_0.035_s0 \\
        --data ../shared/data/deepcrack/train --exclude-labeled --max-images 60

For each level (high, low, unreliable; thresholds from the trainer's defaults or the options) it
prints the share of pixels, and per pseudo-label class the precision of the pseudo-labels; and for
each true class how its pixels split over (level, pseudo-label): e.g. the share of true crack pixels
that get a confident *background* pseudo-label, which teaches the student to miss cracks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from geoccseg.data.photos import read_mask, read_photo
from geoccseg.errors import GeoccsegError
from geoccseg.inference.array import predict_array
from geoccseg.losses import confidence_levels
from geoccseg.models import load_bundle
from geoccseg.train import TrainConfig

LEVELS = ("high", "low", "unreliable")


def diagnose(bundle_dir: str | Path, pairs: Sequence[tuple[Path, Path]], tau_high: float, tau_high_fg: float, tau_low: float) -> dict:
    """Counts[level][true class][pseudo class] over the images (each predicted whole), and derived rates."""
    bundle = load_bundle(bundle_dir)
    k = len(bundle.meta.classes) + 1
    counts = np.zeros((len(LEVELS), k, k), dtype=np.int64)
    taus = torch.tensor([tau_high] + [tau_high_fg] * (k - 1), dtype=torch.float64)
    for image_path, mask_path in pairs:
        probs = torch.from_numpy(predict_array(bundle, read_photo(image_path)))[None]
        truth = torch.from_numpy((read_mask(mask_path) > 0).astype(np.int64))  # binary masks: class 1 = foreground
        levels = confidence_levels(probs, taus, tau_low)
        for i, name in enumerate(LEVELS):
            sel = getattr(levels, name)[0]
            idx = truth[sel] * k + levels.pseudo[0][sel]
            counts[i] += np.bincount(idx.numpy(), minlength=k * k).reshape(k, k)
    total = counts.sum()
    report = {"images": len(pairs), "levels": {}}
    for i, name in enumerate(LEVELS):
        c = counts[i]
        report["levels"][name] = {
            "pixel_share": float(c.sum() / total),
            "pseudo_precision": {str(p): float(c[p, p] / max(c[:, p].sum(), 1)) for p in range(k)},
            "share_of_true_class": {str(t): {str(p): float(c[t, p] / max(counts[:, t].sum(), 1)) for p in range(k)} for t in range(k)},
        }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    d = TrainConfig(out="-", images="-", masks="-")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="folder with images/ and masks/")
    p.add_argument("--exclude-labeled", action="store_true", help="leave out the images the bundle was trained with labels")
    p.add_argument("--max-images", type=int, default=60)
    p.add_argument("--tau-high", type=float, default=d.tau_high)
    p.add_argument("--tau-high-fg", type=float, default=d.tau_high_fg)
    p.add_argument("--tau-low", type=float, default=d.tau_low)
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    try:
        data = Path(args.data)
        masks = {m.stem: m for m in (data / "masks").iterdir()}
        images = sorted(i for i in (data / "images").iterdir() if i.stem in masks)
        if args.exclude_labeled:
            labeled = set(json.loads((Path(args.bundle) / "bundle.json").read_text())["training"]["data"].get("labeled") or [])
            images = [i for i in images if i.stem not in labeled]
        images = images[:: max(1, len(images) // args.max_images)][: args.max_images]
        report = diagnose(args.bundle, [(i, masks[i.stem]) for i in images], args.tau_high, args.tau_high_fg, args.tau_low)
    except GeoccsegError as exc:
        print(f"diagnose_pseudo_labels: error: {exc}", file=sys.stderr)
        return 2
    print(f"{report['images']} images")
    print("level       | pixels | precision bg / fg | true fg → bg / fg pseudo-label | true bg → bg / fg")
    for name, r in report["levels"].items():
        fg, bg = r["share_of_true_class"]["1"], r["share_of_true_class"]["0"]
        print(f"{name:<11} | {r['pixel_share']:.3f}  | {r['pseudo_precision']['0']:.3f} / {r['pseudo_precision']['1']:.3f}   "
              f"| {fg['0']:.3f} / {fg['1']:.3f}                  | {bg['0']:.3f} / {bg['1']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
