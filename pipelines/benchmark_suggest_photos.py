#!/usr/bin/env python
"""Which photos to label next, measured: photos chosen by ``geoccseg suggest`` against random ones.

The photo half of the where-to-label-next benchmark (the scene half, squares on the SpaceNet
sample, is ``pipelines/benchmark_suggest.py``). On a benchmark dataset (DeepCrack, Massachusetts
crops) with the fixed held-out split of :mod:`geoccseg.benchmark.split`:

1. round 0: a seed set of ``--start-fraction`` of the training photos is labeled (drawn with the
   seed, the same for both strategies) and the method trains on it (the benchmark's ``full`` arm,
   every other training photo unlabeled) with ``--encoder`` (default: ``geoccseg train``'s,
   the pretrained EfficientNet-Lite0);
2. each of ``--rounds`` rounds adds ``--per-round`` photos, labeled from their true masks, chosen
   either by :func:`geoccseg.suggest.photos.suggest_photos` with the previous round's model
   (``coverage``, as ``geoccseg suggest`` for photos, or ``acquisition`` with
   ``--strategy acquisition``) or at random among the same unlabeled photos (``random``), and
   trains again from scratch with the same budget and seed (a round adds what is left once fewer
   than ``--per-round`` training photos are unlabeled; the rounds stop when none is);
3. every run is scored on the test photos with the benchmark's scorer.

Both strategies see the same seed sets, budgets and test photos; only the choice differs. Run from
the repository root (one seed of DeepCrack at the ``cpu`` profile's 300 steps: 7 trainings, about
an hour on 2 CPU cores)::

    python pipelines/benchmark_suggest_photos.py --dataset deepcrack --data ../shared/data/deepcrack/train \\
        --out ../bench/suggest-deepcrack --seeds 0 1 2 --max-steps 300

Outputs in ``--out``: ``results.json`` (one record per run, rewritten after each), ``results.md``
(test F1 by round and strategy, mean ± std over seeds, and the paired difference), ``f1_vs_labeled.png``
and ``runs/<run>/`` (each run's bundle: the next round's suggestions are read from it, so an
interrupted benchmark resumes with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geoccseg.benchmark import (  # noqa: E402
    DATASETS, PROFILES, RunSpec, link_pairs, load_records, make_split, mean_std, quiet_lightning, write_json,
)
from geoccseg.benchmark.runs import one_line_errors, train_and_score  # noqa: E402
from geoccseg.benchmark.split import Pair, check_split, kept_photo_of  # noqa: E402
from geoccseg.data.photos import split_labeled  # noqa: E402
from geoccseg.errors import GeoccsegError  # noqa: E402
from geoccseg.inference import PredictOptions  # noqa: E402
from geoccseg.models.config import ENCODERS  # noqa: E402
from geoccseg.train import TrainConfig  # noqa: E402
from geoccseg.io.atomic import atomic_path  # noqa: E402
from geoccseg.suggest.photos import suggest_photos  # noqa: E402
from geoccseg.suggest.select import EMBEDDINGS, SuggestParams  # noqa: E402



def picks_ignore_the_model(strategy: str, params: SuggestParams) -> bool:
    """Whether the suggested photos of ``strategy`` are the same whatever the previous round's model:
    coverage on the ImageNet embeddings choosing the most typical photo of each cluster."""
    return strategy.startswith("coverage") and params.embedding == "imagenet" and params.coverage_acquisition == 0


def choose(strategy: str, model_dir: Path, pairs: dict[str, Pair], labeled: Sequence[str], pool: Sequence[str], k: int,
           seed: int, round_: int, work: Path, params: SuggestParams, dataset: str) -> list[str]:
    """The ``k`` stems of ``pool`` to label next, chosen with the model in ``model_dir`` (the labeled
    photos as reference) by ``suggest_photos`` with ``params``: by acquisition score for the strategies
    named ``acquisition...``, by embedding clusters for ``coverage``; or drawn at random with
    (seed, round) for ``random``. Where the picks do not depend on the model
    (:func:`picks_ignore_the_model`) a round whose bundle is not kept (a seed set recorded in another
    folder's ``results.json``) is suggested all the same."""
    if strategy == "random":
        rng = np.random.default_rng([seed, round_])
        return sorted(np.asarray(sorted(pool))[rng.permutation(len(pool))[:k]].tolist())
    photos = link_pairs(work / "photos", {s: pairs[s] for s in [*labeled, *pool]}) / "images"
    labels = link_pairs(work / "labels", {s: pairs[s] for s in labeled}) / "masks"
    model = str(model_dir)
    if not (model_dir / "bundle.json").is_file():
        if not picks_ignore_the_model(strategy, params):
            raise GeoccsegError(f"{model_dir} holds no bundle: its round's suggestions need it (resume in the folder that trained it)")
        model = "crack" if DATASETS[dataset].classes == ("crack",) else "road"  # only the table's parts come from it
        print(f"{model_dir.name}: its bundle is not kept; coverage on ImageNet embeddings picks without it (parts scored by the shipped {model} model)")
    result = suggest_photos(photos, model=model, n=k, labels=labels, options=PredictOptions(device="cpu"), params=params,
                            strategy=strategy.split("_")[0], seed=seed * 1000 + round_, progress=False)
    by_name = {pairs[s][0].name: s for s in pool}
    return sorted(by_name[name] for name in result.suggested)


def run(args: argparse.Namespace) -> list[dict]:
    """Every round of both strategies for each seed; finished runs are read back from results.json."""
    profile = PROFILES[args.profile]
    if args.encoder != profile.encoder:
        profile = replace(profile, name=f"{profile.name}+{args.encoder}", encoder=args.encoder)
    if args.max_steps is not None:
        profile = profile.with_steps(args.max_steps)
    out, params = args.out, suggest_params(args)
    results_path = out / "results.json"
    if results_path.exists() and not args.resume:
        raise GeoccsegError(f"{out} already holds results.json; pass --resume to continue it, or choose another --out")
    records = load_records(results_path)
    pairs, split, test_pairs = make_split(args.data, None, kept_photo_of(out, args.dataset))  # a folder keeps its split
    check_split(out, split)
    if profile.max_test_images is not None:
        test_pairs = dict(list(test_pairs.items())[: profile.max_test_images])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "split.json", split)
    done = {r["run"]: r for r in records}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    train_stems = split["train"]

    with tempfile.TemporaryDirectory(prefix="geoccseg-suggest-photos-") as tmp:
        folders = {part: link_pairs(Path(tmp) / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}

        def check_kept(name: str, labeled: list[str]) -> None:
            """Refuse a recorded run of ``name`` whose settings or labeled photos are not this command's."""
            kept = done[name]
            if kept.get("profile", profile.name) != profile.name or sorted(kept["labeled"]) != sorted(labeled):
                raise GeoccsegError(
                    f"{out} holds {name} of other settings ({kept.get('profile')}, {kept['n_labeled']} labeled photos; this "
                    f"command: {profile.name}, {len(labeled)}): resume with the command that began it (--start-fraction, "
                    "--per-round, --max-steps, --encoder), or choose another --out")

        def trained(name: str, strategy: str, seed: int, round_: int, labeled: list[str], added: list[str]) -> dict:
            if name in done:
                check_kept(name, labeled)
                print(f"{name}: already in results.json, skipped")
                return done[name]
            print(f"{name}: training {profile.max_steps} steps with {len(labeled)} labeled photos")
            spec = RunSpec("full", len(labeled) / len(train_stems), seed)
            record = train_and_score(spec, args.dataset, profile, folders, train_stems, [], test_pairs, out, labeled=labeled, name=name)
            kind = strategy.split("_")[0]
            record |= {"strategy": strategy, "round": round_, "added": added,
                       **{field: getattr(params, field) if field in WEIGHTS.get(kind, ()) else None for field in SETTINGS}}
            records.append(record)
            done[name] = record
            write_json(results_path, records)
            write_reports(records, out)
            print(f"{name}: test F1 {record['f1']:.3f} ({len(labeled)} labeled, {record['train_seconds'] / 60:.1f} min)")
            return record

        for seed in args.seeds:
            start = split_labeled(list(train_stems), args.start_fraction, seed)[0]
            start_name = f"{args.dataset}_start_r0_s{seed}"
            if not args.final_round_only:
                trained(start_name, "start", seed, 0, start, [])
            for strategy in (strategy_name(args.strategy, params), "random"):
                labeled, previous = list(start), start_name
                final = f"{args.dataset}_{strategy}_r{args.rounds}_s{seed}"
                if args.final_round_only and recorded_final_round(done, args.dataset, strategy, seed, args.rounds):
                    kept = done[final]  # its labeled set holds the earlier rounds' picks: they are not made again
                    if not set(start) <= set(kept["labeled"]) or len(kept["labeled"]) != min(len(start) + args.rounds * args.per_round,
                                                                                              len(train_stems)):
                        raise GeoccsegError(f"{out} holds {final}, whose {len(kept['labeled'])} labeled photos are not this command's "
                                            "seed set and picks (--start-fraction, --per-round, --rounds): resume with the command that "
                                            "began it, or choose another --out")
                    trained(final, strategy, seed, args.rounds, kept["labeled"], kept["added"])  # checks the profile
                    continue
                for round_ in range(1, args.rounds + 1):
                    name = f"{args.dataset}_{strategy}_r{round_}_s{seed}"
                    pool = [s for s in train_stems if s not in set(labeled)]
                    if not pool:
                        print(f"{name}: every training photo is labeled, no round {round_} or later")
                        break
                    if name in done:
                        added, expected = done[name]["added"], min(args.per_round, len(pool))  # the last round takes what is left
                        if len(added) != expected:
                            raise GeoccsegError(f"{out} holds {name}, which added {len(added)} photos, not {expected} (--per-round "
                                                f"{args.per_round}): resume with the command that began it, or choose another --out")
                    else:
                        work = Path(tmp) / name
                        added = choose(strategy, out / "runs" / previous, pairs, labeled, pool, args.per_round, seed, round_, work, params,
                                       args.dataset)
                    labeled = sorted([*labeled, *added])
                    if args.final_round_only and round_ < args.rounds and len(added) < len(pool):  # picks without the model: not trained
                        if name in done:  # recorded by a run of the whole protocol: it must be this command's round
                            check_kept(name, labeled)
                        previous = name
                        continue
                    trained(name, strategy, seed, round_, labeled, added)
                    previous = name
    write_reports(records, out)
    return records


def recorded_final_round(done: dict[str, dict], dataset: str, strategy: str, seed: int, rounds: int) -> bool:
    """Whether ``--final-round-only`` can skip ``strategy``'s rounds of ``seed`` whole: its last round
    is recorded and none before it (rounds recorded by a run of the whole protocol are checked one by
    one), so the picks of its earlier rounds, several minutes each, need not be made again."""
    names = [f"{dataset}_{strategy}_r{round_}_s{seed}" for round_ in range(1, rounds + 1)]
    return names[-1] in done and not any(name in done for name in names[:-1])


def suggest_params(args: argparse.Namespace) -> SuggestParams:
    """The suggestion settings of the command line."""
    return SuggestParams(novelty_weight=args.novelty_weight, typicality_weight=args.typicality_weight,
                         coverage_acquisition=args.coverage_acquisition, embedding=args.embedding)


WEIGHTS = {"acquisition": ("novelty_weight", "typicality_weight"), "coverage": ("coverage_acquisition", "embedding")}
"""The settings of each suggested strategy that its runs are named by."""

SETTINGS = tuple(field for fields in WEIGHTS.values() for field in fields)
"""Every such setting: a column of each run's record (None where the strategy has no such setting)."""


def strategy_name(strategy: str, params: SuggestParams) -> str:
    """The name of a suggested strategy's runs: ``acquisition`` or ``coverage`` at suggest's defaults,
    followed by ``_<setting><W>`` for each of its settings (:data:`WEIGHTS`) that differs, e.g.
    ``acquisition_novelty1_typicality1``, ``coverage_acquisition1`` or ``coverage_imagenet`` (the
    embedding: its value alone)."""
    name = strategy
    for field in WEIGHTS[strategy]:
        value = getattr(params, field)
        if value != getattr(SuggestParams, field):
            name += f"_{value}" if isinstance(value, str) else f"_{field.removesuffix('_weight').removeprefix('coverage_')}{value:g}"
    return name


def strategies(records: Sequence[dict]) -> list[str]:
    """The strategies recorded, the suggested ones first and ``random`` last."""
    return sorted({r["strategy"] for r in records} - {"start"} | {"random"}, key=lambda s: (s == "random", s))


def summarise(records: Sequence[dict]) -> str:
    """Markdown: test F1 (and ODS F1) by round and strategy, mean ± std over seeds; paired differences."""
    lines = ["| round | strategy | seeds | labeled photos | F1 | ODS F1 | IoU |", "|---|---|---|---|---|---|---|"]
    names = strategies(records)
    by = {}
    for r in records:
        for strategy in (names if r["strategy"] == "start" else (r["strategy"],)):
            by.setdefault((r["round"], strategy), []).append(r)
    for (round_, strategy), rs in sorted(by.items(), key=lambda kv: (kv[0][0], names.index(kv[0][1]))):
        if round_ == 0 and strategy != names[0]:
            continue
        name = "seed set (shared)" if round_ == 0 else strategy
        lines.append(f"| {round_} | {name} | {len(rs)} | {np.mean([r['n_labeled'] for r in rs]):g} | {mean_std([r['f1'] for r in rs])} "
                     f"| {mean_std([r['ods_f1'] for r in rs])} | {mean_std([r['iou'] for r in rs])} |")
    lines.append("")
    for strategy in names[:-1]:
        for round_ in sorted({k[0] for k in by if k[0] > 0}):
            acq = {r["seed"]: r["f1"] for r in by.get((round_, strategy), [])}
            rnd = {r["seed"]: r["f1"] for r in by.get((round_, "random"), [])}
            seeds = sorted(set(acq) & set(rnd))
            if seeds:
                diffs = [acq[s] - rnd[s] for s in seeds]
                lines.append(f"- Round {round_}: {strategy} − random test F1, paired by seed: {np.mean(diffs):+.3f} "
                             f"({', '.join(f'{d:+.3f}' for d in diffs)}).")
        rounds = {k for k, s in by if s == strategy}
        if len(rounds) < 2:  # --final-round-only: no earlier round to reach random's final F1 with
            lines.append(f"- {strategy}: only round {min(rounds, default='-')} was trained, so how many fewer labeled photos "
                         "reach random's final F1 is not measured.")
            continue
        lines.append(fewer_labels(by, strategy))
    return "\n".join(lines) + "\n"


def fewer_labels(by: dict[tuple[int, str], list[dict]], strategy: str) -> str:
    """The issue's second criterion as a sentence: the fewest labeled photos with which ``strategy``
    reaches random's final test F1 (the mean over the seeds of random's last round; a round counts
    only when it holds all those seeds, round 0 included), how many fewer that is than random's,
    and, as a check on the criterion, the fewest with which random itself reaches it (when random's
    curve is flat, an earlier round of its own may already be as good). Measured rounds only,
    nothing interpolated."""
    final = max((k for k, s in by if s == "random" and k > 0), default=None)
    if final is None:
        return f"- {strategy}: no random round to compare with."
    seeds = {r["seed"] for r in by[(final, "random")]}
    target = np.mean([r["f1"] for r in by[(final, "random")]])
    n_random = np.mean([r["n_labeled"] for r in by[(final, "random")]])

    def first_reaching(name: str) -> tuple[int, float, float] | None:
        for k in sorted(k for k, s in by if s == name):
            rs = [r for r in by[(k, name)] if r["seed"] in seeds]
            f1 = np.mean([r["f1"] for r in rs]) if rs else -np.inf
            if {r["seed"] for r in rs} == seeds and f1 >= target:
                return k, np.mean([r["n_labeled"] for r in rs]), f1
        return None

    goal = f"random's final test F1 ({target:.3f} with {n_random:g} photos, round {final}, {len(seeds)} seed{'s' * (len(seeds) > 1)})"
    reached, own = first_reaching(strategy), first_reaching("random")
    if reached is None:
        return f"- {strategy} does not reach {goal}."
    k, n, f1 = reached
    return (f"- {strategy} reaches {goal} in round {k} with {n:g} photos ({f1:.3f}): {1 - n / n_random:.0%} fewer labeled photos "
            f"(random itself first reaches it in round {own[0]}, with {own[1]:g}).")


def legend(strategy: str) -> str:
    """A strategy's name in plots: ``random``, or e.g. ``suggested, coverage (acquisition1)``."""
    if strategy == "random":
        return strategy
    kind, *settings = strategy.split("_")
    return f"suggested, {kind}" + (f" ({', '.join(settings)})" if settings else "")


SUGGESTED_COLOURS = [*plt.get_cmap("tab10").colors[:7], *plt.get_cmap("tab10").colors[8:]]
"""Colours of the suggested strategies in plots, cycled from the fourth (red): tab10 without its eighth, grey (random's)."""


def write_reports(records: Sequence[dict], out: Path) -> None:
    """``results.md`` and ``f1_vs_labeled.png`` (test F1 against labeled photos, per strategy)."""
    dataset = records[0]["dataset"] if records else "?"
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text(f"# Suggested against random photos: {dataset}\n\n{summarise(records)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    names = strategies(records)
    for i, strategy in enumerate(names):
        colour = "tab:grey" if strategy == "random" else SUGGESTED_COLOURS[(3 + i) % len(SUGGESTED_COLOURS)]
        rounds = sorted({r["round"] for r in records if r["strategy"] in (strategy, "start")})
        xs, ys, es = [], [], []
        for k in rounds:
            rs = [r for r in records if r["round"] == k and r["strategy"] in (strategy, "start")]
            xs.append(np.mean([r["n_labeled"] for r in rs]))
            ys.append(np.mean([r["f1"] for r in rs]))
            es.append(np.std([r["f1"] for r in rs], ddof=1) if len(rs) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colour, label=legend(strategy))
    ax.set_xlabel("labeled photos")
    ax.set_ylabel("test F1")
    ax.set_title(f"{dataset}: where to label next (mean ± std over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out / "f1_vs_labeled.png", overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_suggest_photos")


def _run(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/ (split into train/select/test once)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", default="cpu", choices=list(PROFILES))
    p.add_argument("--max-steps", type=int, help="steps of every training (default: the profile's)")
    p.add_argument("--encoder", choices=ENCODERS, default=TrainConfig.encoder,
                   help=f"encoder of every training (default {TrainConfig.encoder}, what geoccseg train uses; "
                        "the profiles' own is the light one of the recorded ablation)")
    p.add_argument("--start-fraction", type=float, default=0.02, help="share of the training photos labeled in round 0")
    p.add_argument("--per-round", type=int, default=4, help="photos labeled per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategy", choices=["coverage", "acquisition"], default="coverage",
                   help="how the suggested photos are chosen: by embedding clusters (coverage, TypiClust's rule; the default, "
                        "as geoccseg suggest for photos) or by suggest's acquisition score; compared with the same random runs either way")
    p.add_argument("--novelty-weight", type=float, default=SuggestParams.novelty_weight,
                   help=f"novelty weight of the suggestions (default {SuggestParams.novelty_weight}, suggest's); another "
                        "value records the strategy as acquisition_novelty<W>, beside the default's runs and the same random ones")
    p.add_argument("--typicality-weight", type=float, default=SuggestParams.typicality_weight,
                   help=f"typicality (representativeness) weight of the suggestions (default {SuggestParams.typicality_weight}, "
                        "suggest's); another value adds _typicality<W> to the strategy name")
    p.add_argument("--coverage-acquisition", type=float, default=SuggestParams.coverage_acquisition,
                   help="with --strategy coverage: weight of the acquisition in each cluster's pick (default "
                        f"{SuggestParams.coverage_acquisition}: the most typical photo); another value adds _acquisition<W>")
    p.add_argument("--embedding", choices=EMBEDDINGS, default=SuggestParams.embedding,
                   help="with --strategy coverage: the embedding clustered, the model's (default) or the frozen ImageNet "
                        "encoder's (adds _imagenet; its picks do not depend on the model, so seed sets recorded in "
                        "results.json without their bundles are suggested from all the same)")
    p.add_argument("--final-round-only", action="store_true",
                   help="train only each strategy's last round (the issue's measure, after --rounds rounds): for strategies "
                        "whose picks do not depend on the model (random; coverage with --embedding imagenet) the earlier "
                        "rounds' labeled sets follow without training them; a third of the trainings")
    p.add_argument("--resume", action="store_true", help="continue the runs recorded in OUT/results.json")
    args = p.parse_args(argv)
    quiet_lightning()
    if args.per_round < 1 or args.rounds < 1:
        raise GeoccsegError("--per-round and --rounds must be at least 1")
    suggest_params(args).check()
    if args.final_round_only and not picks_ignore_the_model(strategy_name(args.strategy, suggest_params(args)), suggest_params(args)):
        raise GeoccsegError("--final-round-only needs picks that do not depend on the model: --strategy coverage --embedding imagenet")
    for field in SETTINGS:
        if field not in WEIGHTS[args.strategy] and getattr(args, field) != getattr(SuggestParams, field):
            raise GeoccsegError(f"--{field.replace('_', '-')} does not apply to --strategy {args.strategy}; "
                                f"it is a setting of --strategy {next(k for k, v in WEIGHTS.items() if field in v)}")
    run(args)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
