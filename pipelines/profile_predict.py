#!/usr/bin/env python
"""Where scene prediction's time goes: the engine's forward limit, then ``predict_scene`` with
several chip, batch and thread settings, each timed by phase.

``pipelines/benchmark_predict.py`` measures what users get (one fresh process per measure, peak
RSS); this script asks why, in one process, on the CPU or on a GPU::

    python pipelines/profile_predict.py --device cuda --out bench/profile-cuda.json
    python pipelines/profile_predict.py --device cpu --size 4096 --big 0 --out bench/profile-cpu.json

**Forward limits**: batches of random chips through the shipped road model (softmax included, bf16
autocast on CUDA), for chip/batch pairs, with and without channels-last and cuDNN's autotuner on
CUDA. **Variants**: ``predict_scene`` on the SpaceNet sample mirror-tiled to ``--size`` pixels (at
the model's pixel size, as the benchmark does, :func:`geoccseg.benchmark.speed.mirror_tiled_scene`), with the torch engine, after a 2048-px warm-up;
the best variant and the defaults again on a ``--big`` scene. Each variant's phases are summed over
the block threads: ``read`` (the block's pixels), ``blend_chips`` (normalise, forward, blend; its
``engine`` part is the forward as launched, which on CUDA is asynchronous until the results are
copied back), then, in the main thread, ``acc.add`` (blend sums on disk) and ``write_cog`` (the
probability COG). ``threads`` overrides the number of block threads of the in-process runner.
The row labeled ``defaults`` is CUDA's (2 block threads, one chip per pass, torch); on the CPU,
``geoccseg predict`` runs one block thread and ONNX Runtime (``benchmark_predict.py`` measures that).

A timed phase is the run's function wrapped by a timer (the code is the product's; nothing else
changes). The first run on a freshly made large scene was slower on the H200 machine than a rerun
with more work (first-touch memory of the virtual machine is the likely cause); compare runs after
the first at each size.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

import geoccseg.inference.cog as cog
import geoccseg.inference.engine as engine_module
import geoccseg.inference.predict as predict_module
from geoccseg.benchmark.runs import write_json
from geoccseg.benchmark.speed import forward_rate, mirror_tiled_scene
from geoccseg.inference.engine import TorchEngine
from geoccseg.io.bundle import resolve_model
from geoccseg.models import load_bundle

VARIANTS = (  # (block threads, tile px, batch, cuDNN autotuner, label)
    (2, 512, 1, False, "defaults"),  # one chip per pass: the CPU's default, CUDA's until 2026-12-04
    (4, 512, 8, False, "4 threads batch 8"),
    (8, 512, 8, False, "8 threads batch 8"),
    (2, 512, 8, False, "batch 8"),
    (4, 512, 8, True, "4 threads batch 8 cudnn.benchmark"),
    (4, 1024, 4, False, "4 threads tile 1024 batch 4"),
)
FORWARD_SHAPES = ((512, 1), (512, 8), (512, 16), (1024, 4))

T0 = time.perf_counter()
TIMES: dict[str, float] = defaultdict(float)
_LOCK = threading.Lock()


def timed(name: str, fn):
    """``fn`` adding its wall time to ``TIMES[name]`` (summed over threads)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                TIMES[name] += time.perf_counter() - start
    return wrapper


def log(*parts: object) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s]", *parts, flush=True)


def forward_limits(model: torch.nn.Module, device: str) -> dict[str, float]:
    """Mpx/s of the forward (:func:`geoccseg.benchmark.speed.forward_rate`, at least 1 s) for each
    chip/batch pair (and, on CUDA, memory format and autotuner)."""
    cuda = device.startswith("cuda")
    engine = TorchEngine(model, device)
    limits = {}
    for channels_last in (False, True) if cuda else (False,):
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for autotune in (False, True) if cuda else (False,):
            torch.backends.cudnn.benchmark = autotune
            for tile, batch in FORWARD_SHAPES if cuda else FORWARD_SHAPES[:1]:
                x = torch.randn(batch, 3, tile, tile, device=device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                key = f"cl={int(channels_last)} bench={int(autotune)} tile={tile} batch={batch}"
                limits[key] = forward_rate(engine, x, min_s=1.0)
                log("forward", key, f"{limits[key]:.1f} Mpx/s")
    model.to(memory_format=torch.contiguous_format)
    torch.backends.cudnn.benchmark = False
    return limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON report (rewritten after each run)")
    parser.add_argument("--device", default="cuda", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=8192, help="scene edge of the variants, pixels")
    parser.add_argument("--big", type=int, default=16384, help="scene edge of the last two runs (0: none)")
    parser.add_argument("--budget-s", type=float, default=230, help="start no variant after 0.6 of this")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/geoccseg-profile"), help="folder for the scenes")
    args = parser.parse_args()
    report: dict = {"device": args.device, "forward": {}, "variants": []}

    def save() -> None:
        write_json(args.out, report)

    bundle = load_bundle(resolve_model("road"))
    report["forward"] = forward_limits(bundle.model.to(args.device).eval(), args.device)
    bundle = load_bundle(resolve_model("road"))  # a fresh CPU copy, as predict_scene gets it
    save()

    predict_module.read_model_window = timed("read", predict_module.read_model_window)
    predict_module.blend_chips = timed("blend_chips", predict_module.blend_chips)
    engine_module.TorchEngine.__call__ = timed("engine", engine_module.TorchEngine.__call__)
    cog.Accumulator.add = timed("acc.add", cog.Accumulator.add)
    predict_module.write_probability_cog = timed("write_cog", predict_module.write_probability_cog)
    run_local, n_block_threads = predict_module._run_local, {"n": 2}
    predict_module._run_local = lambda jobs, threads, task=predict_module.predict_block: run_local(jobs, n_block_threads["n"], task)

    args.scratch.mkdir(parents=True, exist_ok=True)
    scenes: dict[int, Path] = {}

    def run(size: int, n_threads: int, tile: int, batch: int, autotune: bool, label: str) -> dict:
        if size not in scenes:
            start = time.perf_counter()
            scenes[size] = mirror_tiled_scene(args.scratch / f"scene_{size}.tif", size, pixel_size_m=bundle.meta.pixel_size_m)
            log(f"scene {size} made in {time.perf_counter() - start:.1f} s")
        TIMES.clear()
        n_block_threads["n"] = n_threads
        torch.backends.cudnn.benchmark = autotune
        out = args.scratch / "probability.tif"
        out.unlink(missing_ok=True)
        options = predict_module.PredictOptions(device=args.device, engine="torch", tile_px=tile, batch_size=batch)
        start = time.perf_counter()
        predict_module.predict_scene(scenes[size], bundle, out, options, progress=False)
        wall = time.perf_counter() - start
        row = {"label": label, "size": size, "threads": n_threads, "tile": tile, "batch": batch, "cudnn_benchmark": autotune,
               "wall_s": wall, "mpx_per_s": size * size / 1e6 / wall, "phases_s": dict(TIMES)}
        report["variants"].append(row)
        save()
        log(json.dumps(row))
        return row

    run(2048, 2, 512, 1, False, "warm-up")
    best = None
    for n_threads, tile, batch, autotune, label in VARIANTS:
        if time.perf_counter() - T0 > 0.6 * args.budget_s:
            log("skipped (budget):", label)
            continue
        row = run(args.size, n_threads, tile, batch, autotune, label)
        if label != "defaults" and (best is None or row["mpx_per_s"] > best["mpx_per_s"]):
            best = row
    if args.big and best and time.perf_counter() - T0 < 0.6 * args.budget_s:
        run(args.big, best["threads"], best["tile"], best["batch"], best["cudnn_benchmark"], "best at big: " + best["label"])
    if args.big and time.perf_counter() - T0 < 0.8 * args.budget_s:
        run(args.big, *VARIANTS[0][:4], "defaults at big")
    log("done")


if __name__ == "__main__":
    main()
