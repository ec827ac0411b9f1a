#!/usr/bin/env python
"""Where to label next, measured: squares chosen by ``geoccseg suggest`` against random squares.

The loop of ``notebooks/04_active_labeling.ipynb`` (:func:`geoccseg.suggest.loop.active_labeling`)
with a larger budget: the western ``--first-fraction`` of the sample scene is labeled (its true
centrelines), the method trains ``--steps`` steps, and each of ``--rounds`` rounds adds
``--per-round`` squares of ``--size-m`` metres, labeled from the truth, then trains again. Squares
are chosen by the acquisition score, by embedding clusters (``coverage``, TypiClust's rule) or at
random among the same candidates; ``--strategies`` picks the suggesting ones. Each of ``--seeds``
runs every strategy: the seed trains the first strip (round 0, shared by the seed's runs) and every
later round, and seeds the clustering and the random draws, so strategies are compared paired by
seed and the spread over seeds includes the noise of training.

``--photo`` and ``--mask`` run it on a larger scene instead: a road photo and its mask (e.g. a
Dubai image of ``../shared/data/dubai-roads``, about 2 x 1.5 km at 1 m), made into a GeoTIFF on a
nominal grid and centrelines vectorised from the mask (:func:`geoccseg.benchmark.truth_scene.photo_scene`,
written to ``RUNS/scene``). The sample leaves only a few disjoint squares outside its strip, so
every strategy labels much the same ground there.

Each round is scored on two regions (completeness, correctness, quality within ``--buffer-m``):
the run's own unlabeled rest (what its user gets mapped), and the part of the scene that no run
labeled by that round (the same pixels for every run). Run from the repository root::

    python pipelines/benchmark_suggest.py --out pipelines/results/suggest --runs ../bench/suggest --overwrite
    python pipelines/benchmark_suggest.py --photo ../shared/data/dubai-roads/images/dubai_t8_003.jpg \
        --mask ../shared/data/dubai-roads/masks/dubai_t8_003.png --first-fraction 0.1 --per-round 4 \
        --size-m 128 --rounds 3 --steps 300 --out pipelines/results/suggest-dubai --runs ../bench/suggest-dubai \
        --overwrite

Outputs in ``--out``: ``results.json`` (one record per run and round), ``results.md`` (the table),
``quality.png`` (quality and completeness against labeled share), ``squares.jpg`` (where the first
run of each strategy labeled, over the scene and its truth); the runs (AOIs, labels, models,
lines; large, not meant to be kept) go to ``--runs``, where a finished round is read back: the
same command again with ``--overwrite`` continues a stopped benchmark or redraws its tables and
figures (without it, an ``--out`` holding results is refused).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402

from geoccseg.benchmark import load_records, mean_std, quiet_lightning  # noqa: E402
from geoccseg.benchmark.design import RECORDED  # noqa: E402
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_results  # noqa: E402
from geoccseg.benchmark.truth_scene import photo_scene  # noqa: E402
from geoccseg.io.catalog import sample_roads, sample_scene  # noqa: E402
from geoccseg.inference import PredictOptions  # noqa: E402
from geoccseg.io.atomic import atomic_path  # noqa: E402
from geoccseg.io.display import read_display  # noqa: E402
from geoccseg.suggest.loop import active_labeling, score_round_on, unlabeled_by_all  # noqa: E402


def train_settings(steps: int) -> dict:
    """TrainConfig fields of every round: the notebook's, with ``steps`` steps (the method, 64-px chips at 1 m,
    with the settings it was recorded with, :data:`~geoccseg.benchmark.design.RECORDED`)."""
    return dict(pixel_size_m=1.0, width_m=8.0, tile_px=64, batch_size=4, unlabeled_batch_size=4, max_steps=steps, val_every=steps,
                unlabeled_start_steps=min(50, steps // 3), rampup_steps=min(200, steps // 2), **RECORDED)


STRATEGIES = ("acquisition", "coverage")
"""The suggesting strategies the benchmark can run beside ``random`` (:data:`geoccseg.suggest.STRATEGIES`)."""


def run_names(strategies: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, str, int]]:
    """(run name, strategy, seed) of every run, ``<strategy>_s<seed>``: for each seed, each strategy
    and ``random``, in that order (the seed's first run trains the round 0 its other runs share)."""
    return [(f"{strategy}_s{seed}", strategy, seed) for seed in seeds for strategy in [*strategies, "random"]]


def run(args: argparse.Namespace) -> list[dict]:
    """Every run of the benchmark, scored on its own rest and on the rest no run labeled."""
    loop = dict(train_settings=train_settings(args.steps), rounds=args.rounds, per_round=args.per_round, size_m=args.size_m,
                first_fraction=args.first_fraction, buffer_m=args.buffer_m, options=PredictOptions(device="cpu"))
    runs: dict[str, list] = {}
    seed_of: dict[str, int] = {}
    starts: dict[int, object] = {}  # each seed's round 0, trained by its first run
    for name, strategy, seed in run_names(args.strategies, args.seeds):
        seed_of[name] = seed
        runs[name] = active_labeling(args.scene, args.truth, args.runs / name, strategy=strategy, seed=seed, train_seed=seed,
                                     start=starts.get(seed), **loop)
        starts.setdefault(seed, runs[name][0])
    records = []
    for k in range(args.rounds + 1):
        common = unlabeled_by_all(args.scene, [rounds[k] for rounds in runs.values()])
        for name, rounds in runs.items():
            on_common = score_round_on(args.scene, args.truth, rounds[k], common, args.buffer_m)
            records.append(asdict(rounds[k]) | {
                "run": name, "train_seed": seed_of[name], "scene": args.scene.stem if args.photo is None else args.photo.stem, "steps": args.steps,
                "size_m": args.size_m, "per_round": args.per_round, "buffer_m": args.buffer_m,
                "common_completeness": on_common.completeness, "common_correctness": on_common.correctness,
                "common_quality": on_common.quality, "common_truth_km": on_common.truth_total_m / 1000,
            })
    return records


def strategy_of(run: str) -> str:
    """The strategy of a run, from its name (the part before ``_s<seed>``; round 0's records say
    ``strip`` in their ``strategy`` field); the first measurement named its acquisition run ``suggested``."""
    name = run.rsplit("_s", 1)[0]
    return "acquisition" if name == "suggested" else name


def summarise(records: Sequence[dict]) -> str:
    """Markdown table: round 0 (mean ± std over the first strips: one per seed), then per round and
    strategy the scores on the own rest and on the common rest (mean ± std over the strategy's runs),
    and the kilometres of true centreline in the common rest; then :func:`paired`."""
    lines = ["| round | strategy | runs | labeled share | own rest: completeness | correctness | quality "
             "| common rest: completeness | correctness | quality | common rest (km) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    firsts = {r["folder"]: r for r in records if r["round"] == 0}  # one per seed, shared by the seed's runs
    rows = [(0, "first strip", list(firsts.values()))]
    for k in sorted({r["round"] for r in records} - {0}):
        for strategy in (*STRATEGIES, "random"):
            rs = [r for r in records if r["round"] == k and strategy_of(r["run"]) == strategy]
            if rs:
                rows.append((k, strategy, rs))
    for k, name, rs in rows:
        cells = [mean_std([r[key] for r in rs]) for key in ("completeness", "correctness", "quality", "common_completeness",
                                                             "common_correctness", "common_quality")]
        lines.append(f"| {k} | {name} | {len(rs)} | {rs[0]['labeled_share']:.0%} | " + " | ".join(cells) + f" | {rs[0]['common_truth_km']:.2f} |")
    return "\n".join(lines) + "\n" + paired(records)


def paired(records: Sequence[dict]) -> str:
    """Markdown table of each suggesting strategy's quality minus random's with the same seed (same
    first strip and training seed), per round, on the common rest and the own rest: the mean and
    each seed's difference. Empty for records without ``train_seed`` (the first measurements,
    whose runs shared one training seed)."""
    if not records or "train_seed" not in records[0]:
        return ""
    by_key = {(r["round"], strategy_of(r["run"]), r["train_seed"]): r for r in records}
    lines = ["", "| round | strategy | common rest: quality − random's, mean | per seed | own rest: quality − random's, mean | per seed |",
             "|---|---|---|---|---|---|"]
    for k in sorted({r["round"] for r in records} - {0}):
        for strategy in STRATEGIES:
            seeds = sorted(t for (kk, s, t) in by_key if kk == k and s == strategy and (k, "random", t) in by_key)
            if not seeds:
                continue
            cells = []
            for key in ("common_quality", "quality"):
                d = [by_key[k, strategy, t][key] - by_key[k, "random", t][key] for t in seeds]
                cells += [f"{np.mean(d):+.3f}", ", ".join(f"{x:+.3f}" for x in d)]
            lines.append(f"| {k} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLOURS = {"acquisition": plt.cm.Oranges, "coverage": plt.cm.Greens, "random": plt.cm.Blues}
"""Colour map of each strategy's runs in the plot."""


def plot(records: Sequence[dict], path: Path) -> None:
    """Quality and completeness (within the records' ``buffer_m``) against labeled share, one line per run, coloured by strategy."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    names = sorted({r["run"] for r in records if r["round"] > 0}, key=lambda n: (list(COLOURS).index(strategy_of(n)), n))
    colours = {}
    for strategy, cmap in COLOURS.items():
        mine = [n for n in names if strategy_of(n) == strategy]
        colours |= dict(zip(mine, cmap(np.linspace(0.55, 0.85, max(1, len(mine))))))
    for ax, prefix, where in zip(axes, ("", "common_"), ("each run's own unlabeled rest", "the rest no run labeled (same pixels)")):
        for name in names:
            rs = sorted((r for r in records if r["run"] == name), key=lambda r: r["round"])
            share = [100 * r["labeled_share"] for r in rs]
            style = dict(color=colours[name], linewidth=2.0 if strategy_of(name) != "random" else 1.2)
            ax.plot(share, [r[f"{prefix}quality"] for r in rs], marker="o", label=f"{name}: quality", **style)
            ax.plot(share, [r[f"{prefix}completeness"] for r in rs], marker="^", linestyle=":", label=f"{name}: completeness", **style)
        ax.set_xlabel("labeled share of the scene (%)")
        ax.set_title(f"scored on {where}", fontsize=9)
        ax.grid(alpha=0.3)
    first = records[0]
    axes[0].set_ylabel(f"score within {first['buffer_m']:g} m" if "buffer_m" in first else "score")  # records before 2026-12-05 name none
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{first.get('scene', 'sample scene')}: first strip, then {first['per_round']} squares of {first['size_m']:g} m "
                 "per round, suggested or random", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def plot_squares(records: Sequence[dict], scene: Path, truth: Path, path: Path, width_px: int = 900) -> None:
    """Where each strategy labeled: the scene, its true centrelines, the first strip and the squares
    added in each round, one panel for the first run of each strategy (read from the runs' AOIs)."""
    shown = read_display(scene, width_px)  # a one-band or uint16 scene too
    crs = shown.crs
    lines = gpd.read_file(truth).to_crs(crs)
    first = {}
    for r in sorted(records, key=lambda r: r["run"]):
        first.setdefault(strategy_of(r["run"]), r["run"])
    runs = [first[s] for s in (*STRATEGIES, "random") if s in first]
    rounds = max(r["round"] for r in records)
    colours = plt.cm.plasma(np.linspace(0.15, 0.85, max(1, rounds)))
    height, width = shown.image.shape[:2]
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 5.2 * height / width + 0.6), squeeze=False)
    for ax, name in zip(axes[0], runs):
        ax.imshow(shown.image, extent=shown.extent, cmap=shown.cmap)
        ax.set_aspect(shown.aspect)  # square on the ground in a geographic CRS too
        lines.plot(ax=ax, color="white", linewidth=0.4, alpha=0.8)
        by_round = {r["round"]: r for r in records if r["run"] == name}
        before = None
        for k in sorted(by_round):
            aoi = gpd.read_file(Path(by_round[k]["folder"]) / "aoi.gpkg").to_crs(crs).union_all()
            added = aoi if before is None else aoi.difference(before)
            colour = "cyan" if k == 0 else colours[k - 1]
            gpd.GeoSeries([added], crs=crs).boundary.plot(ax=ax, color=colour, linewidth=1.6 if k else 1.2,
                                                         label="first strip" if k == 0 else f"round {k}")
            before = aoi
        last = by_round[max(by_round)]
        ax.set_title(f"{name}: quality on its rest after round {last['round']}: {last['quality']:.3f}", fontsize=9)
        ax.set_axis_off()
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80, format="jpg", pil_kwargs={"quality": 85})
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_suggest")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=Path, default=sample_scene(), help="GeoTIFF scene (default: the shipped sample)")
    p.add_argument("--truth", type=Path, default=sample_roads(), help="its true centrelines (default: the sample's)")
    p.add_argument("--photo", type=Path, help="a road photo to use as the scene instead (with --mask)")
    p.add_argument("--mask", type=Path, help="the photo's road mask, made into the true centrelines")
    p.add_argument("--pixel-size-m", type=float, default=1.0, help="the photo's pixel size, metres")
    p.add_argument("--steps", type=int, default=150, help="training steps of every round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--per-round", type=int, default=2, help="squares added per round")
    p.add_argument("--size-m", type=float, default=96.0, help="edge of the squares, metres")
    p.add_argument("--first-fraction", type=float, default=0.3, help="labeled western strip of round 0, share of the width")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES),
                   help="suggesting strategies run beside random, once per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds: each trains its own first strip and rounds, and seeds its coverage clustering and random draws")
    p.add_argument("--buffer-m", type=float, default=5.0)
    p.add_argument("--out", type=Path, required=True, help="folder of results.json, results.md, quality.png and squares.jpg")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out (its runs are read back)")
    p.add_argument("--runs", type=Path, help="folder of the runs (models, lines; rounds already there are read back) [OUT/runs]")
    args = p.parse_args(argv)
    args.runs = args.runs or args.out / "runs"
    if (args.photo is None) != (args.mask is None):
        p.error("--photo and --mask go together")
    quiet_lightning()
    claim_results(args.out, args.overwrite)
    if args.photo is not None:
        args.scene, args.truth = photo_scene(args.photo, args.mask, args.runs / "scene", pixel_size_m=args.pixel_size_m)
    records = run(args)
    save_results(args.out, records, summarise(records))
    plot(load_records(args.out / "results.json"), args.out / "quality.png")
    plot_squares(records, args.scene, args.truth, args.out / "squares.jpg")
    print(summarise(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
