#!/usr/bin/env python
"""Label part of a scene, map the rest: how many labels a user needs on their own imagery.

The shipped road model was trained on Massachusetts and carries over poorly to other regions (on
the Las Vegas sample it finds a tenth of the roads). This benchmark measures the remedy a user has: digitise
the roads of one strip of their scene, train, and let the model map the rest of it. Run from the
repository root::

    python pipelines/benchmark_own_scene.py --out ../bench/own-scene

**Split.** The labeled AOI is the western ``--fractions`` share of the scene (a full-height strip);
the truth centrelines inside it are the training labels (``--aoi`` of ``geoccseg train``, so every
road there is labeled). The rest of the scene is scored: the predicted lines and the truth are
clipped to it, and completeness, correctness and quality (buffer ``--buffer-m``) compare them.

**Arms** (:data:`ARMS`), same steps, tile, batch and labels:

    scratch_sup    supervised only, from train's default start: today an ImageNet-pretrained
                   EfficientNet-Lite0 encoder (the README's table of 2026-11: the light network
                   from random weights); each record names its encoder and start
    scratch_full   the method (pseudo-labels + confidence-level contrastive on the unlabeled rest)
    tuned_sup      supervised only, fine-tuned from the shipped road model (``--init-from road``)
    tuned_full     the method, fine-tuned from the shipped road model
    shipped        the shipped road model as it is (no training: the demo)

Training runs at the road model's 1 m pixels (the sample is 0.3 m) with 128-px chips.

**Outputs** in ``--out``: ``results.json`` (one record per run, rewritten after each; ``--resume``
skips those it holds), ``results.md`` (mean ± std over seeds), ``lines.png`` (truth and predicted
lines of the first seed of each arm over the scene, at the first fraction) and ``runs/<run>/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geoccseg.benchmark import load_records, mean_std, quiet_lightning, write_json  # noqa: E402
from geoccseg.benchmark.design import RECORDED, data_root  # noqa: E402
from geoccseg.benchmark.runs import continue_or_clear, one_line_errors  # noqa: E402
from geoccseg.train.callbacks import run_finished  # noqa: E402
from geoccseg.io.catalog import sample_scene  # noqa: E402
from geoccseg.errors import GeoccsegError  # noqa: E402
from geoccseg.evaluate import clipped, score_rest, strips  # noqa: E402
from geoccseg.evaluate.files import read_lines  # noqa: E402
from geoccseg.inference import PredictOptions, run_predict  # noqa: E402
from geoccseg.io.atomic import atomic_path  # noqa: E402
from geoccseg.io.display import read_display  # noqa: E402
from geoccseg.io.bundle import bundle_stamp, resolve_model  # noqa: E402
from geoccseg.io.vector_write import write_vectors  # noqa: E402
from geoccseg.models import load_bundle  # noqa: E402
from geoccseg.train import TrainConfig, train  # noqa: E402

DATA = data_root(Path(__file__).resolve().parents[1])

#: Arm name → TrainConfig fields (None: the shipped road model, not trained).
# the method's arms keep the settings they were recorded with (RECORDED: no centreline band, the default since)
ARMS: dict[str, dict | None] = {
    "scratch_sup": {"pseudo": False, "contrastive": False},
    "scratch_full": {**RECORDED},
    "tuned_sup": {"init_from": "road", "pseudo": False, "contrastive": False},
    "tuned_full": {"init_from": "road", **RECORDED},
    "shipped": None,
}
#: Arms that use the shipped road model (their records name it: ``road_model``, its bundle stamp).
SHIPPED_ARMS = ("tuned_sup", "tuned_full", "shipped")
#: Learning rate when fine-tuning (the pretrained weights need smaller steps than random ones).
TUNE_LR = 1e-3


def run_name(arm: str, fraction: float, seed: int) -> str:
    """Folder and record name of a run, e.g. ``scratch_full_0.4_s0``."""
    return f"{arm}_{fraction:g}_s{seed}"


def run_one(arm: str, fraction: float, seed: int, steps: int, scene: Path, truth: Path, out: Path, buffer_m: float) -> dict:
    """Train one arm on the labeled strip (unless ``shipped``), map the scene and score the rest."""
    split = strips(scene, fraction)
    crs, aoi, rest = split
    name = run_name(arm, fraction, seed)
    folder = out / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    truth_lines = gpd.read_file(truth).to_crs(crs)
    write_vectors({"aoi": gpd.GeoDataFrame(geometry=[aoi], crs=crs)}, folder / "aoi.gpkg", overwrite=True)  # a rerun writes it again
    start = time.perf_counter()
    model, steps_done, resumed_from, start_weights = folder / "model", 0, None, None
    if ARMS[arm] is None:
        model = "road"
    else:
        settings = dict(ARMS[arm])
        config = TrainConfig(
            out=str(model), scenes=[str(scene)], labels=str(truth), aoi=str(folder / "aoi.gpkg"),
            pixel_size_m=1.0, width_m=8.0, tile_px=128, batch_size=4, unlabeled_batch_size=4, max_steps=steps,
            val_every=steps, seed=seed, lr=TUNE_LR if "init_from" in settings else TrainConfig.lr, progress=False, **settings,
        )
        start_weights = ("the shipped road model" if config.init_from else
                         f"{config.encoder}, {'ImageNet' if config.use_pretrained else 'random'} weights")
        resumed = continue_or_clear(model, config)
        if not run_finished(model):  # new, or stopped: an interrupted run's bundle is not scored as finished
            resumed_from = resumed
            train(replace(config, resume=resumed is not None))
        steps_done = load_bundle(model).meta.training.get("steps")
    train_seconds = time.perf_counter() - start
    pred = folder / "lines.gpkg"
    run_predict(scene, pred, model=model, options=PredictOptions(device="cpu"), overwrite=True, progress=False)
    scores = score_rest(read_lines(pred, "PRED"), truth_lines, split, buffer_m)
    return {
        "run": name, "arm": arm, "labeled_fraction": fraction, "seed": seed, "max_steps": steps, "steps": steps_done,
        "start": start_weights,  # what training started from (records before 2026-12-07 hold none: light network, random weights)
        "train_seconds": round(train_seconds, 1),  # of this invocation: the resumed part only after a stop
        **({"resumed_from_step": resumed_from} if resumed_from is not None else {}),
        **({"road_model": bundle_stamp(resolve_model("road"))} if arm in SHIPPED_ARMS else {}), "labeled_lines": len(clipped(truth_lines, aoi)),
        "scored_lines": len(clipped(truth_lines, rest)), "buffer_m": buffer_m, "scene": str(Path(scene).resolve()),
        "truth": str(Path(truth).resolve()),
        "completeness": scores.completeness, "correctness": scores.correctness, "quality": scores.quality,
        "predicted_km": scores.pred_total_m / 1000,
    }


def check_resume(records: Sequence[dict], arms: Sequence[str], steps: int, buffer_m: float, scene: Path, truth: Path) -> None:
    """Refuse to add runs to records of other settings: another ``--scene`` or ``--truth``, another
    ``--steps`` or ``--buffer-m``, or another shipped road model under the arms that start from it
    (records before December 2026 name none: the model of 2026-11).

    Raises:
        GeoccsegError: a record of other settings.
    """
    road = bundle_stamp(resolve_model("road")) if set(arms) & set(SHIPPED_ARMS) else None
    where = (str(Path(scene).resolve()), str(Path(truth).resolve()))
    for r in records:
        if "scene" not in r:
            raise GeoccsegError(f"{r['run']} was recorded before records named their scene and truth: choose another --out")
        if (r.get("scene"), r.get("truth")) != where:
            raise GeoccsegError(f"{r['run']} was run on scene {r['scene']} with truth {r.get('truth')}, "
                                f"not {where[0]} with {where[1]}; choose another --out")
        if r.get("buffer_m") != buffer_m:
            raise GeoccsegError(f"{r['run']} was scored with a {r.get('buffer_m')} m buffer, not {buffer_m}; choose another --out")
        if r["arm"] != "shipped" and r.get("max_steps", r["steps"]) != steps:
            raise GeoccsegError(f"{r['run']} was trained {r.get('max_steps', r['steps'])} steps, not {steps}; choose another --out")
        if road is not None and r["arm"] in SHIPPED_ARMS and r.get("road_model") != road:
            raise GeoccsegError(f"{r['run']} started from another shipped road model than today's; its rows would mix with "
                                "the new ones: choose another --out")


def has_run(records: Sequence[dict], arm: str, fraction: float, seed: int) -> bool:
    """Whether ``records`` hold this run; the shipped model is not trained, so they hold its run at
    ``fraction`` whatever the seed (one row of it per fraction, not one per seed)."""
    if arm == "shipped":
        return any(r["arm"] == "shipped" and r["labeled_fraction"] == fraction for r in records)
    return any(r["run"] == run_name(arm, fraction, seed) for r in records)


def summarise(records: Sequence[dict]) -> str:
    """Markdown table: mean ± sample std over seeds per (fraction, arm)."""
    lines = ["| labeled strip | labeled lines | arm | seeds | completeness | correctness | quality | train minutes |",
             "|---|---|---|---|---|---|---|---|"]

    for fraction in sorted({r["labeled_fraction"] for r in records}):
        for arm in ARMS:
            rs = [r for r in records if r["arm"] == arm and r["labeled_fraction"] == fraction]
            if rs:
                lines.append(
                    f"| {fraction:.0%} | {rs[0]['labeled_lines']} | {arm} | {len(rs)} | {mean_std([r['completeness'] for r in rs])} | "
                    f"{mean_std([r['correctness'] for r in rs])} | {mean_std([r['quality'] for r in rs])} | "
                    f"{np.mean([r['train_seconds'] for r in rs]) / 60:.1f} |"
                )
    return "\n".join(lines) + "\n"


def plot_lines(records: Sequence[dict], scene: Path, truth: Path, out: Path) -> None:
    """One panel per arm (first seed, first fraction): image, truth lines (cyan), predicted lines (red)."""
    fraction = min(r["labeled_fraction"] for r in records)
    runs = [min((r for r in records if r["arm"] == arm and r["labeled_fraction"] == fraction), key=lambda r: r["seed"])
            for arm in ARMS if any(r["arm"] == arm and r["labeled_fraction"] == fraction for r in records)]
    shown = read_display(scene)  # one band (panchromatic): shown grey; uint16 stretched
    extent, crs, aspect = shown.extent, shown.crs, shown.aspect
    _, aoi, _ = strips(scene, fraction)
    truth_lines = gpd.read_file(truth).to_crs(crs)
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.6), squeeze=False)
    for ax, r in zip(axes[0], runs):
        ax.imshow(shown.image, extent=extent, cmap=shown.cmap)
        truth_lines.plot(ax=ax, color="cyan", linewidth=0.8)
        pred = out / "runs" / r["run"] / "lines.gpkg"
        layers = gpd.list_layers(pred)["name"].tolist()
        lines = gpd.read_file(pred, layer=layers[0])
        if len(lines):
            lines.plot(ax=ax, color="#ff2d2d", linewidth=1.4)
        gpd.GeoSeries([aoi], crs=crs).boundary.plot(ax=ax, color="yellow", linewidth=1.2)
        ax.set_title(f"{r['arm']}: completeness {r['completeness']:.2f}, correctness {r['correctness']:.2f}", fontsize=8)
        ax.set_aspect(aspect)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle(f"labels inside the yellow strip ({fraction:.0%} of the scene); truth cyan, predicted red; scored east of the strip", fontsize=9)
    fig.tight_layout()
    with atomic_path(out / "lines.png", overwrite=True) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_own_scene")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=Path, default=sample_scene(), help="GeoTIFF scene (default: the shipped sample)")
    p.add_argument("--truth", type=Path, default=DATA / "spacenet-vegas" / "vegas_img0_roads.geojson", help="truth road centrelines")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.4], help="labeled western strip, share of the scene width")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--buffer-m", type=float, default=5.0)
    p.add_argument("--resume", action="store_true", help="keep out/results.json and skip its runs")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    quiet_lightning()
    results = args.out / "results.json"
    if results.exists() and not args.resume:
        raise GeoccsegError(f"{results} exists; pass --resume to continue it or choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    records = load_records(results)
    check_resume(records, args.arms, args.steps, args.buffer_m, args.scene, args.truth)
    for fraction in args.fractions:
        for seed in args.seeds:
            for arm in args.arms:
                if has_run(records, arm, fraction, seed):
                    continue
                record = run_one(arm, fraction, seed, args.steps, args.scene, args.truth, args.out, args.buffer_m)
                records.append(record)
                print(f"{record['run']}: completeness {record['completeness']:.3f}, correctness {record['correctness']:.3f}, "
                      f"quality {record['quality']:.3f} ({record['train_seconds'] / 60:.1f} min)", flush=True)
                write_json(results, records)
    with atomic_path(args.out / "results.md", overwrite=True) as tmp:
        tmp.write_text(summarise(records))
    plot_lines(records, args.scene, args.truth, args.out)
    print(summarise(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
