"""Prediction on one in-memory image (photos, notebook cells, benchmark evaluation).

Scenes go through :mod:`geoccseg.inference.predict` (block-wise, any size); this is the small
path for a photo that fits in memory, with the same normalisation as training.
"""

from __future__ import annotations

import numpy as np
import torch

from geoccseg.io.normalize import NormStats


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_array(model: torch.nn.Module, norm: NormStats, image: np.ndarray, device: str | torch.device = "auto") -> np.ndarray:
    """Class probabilities of one image.

    Args:
        model: a network with ``forward_logits`` (e.g. ``load_bundle(path).model``).
        norm: the bundle's normalisation statistics.
        image: (C, H, W) array in file units (e.g. uint8 photo bands).
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        (K, H, W) float32 softmax probabilities (class 0 = background).
    """
    device = pick_device(device) if isinstance(device, str) else device
    model = model.to(device).eval()
    x = torch.as_tensor(norm.apply(image.astype(np.float32)))[None].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model.forward_logits(x)
    return logits.float().softmax(1)[0].cpu().numpy()
