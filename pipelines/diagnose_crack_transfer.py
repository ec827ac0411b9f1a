#!/usr/bin/env python
"""Does a scale test-time augmentation or a width-robust threshold carry the crack model to CrackForest?

The shipped crack model (DeepCrack) scores CrackForest F1 0.43 at its threshold while CrackForest's
best threshold would be 0.04-0.08: it is under-confident there. CrackForest's cracks are thinner in
pixels, so this measures, with everything chosen on DeepCrack's *select* images only:

* predictions: the photo as it is (``p1``); 2x enlarged and brought back (``p2``); their ``mean``
  and ``max`` (a scale test-time augmentation);
* thresholds: the best F1 on the select images (``native_ods``); on the select images together with
  2x smaller copies of them, whose cracks are as thin as CrackForest's (``robust_ods``); on the
  select images together with copies of lower contrast, ``--faint`` (``faint_<c>_ods``: each
  photo's deviation from its mean grey multiplied by c, so its cracks are fainter); and 0.5;

and reports DeepCrack select and test F1 and CrackForest F1 (precision, recall) at each, and
CrackForest's own best F1 and threshold (``cfd_ods``, which nothing may be chosen on)::

    python pipelines/diagnose_crack_transfer.py --out pipelines/results/crack-transfer/scale_tta.json

``--per-image-norm`` normalises each photo by its own percentiles at test time, whatever the model
was trained with (``geoccseg train --per-image-norm`` trains that way)::

    python pipelines/diagnose_crack_transfer.py --per-image-norm --out pipelines/results/crack-transfer/scale_tta_per_image.json

``--faint 0.75 0.5 0.25 --combine p1`` adds the thresholds chosen with low-contrast copies, for the photo as it is::

    python pipelines/diagnose_crack_transfer.py --faint 0.75 0.5 0.25 --combine p1 --out pipelines/results/crack-transfer/faint/shipped.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geoccseg.benchmark.design import data_root
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.runs import one_line_errors, write_json
from geoccseg.benchmark.score import foreground_probability, read_whole_truth_mask
from geoccseg.benchmark.split import SHIPPED_SOURCES, read_pairs, recorded_splits
from geoccseg.benchmark.threshold import fainter
from geoccseg.data.photos import read_photo
from geoccseg.evaluate import PixelScorer
from geoccseg.io.bundle import resolve_model
from geoccseg.models import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root(ROOT)

COMBINE = {"p1": lambda a, b: a, "p2": lambda a, b: b, "mean": lambda a, b: (a + b) / 2, "max": np.maximum}


def halved(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x smaller: the image by area; the mask keeps a cell that holds any crack pixel (cracks stay >= 1 px)."""
    x = F.avg_pool2d(torch.from_numpy(image[None].astype(np.float32)), 2).round().clamp(0, 255).byte()[0].numpy()
    m = F.max_pool2d(torch.from_numpy(mask[None, None].astype(np.float32)), 2)[0, 0].numpy() > 0
    return x, m


def enlarged_probability(bundle, image: np.ndarray) -> np.ndarray:
    """Crack probability of the 2x enlarged photo, brought back to its grid (mean of 2x2 cells)."""
    x = torch.from_numpy(image[None].astype(np.float32))
    x2 = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).round().clamp(0, 255).byte()[0].numpy()
    return F.avg_pool2d(torch.from_numpy(foreground_probability(bundle, x2))[None, None], 2)[0, 0].numpy()


def predict(bundle, pairs, halve: bool = False, contrast: float = 1.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for _, (image_path, mask_path) in sorted(pairs.items()):
        image, mask = read_photo(image_path), read_whole_truth_mask(mask_path)
        if halve:
            image, mask = halved(image, mask)
        if contrast != 1.0:
            image = fainter(image, contrast)
        out.append((foreground_probability(bundle, image), enlarged_probability(bundle, image), mask))
    return out


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "diagnose_crack_transfer")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crack", help="shipped name or bundle folder (default crack)")
    parser.add_argument("--per-image-norm", action="store_true", help="normalise each photo by its own percentiles at test time")
    parser.add_argument("--faint", type=float, nargs="*", default=[], metavar="C",
                        help="also choose thresholds with select copies of contrast C (0-1)")
    parser.add_argument("--combine", nargs="+", choices=sorted(COMBINE), default=list(COMBINE), help="predictions to report (default all)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    bundle = load_bundle(resolve_model(args.model))
    if args.per_image_norm:
        bundle.meta.norm = replace(bundle.meta.norm, per_image=True)
    # the model's own split of DeepCrack, as its training record holds it
    (parts,) = recorded_splits(bundle.meta.training, SHIPPED_SOURCES["crack"], DATA).values()
    sets = {"select": predict(bundle, parts["select"]), "select_half": predict(bundle, parts["select"], halve=True),
            "test": predict(bundle, parts["test"]), "cfd": predict(bundle, read_pairs(DATA / "cfd", "cfd"))}
    sets.update({f"faint_{c:g}": predict(bundle, parts["select"], contrast=c) for c in args.faint})
    report = {"run": {"model": args.model, "per_image_norm": args.per_image_norm, "faint": args.faint, "weights": bundle.stamp, "machine": machine(),
                      "split": {part: sorted(parts[part]) for part in ("select", "test")}}}  # what was run
    for name in args.combine:
        combine = COMBINE[name]
        def score(keys, threshold=0.5):
            scorer = PixelScorer(threshold)
            for key in keys:
                for p1, p2, mask in sets[key]:
                    scorer.add(combine(p1, p2), mask)
            return scorer.scores()

        row = {}
        choices = [("native_ods", score(["select"]).ods_threshold), ("robust_ods", score(["select", "select_half"]).ods_threshold)]
        choices += [(f"faint_{c:g}_ods", score(["select", f"faint_{c:g}"]).ods_threshold) for c in args.faint]
        for label, threshold in choices + [("0.5", 0.5)]:
            select, test, cfd = (score([k], threshold) for k in ("select", "test", "cfd"))
            row[label] = {"threshold": round(float(threshold), 3), "select_f1": round(select.f1, 3), "test_f1": round(test.f1, 3),
                          "cfd_f1": round(cfd.f1, 3), "cfd_precision": round(cfd.precision, 3), "cfd_recall": round(cfd.recall, 3)}
            row[label].update({f"select_faint_{c:g}_f1": round(score(["select", f"faint_{c:g}"], threshold).f1, 3) for c in args.faint})
        cfd = score(["cfd"])
        row["cfd_ods"] = {"f1": round(cfd.ods_f1, 3), "threshold": round(float(cfd.ods_threshold), 3)}
        row["select_half_ods_f1"] = round(score(["select_half"]).ods_f1, 3)
        report[name] = row
        print(name, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
