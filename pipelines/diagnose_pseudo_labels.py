#!/usr/bin/env python
"""How good are a model's pseudo-labels? Confidence levels scored against the true masks.

The unlabeled terms of the method trust the teacher where it is confident (high level: pseudo-label
loss and contrastive keys) and pull its low-confidence pixels towards the class prototypes (low
level: contrastive anchors). Whether that helps depends on how right the confident pseudo-labels
are, above all for the rare class. On a benchmark's unlabeled images the true masks exist (the
trainer never reads them), so this script measures it::

    python pipelines/diagnose_pseudo_labels.py --bundle ../bench/deepcrack-cpu/runs/deepcrack_full_0.035_s0 \\
        --data ../shared/data/deepcrack/train --exclude-labeled --split ../bench/deepcrack-cpu/split.json --max-images 60

``--split`` (the benchmark's ``split.json``) keeps only its training images: the held-out test and
select images were never the teacher's unlabeled data.

For each level (high, low, unreliable; thresholds from the trainer's defaults or the options) it
prints the share of pixels, and per pseudo-label class the precision of the pseudo-labels; and for
each true class how its pixels split over (level, pseudo-label): e.g. the share of true crack pixels
that get a confident *background* pseudo-label, which teaches the student to miss cracks.

Two views of the *wrong* confident foreground labels tell which remedy could remove them:

* how far each lies from the nearest true foreground pixel: next to a true road or crack (its
  edge, where the mask's width is a convention) or far from any (something else taken for one);
* what a shape filter would keep (``--shape-half-width-px R``): foreground wider than 2 R + 1
  pixels (the morphological opening by a disk of radius R) and thin pieces smaller than
  ``--shape-min-area-px`` are left out, as a shape-aware pseudo-label filter would do; it helps
  only if what it leaves out is mostly wrong;
* what a centreline band would keep (``--centreline-half-width-px R``): the confident foreground
  within R pixels of its own skeleton (:func:`geoccseg.train.centreline.centreline_band`), the
  width of the masks' lines, so that the edges of a wide road are not taught as road.

``--figure PATH`` draws the images with the most wrong confident foreground far (≥ 21 px) from
any true pixel, so the far mistakes can be looked at: things taken for roads, or roads the masks
leave out (none is drawn, with a note, when no confident foreground label is wrong).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from geoccseg.benchmark.runs import one_line_errors, write_json
from geoccseg.benchmark.score import read_whole_truth_mask
from geoccseg.benchmark.split import read_pairs
from geoccseg.data.photos import read_photo
from geoccseg.errors import GeoccsegError
from geoccseg.inference.array import predict_array
from geoccseg.io.atomic import atomic_path, check_writable
from geoccseg.losses import confidence_levels
from geoccseg.io.bundle import resolve_model
from geoccseg.models import Bundle, load_bundle
from geoccseg.train import TrainConfig
from geoccseg.train.centreline import centreline_band

LEVELS = ("high", "low", "unreliable")
# distance bins (pixels) of wrong confident foreground labels to the nearest true foreground pixel
DISTANCE_BINS = (2, 3, 6, 21)  # < 2: touching a true pixel (diagonals included)


def thin_parts(mask: np.ndarray, max_half_width_px: float, min_area_px: int) -> np.ndarray:
    """The thin, not tiny, part of an (H, W) boolean mask: the mask minus its opening by a disk of
    radius ``max_half_width_px`` (computed exactly with two Euclidean distance transforms), minus
    8-connected pieces smaller than ``min_area_px`` pixels. The image border is not foreground."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    core = ndi.distance_transform_edt(padded) > max_half_width_px
    thin = padded & ~(ndi.distance_transform_edt(~core) <= max_half_width_px) if core.any() else padded
    thin = thin[1:-1, 1:-1]
    if min_area_px > 1 and thin.any():
        labels, n = ndi.label(thin, structure=np.ones((3, 3), dtype=bool))
        keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_area_px
        keep[0] = False
        thin = keep[labels]
    return thin


def diagnose(bundle: Bundle, pairs: Sequence[tuple[Path, Path]], tau_high: float, tau_high_fg: float, tau_low: float,
             shape: tuple[float, int] | None = None, centreline_px: float | None = None) -> dict:
    """Counts[level][true class][pseudo class] over the images (each predicted whole), and derived rates;
    the distances of wrong confident foreground labels to the truth; with ``shape`` = (R, min area),
    what a shape filter of the confident foreground keeps; with ``centreline_px``, what a band of
    that half-width around the confident foreground's skeleton keeps."""
    k = len(bundle.meta.classes) + 1
    counts = np.zeros((len(LEVELS), k, k), dtype=np.int64)
    taus = torch.tensor([tau_high] + [tau_high_fg] * (k - 1), dtype=torch.float64)
    far = np.zeros(len(DISTANCE_BINS) + 1, dtype=np.int64)  # wrong confident foreground, by distance bin
    far_by_image = {}
    kept = np.zeros((2, 2), dtype=np.int64)  # [kept, left out] x [wrong, right]
    band = np.zeros((2, 2), dtype=np.int64)  # the same for the centreline band
    for image_path, mask_path in pairs:
        probs = torch.from_numpy(predict_array(bundle, read_photo(image_path)))[None]
        truth = torch.from_numpy(read_whole_truth_mask(mask_path).astype(np.int64))  # binary masks: class 1 = foreground
        levels = confidence_levels(probs, taus, tau_low)
        for i, name in enumerate(LEVELS):
            sel = getattr(levels, name)[0]
            idx = truth[sel] * k + levels.pseudo[0][sel]
            counts[i] += np.bincount(idx.numpy(), minlength=k * k).reshape(k, k)
        confident_fg = (levels.high[0] & (levels.pseudo[0] > 0)).numpy()
        true_fg = truth.numpy() > 0
        wrong = confident_fg & ~true_fg
        if wrong.any():
            distance = ndi.distance_transform_edt(~true_fg) if true_fg.any() else np.full(true_fg.shape, np.inf)
            far += np.bincount(np.searchsorted(DISTANCE_BINS, distance[wrong], side="right"), minlength=len(far))
            far_by_image[Path(image_path).name] = int((distance[wrong] >= DISTANCE_BINS[-1]).sum())
        if shape is not None:
            _tally(kept, thin_parts(confident_fg, *shape), confident_fg, true_fg)
        if centreline_px is not None:
            _tally(band, centreline_band(confident_fg, centreline_px), confident_fg, true_fg)
    total = counts.sum()
    report = {"images": len(pairs), "levels": {}}
    for i, name in enumerate(LEVELS):
        c = counts[i]
        report["levels"][name] = {
            "pixel_share": float(c.sum() / total),
            "pseudo_precision": {str(p): float(c[p, p] / max(c[:, p].sum(), 1)) for p in range(k)},
            "share_of_true_class": {str(t): {str(p): float(c[t, p] / max(counts[:, t].sum(), 1)) for p in range(k)} for t in range(k)},
        }
    names = [f"<{DISTANCE_BINS[0]}"] + [f"[{lo}, {hi})" for lo, hi in zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:])] + [f">={DISTANCE_BINS[-1]}"]
    report["most_far_mistakes"] = sorted(far_by_image, key=far_by_image.get, reverse=True)[:3]
    report["wrong_foreground_by_distance_px"] = {name: float(n / max(far.sum(), 1)) for name, n in zip(names, far)}
    true_fg_pixels = max(counts[:, 1:, :].sum(), 1)
    if shape is not None:
        report["shape_filter"] = {"max_half_width_px": shape[0], "min_area_px": shape[1], **_kept_rates(kept, true_fg_pixels)}
    if centreline_px is not None:
        report["centreline_band"] = {"half_width_px": centreline_px, **_kept_rates(band, true_fg_pixels)}
    return report


def _tally(counts: np.ndarray, kept: np.ndarray, confident_fg: np.ndarray, true_fg: np.ndarray) -> None:
    """Add to [kept, left out] x [wrong, right] ``counts`` what a filter keeping ``kept`` of ``confident_fg`` does."""
    for j, part in enumerate((kept, confident_fg & ~kept)):
        counts[j] += [(part & ~true_fg).sum(), (part & true_fg).sum()]


def _kept_rates(kept: np.ndarray, true_fg_pixels: int) -> dict:
    """Rates of a filter of the confident foreground from its [kept, left out] x [wrong, right] counts."""
    return {
        "kept_share": float(kept[0].sum() / max(kept.sum(), 1)),
        "precision_kept": float(kept[0, 1] / max(kept[0].sum(), 1)),
        "precision_left_out": float(kept[1, 1] / max(kept[1].sum(), 1)),
        "true_foreground_kept": float(kept[0, 1] / true_fg_pixels),
    }


def draw_far_mistakes(bundle: Bundle, pairs: Sequence[tuple[Path, Path]], tau_high_fg: float, path: Path) -> None:
    """Each image beside its confident foreground labels coloured by how far they are from the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 5 * len(pairs)), squeeze=False)
    for (image_path, mask_path), (left, right) in zip(pairs, axes):
        image = read_photo(image_path)
        foreground = predict_array(bundle, image)[1:].max(0) >= tau_high_fg
        truth = read_whole_truth_mask(mask_path)
        distance = ndi.distance_transform_edt(~truth) if truth.any() else np.full(truth.shape, np.inf)
        rgb = np.moveaxis(image[:3], 0, -1).astype(np.float32)
        rgb = (rgb - rgb.min()) / max(float(np.ptp(rgb)), 1e-6)
        shown = rgb * 0.5
        shown[truth] = (0.0, 0.6, 1.0)  # true foreground the teacher does not claim
        shown[foreground & truth] = (0.0, 1.0, 0.0)
        shown[foreground & ~truth & (distance < DISTANCE_BINS[-2])] = (1.0, 1.0, 0.0)
        shown[foreground & ~truth & (distance >= DISTANCE_BINS[-2])] = (1.0, 0.0, 0.0)
        left.imshow(rgb)
        left.set_title(Path(image_path).name)
        right.imshow(shown)
        right.set_title(f"confident: right (green), < {DISTANCE_BINS[-2]} px off (yellow), farther (red); missed truth (blue)", fontsize=8)
        for ax in (left, right):
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=50, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "diagnose_pseudo_labels")


def _run(argv: Sequence[str] | None) -> int:
    d = TrainConfig(out="-", images="-", masks="-")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle folder, or a shipped model name")
    p.add_argument("--data", required=True, help="folder with images/ and masks/")
    p.add_argument("--exclude-labeled", action="store_true", help="leave out the images the bundle was trained with labels")
    p.add_argument("--split", type=Path, help="the benchmark's split.json: keep only its training images (the test and "
                   "select images were never unlabeled training data)")
    p.add_argument("--max-images", type=int, default=60)
    p.add_argument("--tau-high", type=float, default=d.tau_high)
    p.add_argument("--tau-high-fg", type=float, default=d.tau_high_fg)
    p.add_argument("--tau-low", type=float, default=d.tau_low)
    p.add_argument("--shape-half-width-px", type=float, help="also score a shape filter of the confident foreground: "
                   "foreground wider than 2 x this + 1 pixels is left out")
    p.add_argument("--shape-min-area-px", type=int, default=0, help="with --shape-half-width-px: also leave out thin pieces smaller than this")
    p.add_argument("--centreline-half-width-px", type=float, help="also score a centreline band of the confident "
                   "foreground: only what lies within this many pixels of its skeleton is kept")
    p.add_argument("--figure", type=Path, help="draw the 3 images with the most far mistakes here (.png or .jpg)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    for out, example in ((args.figure, "mistakes.png"), (args.json, "report.json")):  # before the work, not after it
        if out:
            check_writable(out, overwrite=True, example=example)
    bundle = load_bundle(resolve_model(args.bundle))
    pairs = read_pairs(args.data)
    if args.split:
        try:
            train_stems = set(json.loads(args.split.read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError):
            raise GeoccsegError(f"{args.split} is not a benchmark's split.json (with a \"train\" list)") from None
        pairs = {stem: pair for stem, pair in pairs.items() if stem in train_stems}
    if args.exclude_labeled:
        labeled = set(bundle.meta.training.get("data", {}).get("labeled") or [])
        pairs = {stem: pair for stem, pair in pairs.items() if stem not in labeled}
    images = [image for image, _ in pairs.values()]
    masks = {image.stem: mask for image, mask in pairs.values()}
    images = images[:: max(1, len(images) // args.max_images)][: args.max_images]
    shape = None if args.shape_half_width_px is None else (args.shape_half_width_px, args.shape_min_area_px)
    report = diagnose(bundle, [(i, masks[i.stem]) for i in images], args.tau_high, args.tau_high_fg, args.tau_low, shape,
                      args.centreline_half_width_px)
    print(f"{report['images']} images")
    print("level       | pixels | precision bg / fg | true fg → bg / fg pseudo-label | true bg → bg / fg")
    for name, r in report["levels"].items():
        fg, bg = r["share_of_true_class"]["1"], r["share_of_true_class"]["0"]
        print(f"{name:<11} | {r['pixel_share']:.3f}  | {r['pseudo_precision']['0']:.3f} / {r['pseudo_precision']['1']:.3f}   "
              f"| {fg['0']:.3f} / {fg['1']:.3f}                  | {bg['0']:.3f} / {bg['1']:.3f}")
    print("wrong confident foreground by distance to the nearest true foreground pixel: "
          + ", ".join(f"{k} px {v:.3f}" for k, v in report["wrong_foreground_by_distance_px"].items()))
    if shape is not None:
        f = report["shape_filter"]
        print(f"shape filter (R {f['max_half_width_px']:g} px, min area {f['min_area_px']} px): keeps {f['kept_share']:.3f} of the "
              f"confident foreground, precision {f['precision_kept']:.3f} kept / {f['precision_left_out']:.3f} left out, "
              f"true foreground kept {f['true_foreground_kept']:.3f}")
    if args.centreline_half_width_px is not None:
        f = report["centreline_band"]
        print(f"centreline band (R {f['half_width_px']:g} px): keeps {f['kept_share']:.3f} of the confident foreground, precision "
              f"{f['precision_kept']:.3f} kept / {f['precision_left_out']:.3f} left out, true foreground kept {f['true_foreground_kept']:.3f}")
    if args.figure and not report["most_far_mistakes"]:
        print(f"no confident foreground label is wrong on these images: no figure written to {args.figure}")
    elif args.figure:
        by_name = {i.name: i for i in images}
        chosen = [(by_name[n], masks[by_name[n].stem]) for n in report["most_far_mistakes"]]
        draw_far_mistakes(bundle, chosen, args.tau_high_fg, args.figure)
    if args.json:
        report["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}  # what was run
        report["stems"] = sorted(i.stem for i in images)
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
