#!/usr/bin/env python
"""Training speed on this machine: chips per second of a training step, per encoder and method.

Run from the repository root, e.g.::

    python pipelines/benchmark_train_speed.py --data ../shared/data/massachusetts/train --out bench/train-speed

Each variant is a real :func:`geoccseg.train` run on the photos of ``--data`` (``images/`` and
``masks/``, 3.5 % labeled, the rest unlabeled; no validation set) for ``--steps`` steps with the
benchmark's ``cpu`` budget per step (8 labeled + 8 unlabeled chips of 256 px), in its own
subprocess so that runs share no threads or caches. The speed is read from the run's
``metrics.csv`` (``seconds``: training wall time, validation excluded), from step ``--skip`` (the
first steps warm up allocators and oneDNN kernels) to the last:

- steps/s = steps / seconds;
- chips/s = steps x chips per step / seconds, where a supervised step takes 8 chips and a
  semi-supervised step 16 (8 labeled + 8 unlabeled, each unlabeled chip seen by the teacher and,
  as a strong view, by the student).

Variants: ``light`` and ``efficientnet-lite0`` encoders, each supervised only (``sup``: the
imbalance loss) and with the whole method from step 0 (``full``: pseudo-labels and contrastive
loss), with ``geoccseg train``'s default data loader workers (none on the CPU, up to 4 per GPU on
CUDA); ``+workers0`` draws the chips in the training process and ``+workers1`` in one worker
process while the step runs (``num_workers`` 0 and 1: on the CPU ``+workers0`` is the default);
``+threads1`` uses one intra-op thread instead of all cores. Writes ``results.json`` and
``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from geoccseg.benchmark.runs import claim_results, one_line_errors, save_partial, save_results
from geoccseg.train.callbacks import LOG_EVERY

#: name -> (encoder, semi-supervised, num_workers or None for train's default, torch threads or None for the default)
VARIANTS: dict[str, tuple[str, bool, int | None, int | None]] = {
    "light sup": ("light", False, None, None),
    "light full": ("light", True, None, None),
    "efficientnet-lite0 sup": ("efficientnet-lite0", False, None, None),
    "efficientnet-lite0 full": ("efficientnet-lite0", True, None, None),
    "efficientnet-lite0 full +workers0": ("efficientnet-lite0", True, 0, None),
    "efficientnet-lite0 full +workers1": ("efficientnet-lite0", True, 1, None),
    "efficientnet-lite0 full +threads1": ("efficientnet-lite0", True, None, 1),
}
LABELED_CHIPS, UNLABELED_CHIPS, TILE_PX = 8, 8, 256


def run_variant(name: str, data: Path, steps: int, out: Path, pretrained: bool = True) -> None:
    """Train one variant for ``steps`` steps into ``out`` (in this process); ``pretrained`` False
    starts the encoder from random weights (the same speed; for machines without the weights
    package)."""
    encoder, semi, workers, threads = VARIANTS[name]
    if threads:
        import torch

        torch.set_num_threads(threads)
    from geoccseg.train import TrainConfig, train

    config = TrainConfig(
        out=str(out), images=str(data / "images"), masks=str(data / "masks"), labeled_fraction=0.035, val_fraction=0.0,
        tile_px=TILE_PX, batch_size=LABELED_CHIPS, unlabeled_batch_size=UNLABELED_CHIPS, encoder=encoder,
        pseudo=semi, contrastive=semi, unlabeled_start_steps=0, rampup_steps=1, max_steps=steps,
        num_workers=workers, progress=False, seed=0, pretrained=None if pretrained else False,
    )
    train(config)


def speed(metrics: Path, skip: int, chips_per_step: int) -> dict:
    """Steps and chips per second from a run's ``metrics.csv``, from step ``skip`` on."""
    with open(metrics) as f:
        rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f) if r.get("seconds")]
    start = next((r for r in rows if r[0] >= skip), rows[0])
    end = rows[-1]
    steps, seconds = end[0] - start[0], end[1] - start[1]
    return {"steps": steps, "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 3),
            "chips_per_s": round(steps * chips_per_step / seconds, 2)}


def max_skip(steps: int) -> int | None:
    """The largest ``--skip`` that leaves steps to measure in a run of ``steps`` steps: the timed step
    before the last (None: a run of fewer than LOG_EVERY steps times one step only)."""
    timed = sorted({1, *range(LOG_EVERY, steps + 1, LOG_EVERY)})
    return timed[-2] if len(timed) > 1 else None


def report(results: list[dict]) -> str:
    """The table of ``results``."""
    from geoccseg.benchmark.machine import machine

    lines = [
        "# Training speed", "",
        f"{machine()}; tile {TILE_PX} px, "
        f"{LABELED_CHIPS} labeled (+ {UNLABELED_CHIPS} unlabeled) chips per step; measured over the steps after the warm-up.", "",
        "| variant | chips per step | steps measured | s/step | chips/s |", "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['variant']} | {r['chips_per_step']} | {r['steps']} | {1 / r['steps_per_s']:.2f} | {r['chips_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_train_speed")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    parser.add_argument("--steps", type=int, default=40, help="training steps per variant (default 40)")
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the speed (default 10)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    parser.add_argument("--no-pretrained", action="store_true", help="start encoders from random weights (same speed)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: train one variant in this process
    parser.add_argument("--run-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run_variant(args.run, args.data, args.steps, args.run_out, pretrained=not args.no_pretrained)
        return 0
    top = max_skip(args.steps)
    if top is None or args.skip > top:
        parser.error(f"--skip {args.skip} leaves no steps to measure of --steps {args.steps} (metrics.csv times step 1 and every "
                     f"{LOG_EVERY}th): " + (f"give --steps of at least {LOG_EVERY}" if top is None else f"give a --skip of at most {top}"))
    claim_results(args.out, args.overwrite)
    results = []
    with tempfile.TemporaryDirectory(prefix="geoccseg-train-speed-") as tmp:
        for name in args.variants:
            run_out = Path(tmp) / name.replace(" ", "_").replace("+", "")
            print(f"{name}: {args.steps} steps", flush=True)
            subprocess.run([sys.executable, __file__, "--data", str(args.data), "--steps", str(args.steps),
                            "--out", str(args.out), "--run", name, "--run-out", str(run_out),
                            *(["--no-pretrained"] if args.no_pretrained else [])], check=True)
            chips = LABELED_CHIPS + (UNLABELED_CHIPS if VARIANTS[name][1] else 0)
            result = {"variant": name, "chips_per_step": chips, **speed(run_out / "metrics.csv", args.skip, chips)}
            print(f"  {result['chips_per_s']} chips/s ({1 / result['steps_per_s']:.2f} s/step)", flush=True)
            results.append(result)
            save_partial(args.out, results)
    save_results(args.out, results, report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
