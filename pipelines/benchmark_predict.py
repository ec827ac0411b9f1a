#!/usr/bin/env python
"""Speed and memory of scene-scale prediction, against the model's forward speed and a naive loop.

Run from the repository root, e.g.::

    python pipelines/benchmark_predict.py --sizes 2048 4096 8192 16384 --engines torch onnx --out bench/predict

**Options.** By default the chips are what ``geoccseg predict`` uses without options
(:class:`geoccseg.inference.predict.PredictOptions`: the tile of
:meth:`~geoccseg.inference.predict.PredictOptions.tile_for`, the batch of
:meth:`~geoccseg.inference.predict.PredictOptions.batch_for`, its overlap and block size);
``--tile-px``, ``--overlap-px``, ``--block-px`` and ``--batch-size`` measure others.

**Scenes.** The real SpaceNet Las Vegas chip shipped as the package's sample (the same file as
``spacenet-vegas/vegas_img0_rgb.tif``, 1300 x 1300 RGB at about 0.27 m) is mirror-tiled into squares
of each ``--sizes`` edge (pixels): same pixel size, same CRS, origin at the chip's origin
(:func:`geoccseg.benchmark.speed.mirror_tiled_scene`). They are written block by block as tiled,
compressed uint8 RGB GeoTIFFs in a temporary folder (removed at the end).

**Model.** ``--model BUNDLE``, or an untrained bundle of the default architecture made here (the
speed does not depend on the weights). The scenes' pixels are labelled with the model's pixel
size (e.g. 1 m for the shipped road model: the chip's transform scaled, the same pixels), so that
prediction runs on the scene's own grid, without resampling.

**Engines.** ``--engines torch onnx`` measures ``predict`` and ``forward`` once per inference
engine (:mod:`geoccseg.inference.engine`; default: ``torch`` alone); ``onnx:int8``,
``torch:bf16`` and ``openvino:bf16`` measure an engine at a reduced CPU precision (experimental,
``--precision``). The ``onnx`` and ``openvino`` engines' export is made (or found in the user
cache, ``$GEOCCSEG_CACHE``) by their first ``forward`` measure, so their ``predict`` time
includes reading the cached export, not exporting it.

**Measures**, each in its own subprocess so that memory is not shared between them:

- ``predict``: :func:`geoccseg.inference.predict.predict_scene` to a probability COG, with the
  engine. Wall time is that of the call (imports excluded); Mpx/s = scene pixels / wall time;
  peak RSS is the largest resident memory of the process tree (psutil polling every 0.1 s, and
  the child's own ``ru_maxrss``). ``vs torch`` = the engine's Mpx/s / the torch engine's Mpx/s
  at the same size (when torch is measured).
- ``forward``: the engine's limit: batches of ``--batch-size`` chips of ``--tile-px`` through the
  engine (softmax included), chip pixels / time, in the main thread and in a worker thread (where
  prediction runs its blocks), measured right before and right after each prediction; the
  fastest of the four is kept (the machine may be shared). ``ratio`` = end-to-end Mpx/s / the
  same engine's forward Mpx/s; it includes the overlap of the chips, which costs
  ``(tile / stride)²`` at most.
- ``naive``: what users write today: TorchGeo's ``GridGeoSampler`` over the scene's chips
  (:class:`geoccseg.data.chips.SceneChips`, a TorchGeo ``GeoDataset``) with the same tile, stride
  and batch, the probabilities of each chip added into whole-scene float32 arrays (sum and count),
  then averaged and written at once. Its memory grows with the scene. Like ``predict``, it loads
  the model in the main thread and runs the loop in a worker thread: on a busy machine the first
  thread to use OpenMP ran the forward pass up to 3x slower than the others.

- ``suggest`` (with ``--suggest``): ``geoccseg suggest`` on the same scene, once per fp32 engine
  (scoring has no reduced precision; :func:`geoccseg.suggest.areas.suggest_areas`, 5 squares of the model's default size, the same
  overlap and block, and suggest's own default chips unless ``--tile-px``/``--batch-size`` are
  given: what a user gets, :meth:`~geoccseg.inference.predict.PredictOptions.scoring_tile_for`;
  scoring runs the ``onnx`` engine's ``scoring`` export, and
  PyTorch for ``torch`` and ``openvino``): wall time and peak RSS, to show that scoring where to
  label next keeps memory flat in scene size as prediction does.

**Outputs** in ``--out`` (refused when it holds results, unless ``--overwrite``):
``results.partial.json`` (the rows so far, rewritten after each measure), then at the end
``results.json`` and ``results.md`` (the
table, one row per size and engine: size, engine, wall s, Mpx/s, vs torch, peak RSS MB,
forward-limit Mpx/s, ratio, naive wall s, naive RSS MB, suggest wall s, suggest RSS MB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch

from geoccseg.benchmark.machine import cpu_model
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_partial, save_results
from geoccseg.benchmark.speed import forward_rate, mirror_tiled_scene
from geoccseg.inference.choices import ENGINES, PRECISIONS
from geoccseg.inference.predict import PredictOptions
from geoccseg.io.bundle import read_bundle
from geoccseg.io.probability import encode_uint8
from geoccseg.models import Bundle

POLL_S = 0.1
FORWARD_MIN_S = 6.0


def make_untrained_bundle(dest: Path) -> Path:
    """A bundle of the default architecture with random weights and the chip's statistics."""
    from geoccseg.io.bundle import BundleMeta, save_bundle
    from geoccseg.io.catalog import sample_scene
    from geoccseg.io.normalize import compute_stats
    from geoccseg.io.scene import open_scene
    from geoccseg.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=3, num_classes=2)).eval()
    scene = open_scene(sample_scene())
    meta = BundleMeta(
        model=model.config.to_dict(), classes=["road"], bands=[1, 2, 3], norm=compute_stats(scene),
        pixel_size_m=scene.pixel_size_m, tile_px=256, training={"note": "untrained, for speed benchmarks"},
    )
    return save_bundle(dest, model, meta)


# -- children: one measure per process ---------------------------------------------------------
def child_predict(args: argparse.Namespace) -> dict:
    from geoccseg.inference.predict import PredictOptions, predict_scene

    options = PredictOptions(tile_px=args.tile_px, overlap_px=args.overlap_px, block_px=args.block_px,
                             batch_size=args.batch_size, device=args.device, engine=args.engine, precision=args.precision,
                             workers=args.workers)
    start = time.perf_counter()
    predict_scene(args.scene, args.bundle, args.dest, options, overwrite=True, progress=False)
    return {"seconds": time.perf_counter() - start}


def child_suggest(args: argparse.Namespace) -> dict:
    from geoccseg.inference.predict import PredictOptions
    from geoccseg.suggest.areas import suggest_areas

    options = PredictOptions(tile_px=args.tile_px, overlap_px=args.overlap_px, block_px=args.block_px,
                             batch_size=args.batch_size, device=args.device, engine=args.engine, workers=args.workers)
    start = time.perf_counter()
    suggest_areas([args.scene], args.dest, model=str(args.bundle), n=5, options=options, overwrite=True, progress=False)
    return {"seconds": time.perf_counter() - start}


def child_forward(args: argparse.Namespace) -> dict:
    """The engine's forward limit, in the main thread and in a worker thread (where predict_scene runs blocks)."""
    from geoccseg.inference.engine import build_engine, resolve_engine
    from geoccseg.inference.predict import resolve_device
    from geoccseg.models import load_bundle

    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle)
    engine = build_engine(resolve_engine(args.engine, device, args.precision), bundle.model, device, bundle.meta, args.precision)
    chips = torch.randn(args.batch_size, len(bundle.meta.bands), args.tile_px, args.tile_px)
    main_thread = forward_rate(engine, chips, FORWARD_MIN_S)
    with ThreadPoolExecutor(max_workers=1) as pool:
        worker_thread = pool.submit(forward_rate, engine, chips, FORWARD_MIN_S).result()
    return {"mpx_per_s": max(main_thread, worker_thread), "main_thread_mpx_per_s": main_thread, "worker_thread_mpx_per_s": worker_thread}


def child_naive(args: argparse.Namespace) -> dict:
    """The naive loop; like ``predict_scene``, the model is loaded here and the loop runs in a
    worker thread (on a busy machine the first thread to use OpenMP runs slower), a fair timing."""
    from geoccseg.inference.predict import resolve_device
    from geoccseg.models import load_bundle

    start = time.perf_counter()
    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle)
    model = bundle.model.to(device).eval()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(naive_loop, args, bundle, model, device).result()
    return {"seconds": time.perf_counter() - start}


def naive_loop(args: argparse.Namespace, bundle: Bundle, model: torch.nn.Module, device: str) -> None:
    """GridGeoSampler over SceneChips, probabilities added into whole-scene float32 arrays."""
    from torchgeo.samplers import GridGeoSampler

    from geoccseg.data.chips import SceneChips
    from geoccseg.inference.engine import forward_probabilities
    from geoccseg.inference.predict import open_scene_for

    scene = open_scene_for(args.scene, bundle.meta)
    chips = SceneChips(scene, bundle.meta.norm)
    sampler = GridGeoSampler(chips, size=args.tile_px, stride=args.tile_px - args.overlap_px)
    total = np.zeros((len(bundle.meta.classes), scene.height, scene.width), dtype=np.float32)
    count = np.zeros((scene.height, scene.width), dtype=np.float32)
    left, top = scene.transform.c, scene.transform.f
    xres, yres = scene.res

    def run(batch: list[dict]) -> None:
        probs = forward_probabilities(model, torch.stack([s["image"] for s in batch]), device).cpu().numpy()
        for sample, p in zip(batch, probs):
            xmin, _, _, ymax = sample["bounds"]
            row, col = round((top - ymax) / yres), round((xmin - left) / xres)
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + p.shape[1], scene.height), min(col + p.shape[2], scene.width)
            if r1 > r0 and c1 > c0:
                total[:, r0:r1, c0:c1] += p[:, r0 - row:r1 - row, c0 - col:c1 - col]
                count[r0:r1, c0:c1] += 1

    batch = []
    for query in sampler:
        batch.append(chips[query])
        if len(batch) == args.batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    prob = encode_uint8(total / np.maximum(count, 1))
    with rasterio.open(
        args.dest, "w", driver="GTiff", width=scene.width, height=scene.height, count=prob.shape[0], dtype="uint8",
        crs=scene.crs, transform=scene.transform, tiled=True, compress="deflate",
    ) as out:
        out.write(prob)


CHILDREN = {"predict": child_predict, "forward": child_forward, "naive": child_naive, "suggest": child_suggest}


def run_child(kind: str, args: argparse.Namespace, scene: Path, bundle: Path, dest: Path, engine: str = "torch") -> dict:
    """Run one measure in a subprocess (with ``engine``, ``name[:precision]``); add its peak RSS (MB) over the process tree."""
    tile_px, batch_size = (args.given_tile_px, args.given_batch_size) if kind == "suggest" else (args.tile_px, args.batch_size)
    command = [
        sys.executable, __file__, "--child", kind, "--scene", str(scene), "--bundle", str(bundle), "--dest", str(dest),
        "--overlap-px", str(args.overlap_px), "--block-px", str(args.block_px),
        "--device", args.device, "--engine", engine.partition(":")[0], "--precision", engine.partition(":")[2] or "fp32",
    ]
    if tile_px is not None:
        command += ["--tile-px", str(tile_px)]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if args.workers and kind == "predict":
        command += ["--workers", str(args.workers)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    try:
        while proc.poll() is None:
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} ({engine}) on {scene.name} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = max(peak / 2**20, result.pop("maxrss_mb"))
    return result


# -- report ------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    """The Markdown table: one line per size and engine (the naive loop on the size's first line)."""
    lines = [
        "| size (px) | engine | wall (s) | Mpx/s | vs torch | peak RSS (MB) | forward limit (Mpx/s) | ratio | naive wall (s) | naive RSS (MB) "
        "| suggest wall (s) | suggest RSS (MB) |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        measured = [(name, e) for name, e in r["engines"].items() if "ratio" in e]
        for i, (name, e) in enumerate(measured):
            naive = r.get("naive") if i == 0 else None
            suggest = e.get("suggest")
            vs_torch = f"{e['vs_torch']:.2f}" if "vs_torch" in e else "-"
            lines.append(
                f"| {r['size_px']} | {name} | {e['predict']['seconds']:.1f} | {e['mpx_per_s']:.2f} | {vs_torch} "
                f"| {e['predict']['peak_rss_mb']:.0f} | {e['forward']['mpx_per_s']:.2f} | {e['ratio']:.2f} "
                + (f"| {naive['seconds']:.1f} | {naive['peak_rss_mb']:.0f} " if naive else "| - | - ")
                + (f"| {suggest['seconds']:.1f} | {suggest['peak_rss_mb']:.0f} |" if suggest else "| - | - |")
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_predict")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384], help="scene edges in pixels")
    parser.add_argument("--out", type=Path, default=Path("bench/predict"), help="folder for results.json and results.md")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    parser.add_argument("--model", type=Path, help="bundle folder (default: an untrained default-architecture bundle)")
    defaults = PredictOptions()
    parser.add_argument("--tile-px", type=int, help="chip edge in pixels (default: predict's, PredictOptions.tile_for)")
    parser.add_argument("--overlap-px", type=int, default=defaults.overlap_px, help="chip overlap in pixels")
    parser.add_argument("--block-px", type=int, default=defaults.block_px, help="block edge in pixels")
    parser.add_argument("--batch-size", type=int, help="chips per forward pass (default: predict's, PredictOptions.batch_for)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--engines", nargs="+", default=["torch"],
                        help="inference engines to measure: torch, onnx, openvino (or auto), each with an optional :precision "
                             "(torch:bf16, openvino:bf16, onnx:int8; CPU, experimental)")
    parser.add_argument("--engine", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help="local Dask cluster of N worker processes")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive whole-scene baseline")
    parser.add_argument("--suggest", action="store_true", help="also measure geoccseg suggest (5 squares) on each scene")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for engine in args.engines:
        name, _, precision = engine.partition(":")
        if name not in ENGINES or precision not in ("", *PRECISIONS):
            parser.error(f"unknown engine {engine!r}; use {', '.join(ENGINES)}, optionally with :{', :'.join(PRECISIONS)}")

    if args.child:
        result = CHILDREN[args.child](args)
        result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    claim_results(args.out, args.overwrite)
    bundle = args.model or make_untrained_bundle(args.out / "bundle-untrained")
    meta = read_bundle(bundle).meta
    pixel_size_m = meta.pixel_size_m  # no resampling in predict
    args.given_tile_px, args.given_batch_size = args.tile_px, args.batch_size  # suggest's own defaults unless given
    options = PredictOptions(tile_px=args.tile_px, batch_size=args.batch_size)  # predict's chips unless given
    args.tile_px = options.tile_for(meta)
    args.batch_size = options.batch_for(args.tile_px)
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("child", "scene", "bundle", "dest", "engine")},
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "bundle": str(bundle),
        "sizes": [],
    }
    def save() -> None:
        save_partial(args.out, report)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit("benchmark terminated"))  # so the scenes are removed
    with tempfile.TemporaryDirectory(prefix="geoccseg-bench-") as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            scene = mirror_tiled_scene(tmp / f"scene_{size}.tif", size, pixel_size_m=pixel_size_m)
            row = {"size_px": size, "megapixels": size * size / 1e6, "load_average": os.getloadavg(), "engines": {}}
            report["sizes"].append(row)
            for engine in args.engines:
                measured = row["engines"][engine] = {}
                before = run_child("forward", args, scene, bundle, tmp / "unused.tif", engine)
                measured["predict"] = run_child("predict", args, scene, bundle, tmp / f"prob_{size}.tif", engine)
                measured["mpx_per_s"] = row["megapixels"] / measured["predict"]["seconds"]
                save()
                after = run_child("forward", args, scene, bundle, tmp / "unused.tif", engine)
                measured["forward"] = max(before, after, key=lambda r: r["mpx_per_s"])
                measured["ratio"] = measured["mpx_per_s"] / measured["forward"]["mpx_per_s"]
                if "mpx_per_s" in row["engines"].get("torch", {}):  # fp32 torch, measured first when asked for
                    measured["vs_torch"] = measured["mpx_per_s"] / row["engines"]["torch"]["mpx_per_s"]
                save()
                # scoring runs the engine's export where it has one (onnx), else PyTorch, always in fp32:
                # a reduced-precision row would time the fp32 row's suggest again under its name
                if args.suggest and engine.partition(":")[2] in ("", "fp32"):
                    measured["suggest"] = run_child("suggest", args, scene, bundle, tmp / f"areas_{size}.gpkg", engine)
                    save()
            if not args.no_naive:
                row["naive"] = run_child("naive", args, scene, bundle, tmp / f"naive_{size}.tif")
                save()
            for path in [*tmp.glob(f"*_{size}.tif"), *tmp.glob(f"*_{size}.gpkg")]:
                path.unlink()
            print(table(report["sizes"]), flush=True)
    save_results(args.out, report, table(report["sizes"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
