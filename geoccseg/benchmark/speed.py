"""How fast an inference engine runs, for the speed benchmarks (``pipelines/benchmark_predict.py``,
``pipelines/benchmark_precision.py``)."""

from __future__ import annotations

import time

import torch

from geoccseg.inference.engine import Engine


def forward_rate(engine: Engine, chips: torch.Tensor, min_s: float) -> float:
    """Chip megapixels per second of repeated forward passes of ``engine`` on ``chips`` (B, C, H, W):
    two warm-up passes, then passes for at least ``min_s`` seconds and at least 3 (CUDA synchronised)."""
    synchronise = torch.cuda.synchronize if engine.device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        engine(chips)
    synchronise()
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < min_s or batches < 3:
        engine(chips)
        batches += 1
    synchronise()
    return batches * chips.shape[0] * chips.shape[2] * chips.shape[3] / (time.perf_counter() - start) / 1e6
