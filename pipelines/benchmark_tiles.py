#!/usr/bin/env python
"""How prediction's chip size and overlap change held-out quality and the forward pass's cost.

A fully convolutional network predicts on chips of any size; ``geoccseg predict`` cuts a scene
into chips of ``--tile-px`` blended over ``--overlap-px``. Bigger chips and smaller overlaps
recompute fewer pixels (``chip pixels / scene pixels``, the ``cost`` column, measured on the chip
grid of an 8192-px scene), but each pixel is then averaged over fewer chips and sees a chip edge
at another distance, which can change the probabilities. This predicts the shipped models'
held-out images with each setting through :func:`geoccseg.inference.array.predict_array` (the
chip grid, blending and engine of ``geoccseg predict``) and scores them
(:class:`geoccseg.evaluate.PixelScorer`, micro-averaged pixel F1 at 0.5 and at the model's own
threshold):

* ``road``: Massachusetts and Dubai *select* and *test* images
  (the held-out parts each model records: :func:`geoccseg.benchmark.split.recorded_splits`; Massachusetts crops are 400 px,
  Dubai photos about 2149 x 1480 px);
* ``crack``: DeepCrack select and test photos (544 x 384 px).

Settings are chosen on the select images; the test images confirm. ``upper bound`` is the largest
end-to-end / forward-limit ratio of ``pipelines/benchmark_predict.py`` the setting allows
(1 / cost). Run::

    python pipelines/benchmark_tiles.py --out pipelines/results/tiles --overwrite
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geoccseg.benchmark.design import data_root
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_partial, save_results
from geoccseg.benchmark.score import score_thresholds
from geoccseg.benchmark.split import SHIPPED_SOURCES, recorded_splits
from geoccseg.inference.array import predict_array
from geoccseg.inference.blend import ChipGrid
from geoccseg.io.bundle import resolve_model
from geoccseg.models import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root(ROOT)

SETTINGS = ((256, 64), (512, 64), (512, 32), (768, 64), (1024, 64), (1024, 32))
"""(tile px, overlap px) measured by default: the first default (256, 64), the previous one
(512, 64) and today's (512, :data:`~geoccseg.inference.choices.DEFAULT_OVERLAP_PX` = 32)."""

COST_SCENE_PX = 8192
"""Edge of the square scene whose chip grid gives the ``cost`` column."""


def cost(tile_px: int, overlap_px: int, size_px: int = COST_SCENE_PX) -> float:
    """Chip pixels the forward pass computes per scene pixel on a ``size_px`` square (edge chips cut)."""
    grid = ChipGrid.create(size_px, size_px, tile_px, overlap_px, block_px=size_px)
    chips = [grid.chip_shape(r, c) for block in grid.blocks() for r, c in block.chips]
    return sum(h * w for h, w in chips) / size_px**2


def score(bundle, pairs: dict, tile_px: int, overlap_px: int) -> dict:
    """Pixel F1 of the pairs at 0.5 and at the model's threshold, each image predicted once with the setting."""
    thresholds = {"0.5": 0.5, "model": bundle.meta.threshold or 0.5}
    scores = score_thresholds(pairs, tuple(thresholds.values()), lambda stem, image, valid: predict_array(
        bundle, image, valid, tile_px=tile_px, overlap_px=overlap_px, batch_size=1)[1:].sum(0), bands=len(bundle.meta.bands))
    out = {"threshold": round(float(thresholds["model"]), 3)}
    for name, result in zip(thresholds, scores):
        out[f"f1@{name}"] = round(result.pixels.f1, 4)
    return out


COLUMNS = ("f1@0.5", "f1@model")
"""Scores in the table (``model``: at the model's own threshold, ``threshold`` in results.json)."""


def table(rows: list[dict]) -> str:
    lines = ["| model | set | tile | overlap | cost | upper bound | F1 @0.5 | F1 @model threshold |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r['scores'][k]:.4f}" for k in COLUMNS]
        lines.append(f"| {r['model']} | {r['set']} | {r['tile_px']} | {r['overlap_px']} | {r['cost']:.3f} | {1 / r['cost']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_tiles")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["road", "crack"], help="shipped models (default road crack)")
    parser.add_argument("--settings", nargs="+", default=[f"{t}/{o}" for t, o in SETTINGS],
                        help="TILE/OVERLAP pairs in pixels (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    args = parser.parse_args(argv)
    settings = [tuple(int(v) for v in s.split("/")) for s in args.settings]
    costs = {setting: cost(*setting) for setting in settings}
    claim_results(args.out, args.overwrite)
    rows = []
    for name in args.models:
        bundle = load_bundle(resolve_model(name))
        for source, parts in recorded_splits(bundle.meta.training, SHIPPED_SOURCES[name], DATA).items():
            for part in ("select", "test"):
                for tile_px, overlap_px in settings:
                    start = time.perf_counter()
                    scores = score(bundle, parts[part], tile_px, overlap_px)
                    rows.append({"model": name, "set": f"{source} {part}", "n_images": len(parts[part]), "tile_px": tile_px,
                                 "overlap_px": overlap_px, "cost": costs[tile_px, overlap_px], "scores": scores,
                                 "seconds": round(time.perf_counter() - start, 1)})
                    print(json.dumps(rows[-1]), flush=True)
                    save_partial(args.out, {"machine": machine(), "rows": rows})
    save_results(args.out, {"machine": machine(), "rows": rows}, table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
