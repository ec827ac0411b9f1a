#!/usr/bin/env python
"""Which of the sample's roads a road model finds: streets against car-park aisles.

The shipped road model is scored on the SpaceNet sample's 38 truth centrelines (issue 14's
transfer test). SpaceNet types 36 of them "unclassified, one lane" and two "primary" (the
boulevard), which does not tell the streets from the aisles and drives inside the car parks. This
script splits the truth by :data:`STREETS`, the ``road_id`` of every centreline that runs on a
street (the boulevard, the access road through the middle, the connectors between them and the
southern road), chosen by looking at the image with the numbered lines drawn (``lines.jpg``
draws them again); every other centreline lies inside a car park. It predicts the sample with the
model (``geoccseg predict`` at its defaults) and reports completeness and correctness (5 m
buffer) for each kind and for all::

    python pipelines/diagnose_road_transfer.py --out ../bench/road-transfer

Outputs in ``--out``: ``results.json``, ``results.md`` and ``lines.jpg`` (the sample with the
street truth in yellow, the car-park truth in cyan and the model's lines in red).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from geoccseg.benchmark.machine import machine  # noqa: E402
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_results  # noqa: E402
from geoccseg.evaluate.centerline import line_counts  # noqa: E402
from geoccseg.inference import PredictOptions, run_predict  # noqa: E402
from geoccseg.errors import GeoccsegError  # noqa: E402
from geoccseg.io.atomic import atomic_path  # noqa: E402
from geoccseg.io.bundle import read_bundle, resolve_model  # noqa: E402
from geoccseg.io.catalog import sample_roads, sample_scene  # noqa: E402
from geoccseg.io.display import read_display  # noqa: E402

#: ``road_id`` of the sample's centrelines that run on streets: the boulevard's two carriageways
#: (23285, 21419) and its connector (20520), the access road through the middle (22930), the
#: north-south connectors (21939, 9558, 7014, 11468, 17210) and the southern road (19314).
STREETS = frozenset({23285, 21419, 20520, 22930, 21939, 9558, 7014, 11468, 17210, 19314})
BUFFER_M = 5.0


def scores(lines: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict:
    """Completeness and correctness of ``lines`` against all of ``truth`` and each kind of it."""
    street = truth["road_id"].astype(int).isin(STREETS)
    result = {}
    for kind, part in (("all", truth), ("streets", truth[street]), ("car parks", truth[~street])):
        counts = line_counts(lines, part, BUFFER_M)
        result[kind] = {"centrelines": len(part), "truth_km": round(counts.truth_total_m / 1000, 3),
                        "completeness": round(counts.completeness, 3), "correctness": round(counts.correctness, 3),
                        "predicted_km_near": round(counts.pred_matched_m / 1000, 3)}
    return result


def table(result: dict) -> str:
    lines = [f"Model {result['model']}, the SpaceNet sample, {BUFFER_M:g} m buffer (correctness: the share of the "
             "model's lines near that kind of truth).", "",
             "| truth | centrelines | length (km) | share of the length | completeness | correctness |", "|---|---:|---:|---:|---:|---:|"]
    total = result["scores"]["all"]["truth_km"]
    for kind, s in result["scores"].items():
        lines.append(f"| {kind} | {s['centrelines']} | {s['truth_km']:.2f} | {s['truth_km'] / total:.0%} | "
                     f"{s['completeness']:.2f} | {s['correctness']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(lines: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, dest: Path) -> None:
    """The sample with the street truth (yellow), the car-park truth (cyan), the model's lines (red)."""
    shown = read_display(sample_scene())
    extent = shown.extent
    truth, lines = truth.to_crs(shown.crs), lines.to_crs(shown.crs)
    street = truth["road_id"].astype(int).isin(STREETS)
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.imshow(shown.image, extent=extent)
    ax.set_aspect(shown.aspect)
    truth[~street].plot(ax=ax, color="cyan", linewidth=1.2)
    truth[street].plot(ax=ax, color="yellow", linewidth=2)
    lines.plot(ax=ax, color="red", linewidth=1.2)
    for _, row in truth.iterrows():
        at = row.geometry.interpolate(0.5, normalized=True)
        ax.annotate(str(row["road_id"]), (at.x, at.y), color="white", fontsize=6)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("truth: streets (yellow), car parks (cyan); the model's lines (red)")
    fig.tight_layout()
    with atomic_path(dest, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="jpg", pil_kwargs={"quality": 85})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "diagnose_road_transfer")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", default="road", help="a bundle folder or a shipped model's name (default road)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and lines.jpg")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    args = parser.parse_args(argv)
    if "road" not in read_bundle(resolve_model(args.model)).meta.classes:
        raise GeoccsegError(f"model {args.model} has no road class; give a road model")
    claim_results(args.out, args.overwrite)
    truth = gpd.read_file(sample_roads())
    with tempfile.TemporaryDirectory(prefix="geoccseg-road-transfer-") as tmp:
        lines_path = Path(tmp) / "roads.gpkg"
        run_predict(sample_scene(), lines_path, model=args.model, options=PredictOptions(), progress=False)
        lines = gpd.read_file(lines_path, layer="road")
    result = {"model": str(args.model), "machine": machine(), "buffer_m": BUFFER_M, "streets": sorted(STREETS),
              "scores": scores(lines, truth), "lines": len(lines)}
    save_results(args.out, result, table(result))
    plot(lines, truth, args.out / "lines.jpg")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
