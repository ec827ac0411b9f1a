"""Reports of a benchmark's records: statistics over seeds, the markdown table and the plots.

Everything here reads the records of ``results.json`` only (and, for :func:`plot_examples`, the
example probabilities saved next to them), so a report can be regenerated from a results folder
without training or scoring anything. Plots are drawn on :class:`matplotlib.figure.Figure` objects,
so importing this module selects no matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from geoccseg.benchmark.design import ARMS, EXAMPLE_ARMS, SWEEP_ARMS
from geoccseg.benchmark.score import pairs_mark_unlabeled_255, read_truth_mask
from geoccseg.benchmark.split import Pair
from geoccseg.data.photos import read_photo
from geoccseg.io.atomic import atomic_path


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_std(values: Sequence[float]) -> str:
    """``mean ± sample std`` with three decimals; the mean alone for one value."""
    if len(values) == 1:
        return f"{float(values[0]):.3f}"
    return f"{np.mean(values):.3f} ± {sample_std(values):.3f}"


def gap_closed(records: Sequence[dict], base: str, arm: str = "full") -> dict[float, float]:
    """Share of the mean-F1 gap between ``base`` and ``fully_supervised`` that ``arm`` closes, by
    labeled fraction: (F1_arm - F1_base) / (F1_fully_supervised - F1_base); fractions where the
    gap is not positive are left out."""
    ceiling = [r["f1"] for r in records if r["arm"] == "fully_supervised"]
    shares: dict[float, float] = {}
    for fraction in sorted({r["labeled_fraction"] for r in records if r["arm"] == arm}):
        f1 = {a: [r["f1"] for r in records if r["arm"] == a and r["labeled_fraction"] == fraction] for a in (arm, base)}
        if ceiling and f1[base] and np.mean(ceiling) > np.mean(f1[base]):
            shares[fraction] = float((np.mean(f1[arm]) - np.mean(f1[base])) / (np.mean(ceiling) - np.mean(f1[base])))
    return shares


def paired_differences(records: Sequence[dict], base: str, arm: str = "full", key: str = "f1") -> dict[float, list[float]]:
    """Per labeled fraction, ``arm`` minus ``base`` of each seed both ran (same labeled images), by seed order.

    Seeds choose different labeled images, so the spread over seeds mixes the method's effect with
    the luck of the labels; the paired differences take the second out."""
    out: dict[float, list[float]] = {}
    for fraction in sorted({r["labeled_fraction"] for r in records if r["arm"] == arm}):
        by_seed = {}
        for a in (arm, base):
            runs = [r for r in records if r["arm"] == a and r["labeled_fraction"] == fraction]
            by_seed[a] = {r["seed"]: r[key] for r in runs}
            if len(by_seed[a]) < len(runs):  # records of two benchmarks pooled: which run pairs with which?
                raise ValueError(f"{a} at fraction {fraction:g} has several runs of one seed; pair the runs of one benchmark at a time")
        seeds = sorted(set(by_seed[arm]) & set(by_seed[base]))
        if seeds:
            out[fraction] = [by_seed[arm][s] - by_seed[base][s] for s in seeds]
    return out


def _arm_order(arm: str) -> int:
    return list(ARMS).index(arm) if arm in ARMS else len(ARMS)


def _machines(group: Sequence[dict]) -> str:
    """`` (machine A; machine B)`` for the machines the records name, empty when none does."""
    named = {r.get("machine") or "machine not recorded" for r in group}
    return "" if named == {"machine not recorded"} else f" ({'; '.join(sorted(named))})"


def summarise(records: Sequence[dict]) -> str:
    """A markdown report: per dataset and profile, one row per (arm, labeled fraction) with the mean
    ± sample standard deviation over seeds, and an F1 table by labeled fraction of the sweep arms
    (their fully supervised ceiling included) when it has more than one row."""
    lines = ["# Quality benchmark", ""]
    for dataset, profile in sorted({(r["dataset"], r["profile"]) for r in records}):
        group = [r for r in records if r["dataset"] == dataset and r["profile"] == profile]
        roads = any(r.get("relaxed_f1") is not None for r in group)
        first = group[0]
        lines += [
            f"## {dataset}, profile `{profile}`", "",
            f"{first['n_test']} test images; encoder {first['encoder']}, tile {first['tile_px']} px, "
            f"{first['max_steps']} steps per run on {', '.join(sorted({r['device'] for r in group}))}{_machines(group)}; "
            "mean ± sample standard deviation over seeds.", "",
        ]
        head = ["arm", "labeled fraction", "labeled images", "seeds", "precision", "recall", "F1", "IoU", "ODS F1", "OIS F1"]
        keys = ["precision", "recall", "f1", "iou", "ods_f1", "ois_f1"]
        if roads:
            head.append("relaxed F1 (ρ=3 px)")
            keys.append("relaxed_f1")
        head += ["steps", "minutes"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = sorted({(r["arm"], r["labeled_fraction"]) for r in group}, key=lambda k: (k[1], _arm_order(k[0])))
        for arm, fraction in rows:
            rs = [r for r in group if r["arm"] == arm and r["labeled_fraction"] == fraction]
            cells = [arm, f"{fraction:g}", "/".join(sorted({str(r["n_labeled"]) for r in rs})), str(len(rs))]
            cells += [mean_std([r[k] for r in rs]) for k in keys]
            cells += [f"{np.mean([r['steps'] for r in rs]):.0f}", f"{np.mean([r['train_seconds'] for r in rs]) / 60:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        cut = sorted(r["run"] for r in group if r["steps"] < r["max_steps"])
        if cut:
            lines += [f"**{len(cut)} run(s) stopped at the time cap before {first['max_steps']} steps:** {', '.join(cut)}.", ""]
        for base in ("sup_ce", "sup_imbalance"):
            for fraction, share in gap_closed(group, base).items():
                if share > 1:
                    lines.append(f"- `full` at fraction {fraction:g} scores *above* `fully_supervised` (and `{base}`) at this budget.")
                elif share >= 0:
                    lines.append(f"- `full` at fraction {fraction:g} closes {share:.0%} of the F1 gap between `{base}` and `fully_supervised`.")
                else:
                    lines.append(f"- `full` at fraction {fraction:g} scores *below* `{base}`: it closes none of the F1 gap to `fully_supervised`.")
            for fraction, diffs in paired_differences(group, base).items():
                per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
                lines.append(f"- `full` − `{base}` at fraction {fraction:g}, paired by seed (same labeled images): "
                             f"F1 {np.mean(diffs):+.3f} on average ({per_seed}).")
        if lines[-1].startswith("- "):
            lines.append("")
        curves = sweep_points(group, "f1")
        if any(len(points) > 1 for points in curves.values()):
            fractions = sorted({f for points in curves.values() for f in points})
            lines += ["F1 by labeled fraction (at 1.0 both arms are the fully supervised run):", "",
                      "| labeled fraction | " + " | ".join(curves) + " |", "|" + "---|" * (len(curves) + 1)]
            for f in fractions:
                cells = [mean_std(curves[arm][f]) if f in curves[arm] else "" for arm in curves]
                lines.append(f"| {f:g} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def sweep_points(records: Sequence[dict], key: str) -> dict[str, dict[float, list[float]]]:
    """Values of ``key`` per sweep arm and labeled fraction; the fully supervised runs count as
    fraction 1.0 of every sweep arm."""
    ceiling = [r[key] for r in records if r["arm"] == "fully_supervised"]
    curves: dict[str, dict[float, list[float]]] = {}
    for arm in SWEEP_ARMS:
        points: dict[float, list[float]] = {}
        for r in records:
            if r["arm"] == arm:
                points.setdefault(r["labeled_fraction"], []).append(r[key])
        if points:
            if ceiling:
                points[1.0] = ceiling
            curves[arm] = dict(sorted(points.items()))
    return curves


def _save_png(fig: Figure, path: Path) -> None:
    """Write a figure as a 100 dpi PNG, atomically."""
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def plot_f1_vs_fraction(records: Sequence[dict], path: Path) -> None:
    """F1 (mean ± sample std over seeds) against labeled fraction (log scale), one panel per dataset.

    Sweep arms are lines ending at the fully supervised point; other arms are single markers;
    the fully supervised F1 is a dashed line (the ceiling).
    """
    datasets = sorted({r["dataset"] for r in records})
    fig = Figure(figsize=(7.5 * len(datasets), 4.5))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        group = [r for r in records if r["dataset"] == dataset]
        curves = sweep_points(group, "f1")
        for arm, points in curves.items():
            xs = list(points)
            ax.errorbar(xs, [np.mean(v) for v in points.values()], yerr=[sample_std(v) for v in points.values()],
                        marker="o", capsize=3, label=arm)
        for arm in sorted({r["arm"] for r in group} - set(curves) - {"fully_supervised"}, key=_arm_order):
            fracs = sorted({r["labeled_fraction"] for r in group if r["arm"] == arm})
            f1s = [[r["f1"] for r in group if r["arm"] == arm and r["labeled_fraction"] == f] for f in fracs]
            ax.errorbar(fracs, [np.mean(v) for v in f1s], yerr=[sample_std(v) for v in f1s], marker="s", ls="none", capsize=3, label=arm)
        ceiling = [r["f1"] for r in group if r["arm"] == "fully_supervised"]
        if ceiling:
            ax.axhline(float(np.mean(ceiling)), color="grey", ls="--", label="fully_supervised")
        ax.set_xscale("log")
        ax.set_xlabel("labeled fraction of the training images")
        ax.set_ylabel("test F1 at 0.5")
        ax.set_ylim(0, 1)
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside the data, never over it
    fig.tight_layout()
    _save_png(fig, path)


def plot_examples(records: Sequence[dict], out: Path, pairs: dict[str, Pair], stems: Sequence[str], labeled_fraction: float,
                  path: Path) -> None:
    """Example test images, one row each: image, ground truth, then the foreground probability of
    each of :data:`~geoccseg.benchmark.design.EXAMPLE_ARMS` that ran at ``labeled_fraction`` (1.0
    for ``fully_supervised``), first seed; the probabilities are read from ``out/examples/<run>.npz``."""
    runs: list[dict] = []
    for arm in EXAMPLE_ARMS:
        fraction = 1.0 if ARMS[arm].all_labeled else labeled_fraction
        rs = [r for r in records if r["arm"] == arm and r["labeled_fraction"] == fraction
              and (out / "examples" / f"{r['run']}.npz").is_file()]
        if rs:
            runs.append(min(rs, key=lambda r: r["seed"]))
    probs = [np.load(out / "examples" / f"{r['run']}.npz") for r in runs]
    ncols = 2 + len(runs)
    fig = Figure(figsize=(3 * ncols, 2.4 * len(stems)))
    axes = fig.subplots(len(stems), ncols, squeeze=False)
    unlabeled_255 = pairs_mark_unlabeled_255(pairs)  # as the scores read the masks
    for row, stem in zip(axes, stems):
        image_path, mask_path = pairs[stem]
        image = read_photo(image_path)
        row[0].imshow(np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], cmap=None if image.shape[0] == 3 else "gray")
        row[0].set_title(stem, fontsize=8)
        row[1].imshow(read_truth_mask(mask_path, unlabeled_255)[0], cmap="gray")
        row[1].set_title("ground truth", fontsize=8)
        for ax, r, p in zip(row[2:], runs, probs):
            ax.imshow(p[stem], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{r['arm']} ({r['labeled_fraction']:g}, s{r['seed']}) F1 {r['f1']:.2f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    _save_png(fig, path)


def write_reports(records: Sequence[dict], out: Path, pairs: dict[str, Pair], examples: Sequence[str],
                  labeled_fraction: float) -> None:
    """Write ``results.md``, ``f1_vs_fraction.png`` and ``examples.png`` (runs at ``labeled_fraction``)
    from the records so far."""
    if not records:
        return
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text(summarise(records))
    plot_f1_vs_fraction(records, out / "f1_vs_fraction.png")
    plot_examples(records, out, pairs, examples, labeled_fraction, out / "examples.png")
