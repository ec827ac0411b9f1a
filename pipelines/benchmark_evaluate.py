#!/usr/bin/env python
"""Peak memory of ``geoccseg evaluate`` against the size of the rasters it scores: the figure
behind :data:`geoccseg.evaluate.files.SCORING_BYTES_PER_PX` (``evaluate`` reads each raster of a
pair whole, and refuses one whose estimated peak is above the free memory).

Run from the repository root, e.g.::

    python pipelines/benchmark_evaluate.py --sizes 2048 4096 8192 --out bench/evaluate

Each size is a pair of GeoTIFFs made by mirror-tiling the SpaceNet sample's road mask (1300 px,
placed on a 1 m grid in UTM zone 11N): TRUTH is the mask (0/255), PRED a uint8 probability raster
(tagged as ``geoccseg predict`` tags its COG) made from the mask blurred and shifted by 2 px, so
that every metric has work to do. ``geoccseg evaluate PRED TRUTH --json`` runs in its own process,
once with the road-graph metrics (the default) and once with ``--no-graph-metrics``; the peak is
that process's ``ru_maxrss``. Bytes per pixel: the slope of the peak between the two largest
sizes (the imports' memory cancels; at small sizes the peak is the imports', so the smallest sizes
understate it), and the largest size's peak over its pixels. Writes ``results.json`` and
``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_results
from geoccseg.io.probability import PROBABILITY_TAG

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MASK = "spacenet-vegas/vegas_pan_roadmask.tif"
CHILD = (
    "import resource, sys\n"
    "from geoccseg.cli import cli\n"
    "try:\n"
    "    cli.main(args=sys.argv[1:], prog_name='geoccseg', standalone_mode=False)\n"
    "finally:\n"
    "    print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def make_pair(mask: np.ndarray, size: int, folder: Path) -> tuple[Path, Path]:
    """TRUTH and PRED GeoTIFFs of ``size`` x ``size`` px mirror-tiled from ``mask`` (0/255)."""
    truth = np.pad(mask, ((0, size - mask.shape[0]), (0, size - mask.shape[1])), mode="symmetric")[:size, :size]
    pred = ndimage.gaussian_filter(np.roll(truth, 2, axis=1).astype(np.float32), 2.0)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "crs": "EPSG:32611",
               "transform": Affine(1.0, 0, 500000, 0, -1.0, 4000000), "tiled": True, "compress": "deflate"}
    paths = folder / f"truth{size}.tif", folder / f"pred{size}.tif"
    for path, array, tags in ((paths[0], truth, {}), (paths[1], np.round(pred).astype(np.uint8), {PROBABILITY_TAG: "uint8"})):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
            dst.update_tags(**tags)
    return paths


def measure(pred: Path, truth: Path, graphs: bool, out: Path) -> dict:
    """Run ``geoccseg evaluate`` in its own process: wall seconds and peak RSS (MB)."""
    command = [sys.executable, "-c", CHILD, "evaluate", str(pred), str(truth), "--json", str(out)]
    if not graphs:
        command.append("--no-graph-metrics")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed ({done.returncode}): {done.stderr.strip().splitlines()[-2:]}")
    (kb,) = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("maxrss_kb ")]
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(kb / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_evaluate")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192], help="square sizes (px), at least two")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (holds the SpaceNet sample's mask)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the rasters and the results")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    if len(sizes) < 2:
        parser.error("give at least two --sizes")
    claim_results(args.out, args.overwrite)
    with rasterio.open(args.data / MASK) as src:
        mask = np.where(src.read(1) > 0, 255, 0).astype(np.uint8)
    rows = []
    for size in sizes:
        truth, pred = make_pair(mask, size, args.out)
        for graphs in (True, False):
            row = {"size": size, "graphs": graphs, **measure(pred, truth, graphs, args.out / f"scores{size}.json")}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (truth.parent / f"scores{size}.json").unlink(missing_ok=True)
        truth.unlink()
        pred.unlink()
    slopes = {}
    for graphs in (True, False):
        small, large = ([r for r in rows if r["graphs"] == graphs and r["size"] == s][0] for s in (sizes[-2], sizes[-1]))
        slopes["with graphs" if graphs else "pixel metrics only"] = {
            "slope_bytes_per_px": round((large["peak_rss_mb"] - small["peak_rss_mb"]) * 2**20 / (sizes[-1] ** 2 - sizes[-2] ** 2), 1),
            "peak_bytes_per_px_at_largest": round(large["peak_rss_mb"] * 2**20 / sizes[-1] ** 2, 1),
        }
    lines = ["| size (px) | graph metrics | wall (s) | peak RSS (MB) |", "|---:|:---|---:|---:|"]
    lines += [f"| {r['size']} | {'yes' if r['graphs'] else 'no'} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    lines += ["", *(f"- {name}: {v['slope_bytes_per_px']} bytes per pixel between {sizes[-2]} and {sizes[-1]} px "
                    f"({v['peak_bytes_per_px_at_largest']} at {sizes[-1]} px, imports included)" for name, v in slopes.items())]
    save_results(args.out, {"machine": machine(), "rows": rows, "bytes_per_px": slopes}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
