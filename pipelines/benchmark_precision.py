#!/usr/bin/env python
"""Engines and reduced precisions on the CPU: held-out F1, probability differences and forward speed.

``geoccseg predict --engine ... --precision ...`` can run the shipped models in fp32 (``onnx``,
``openvino``, ``torch``), bf16 (``openvino``, ``torch``) or int8 (``onnx``). A variant may replace
fp32 only where it keeps the quality (issue 18): held-out F1 within :data:`MAX_F1_DROP` of fp32
and probabilities within :data:`MAX_DIFFERENCE_255` / 255 of fp32 on the shipped sample. This
measures, for each variant against ``onnx`` fp32 (the default engine):

* pixel F1 at the model's own threshold on the shipped models' *test* images
  (the held-out parts each model records, :func:`geoccseg.benchmark.split.recorded_splits`:
  Massachusetts and Dubai for ``road``, DeepCrack for ``crack``), each image predicted through ``geoccseg predict``'s chip grid
  (:func:`geoccseg.inference.array.predict_array`, 512-px chips, 32-px overlaps, one chip per
  pass), and the largest and mean difference of its uint8 probabilities (p x 255) from fp32;
* the same differences on the shipped sample scene (:func:`geoccseg.inference.predict.predict_scene`
  at predict's defaults);
* the forward rate of one 512-px chip of the road model (Mpx/s, the median of
  :data:`FORWARD_ROUNDS` rounds that alternate the variants).

The ``openvino`` variants need ``pip install 'geoccseg[openvino]'``; bf16 needs a CPU with bf16
instructions (AVX-512 BF16 or AMX). Run::

    python pipelines/benchmark_precision.py --out pipelines/results/precision --overwrite
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from geoccseg.benchmark.design import data_root
from geoccseg.benchmark.machine import machine
from geoccseg.benchmark.runs import claim_results, one_line_errors, save_partial, save_results
from geoccseg.benchmark.speed import forward_rate
from geoccseg.benchmark.score import pairs_mark_unlabeled_255, read_truth_mask
from geoccseg.benchmark.split import SHIPPED_SOURCES, recorded_splits
from geoccseg.data.photos import read_photo
from geoccseg.evaluate import PixelScorer
from geoccseg.inference.array import predict_array
from geoccseg.inference.engine import build_engine
from geoccseg.inference.predict import PredictOptions, predict_scene
from geoccseg.io.bundle import resolve_model
from geoccseg.io.probability import encode_uint8
from geoccseg.models import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root(ROOT)
SAMPLE = ROOT / "geoccseg" / "assets" / "sample" / "vegas_img0_rgb.tif"

REFERENCE = ("onnx", "fp32")
"""The variant the others are compared with: the default engine at full precision."""

VARIANTS = (REFERENCE, ("openvino", "fp32"), ("torch", "bf16"), ("openvino", "bf16"), ("onnx", "int8"))
"""(engine, precision) pairs measured by default."""

MAX_F1_DROP = 0.005
"""Largest held-out F1 loss against fp32 a reduced precision may have (issue 18)."""

MAX_DIFFERENCE_255 = 2
"""Largest difference of uint8 probabilities from fp32 on the sample a reduced precision may have (issue 18)."""

TILE_PX, OVERLAP_PX = 512, 32
"""Chip grid of the held-out images (predict's defaults)."""

FORWARD_ROUNDS, FORWARD_MIN_S = 3, 3.0
"""Rounds of the forward-rate measure and the seconds each variant runs per round (after two warm-up passes)."""


def label(variant: tuple[str, str]) -> str:
    return f"{variant[0]} {variant[1]}"


def held_out(name: str, bundle) -> list[tuple[str, list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray | None]]]]]:
    """(set name, [(image, (truth, labeled))]) of a shipped model's test images (the ones it
    records), read once."""
    sets = []
    for source, parts in recorded_splits(bundle.meta.training, SHIPPED_SOURCES[name], DATA).items():
        unlabeled_255 = pairs_mark_unlabeled_255(parts["test"])  # as the benchmark's scores read the masks
        sets.append((f"{source} test", [(read_photo(i), read_truth_mask(m, unlabeled_255)) for i, m in parts["test"].values()]))
    return sets


def predict_set(bundle, images: list, variant: tuple[str, str]) -> list[np.ndarray]:
    """uint8 foreground probabilities (p x 255) of each image with one variant."""
    engine, precision = variant
    return [encode_uint8(predict_array(bundle, image, tile_px=TILE_PX, overlap_px=OVERLAP_PX, batch_size=1, device="cpu",
                                       engine=engine, precision=precision)[1:].sum(0)) for image, _ in images]


def differences(probs: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Largest and mean absolute difference (in 1/255) and the share of pixels more than MAX_DIFFERENCE_255 apart."""
    diff = np.concatenate([np.abs(p.astype(np.int16) - r.astype(np.int16)).ravel() for p, r in zip(probs, reference)])
    return {"max_255": int(diff.max()), "mean_255": round(float(diff.mean()), 4),
            "share_over": float((diff > MAX_DIFFERENCE_255).mean())}


def f1(bundle, probs: list[np.ndarray], images: list) -> float:
    scorer = PixelScorer(bundle.meta.threshold or 0.5)
    for prob, (_, (truth, labeled)) in zip(probs, images):
        scorer.add(prob.astype(np.float32) / 255, truth, labeled)
    return round(scorer.scores().f1, 4)


def sample_probability(variant: tuple[str, str], folder: Path) -> np.ndarray:
    """The road model's uint8 probabilities of the shipped sample, as ``geoccseg predict`` writes them."""
    engine, precision = variant
    out = predict_scene(SAMPLE, load_bundle(resolve_model("road")), folder / f"{engine}-{precision}.tif",
                        PredictOptions(device="cpu", engine=engine, precision=precision), progress=False)
    with rasterio.open(out) as src:
        return src.read(masked=True).filled(0)


def forward_rates(variants: list[tuple[str, str]]) -> dict[str, dict]:
    """Median (and all) Mpx/s of one 512-px chip of the road model per variant, rounds alternating the variants."""
    road = load_bundle(resolve_model("road"))
    engines = {v: build_engine(v[0], road.model, "cpu", road.meta, v[1]) for v in variants}
    chip = torch.randn(1, len(road.meta.bands), TILE_PX, TILE_PX)
    rates: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for _ in range(FORWARD_ROUNDS):
        for variant, engine in engines.items():
            rates[variant].append(round(forward_rate(engine, chip, FORWARD_MIN_S), 3))
    return {label(v): {"median": statistics.median(r), "rounds": r} for v, r in rates.items()}


def tables(result: dict) -> str:
    rows = result["held_out"]
    lines = [f"| model | set | engine / precision | F1 | vs {result['reference']} | max diff (/255) | mean diff (/255) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['set']} | {r['variant']} | {r['f1']:.4f} | {r['f1_change']:+.4f} | "
                     f"{r['max_255']} | {r['mean_255']:.3f} |")
    reference = result["forward"][result["reference"]]["median"]
    lines += ["", f"| engine / precision | sample max diff (/255) | sample mean diff (/255) | forward Mpx/s (512 px) | vs {result['reference']} | within the bounds |",
              "|---|---:|---:|---:|---:|---|"]
    for name, verdict in result["verdicts"].items():
        sample, forward = result["sample"][name], result["forward"][name]["median"]
        lines.append(f"| {name} | {sample['max_255']} | {sample['mean_255']:.3f} | {forward:.2f} | {forward / reference:.2f} | {verdict} |")
    return "\n".join(lines) + "\n"


def verdicts(result: dict) -> dict[str, str]:
    """Whether each variant meets the issue's bounds against the reference (the first variant: 'reference')."""
    out = {}
    for name, sample in result["sample"].items():
        if name == result["reference"]:
            out[name] = "reference"
            continue
        drop = max(-r["f1_change"] for r in result["held_out"] if r["variant"] == name)
        reasons = [f"F1 -{drop:.4f}"] if drop > MAX_F1_DROP else []
        reasons += [f"sample max {sample['max_255']}/255"] if sample["max_255"] > MAX_DIFFERENCE_255 else []
        out[name] = "yes" if not reasons else "no (" + ", ".join(reasons) + ")"
    return out


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_run, argv, "benchmark_precision")


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=[f"{e}/{p}" for e, p in VARIANTS],
                        help="ENGINE/PRECISION pairs; the first is the reference (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=["road", "crack"], help="shipped models (default road crack)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    args = parser.parse_args(argv)
    variants = [tuple(v.split("/")) for v in args.variants]
    claim_results(args.out, args.overwrite)
    result: dict = {"machine": machine(), "reference": label(variants[0]), "held_out": [], "sample": {}}

    def save() -> None:
        save_partial(args.out, result)

    for name in args.models:
        bundle = load_bundle(resolve_model(name))
        for set_name, images in held_out(name, bundle):
            reference = predict_set(bundle, images, variants[0])
            reference_f1 = f1(bundle, reference, images)
            for variant in variants:
                start = time.perf_counter()
                probs = reference if variant == variants[0] else predict_set(bundle, images, variant)
                score = f1(bundle, probs, images)
                result["held_out"].append({"model": name, "set": set_name, "n_images": len(images), "variant": label(variant),
                                           "f1": score, "f1_change": round(score - reference_f1, 4),
                                           **differences(probs, reference), "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(result["held_out"][-1]), flush=True)
                save()
    with tempfile.TemporaryDirectory() as folder:
        sample = {variant: sample_probability(variant, Path(folder)) for variant in variants}
    for variant, probability in sample.items():
        result["sample"][label(variant)] = differences([probability], [sample[variants[0]]])
    print(json.dumps(result["sample"]), flush=True)
    result["forward"] = forward_rates(variants)
    result["verdicts"] = verdicts(result)
    save_results(args.out, result, tables(result))
    print(tables(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
