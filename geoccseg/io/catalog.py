"""What the package ships: its models, described from their ``bundle.json`` alone (no weights, no
torch), and its sample scene.

``geoccseg models`` lists the shipped models with it (and starts at once); notebooks can call
:func:`shipped_model_cards` or :func:`read_model_card` on a bundle folder of their own.
:func:`sample_scene` and :func:`sample_roads` are the one home of the sample's paths (the demo,
the int8 calibration, the benchmarks and the tests read it from here).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geoccseg.errors import GeoccsegError

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
"""Folder of the models shipped in the package, one bundle folder per name."""

SHIPPED_SAMPLE = SHIPPED_MODELS.parent / "sample"
"""Folder of the sample scene shipped in the package (and its ``ATTRIBUTION.md``)."""

#: Scores shown for each test set, in this order, when the bundle records them (all 0-1).
SCORE_KEYS = ("f1", "precision", "recall", "iou", "relaxed_f1", "completeness", "correctness", "quality")


@dataclass
class ModelCard:
    """A model as its bundle describes it.

    Attributes:
        name: the shipped name (``road``, ``crack``) or the bundle folder's name.
        path: the bundle folder.
        classes: foreground class names (class index 1, 2, ...).
        pixel_size_m: pixel size the model was trained at, metres; None: photos of unknown scale.
        tile_px: training chip edge, pixels.
        bands: input bands (1-based).
        encoder: the encoder architecture (``efficientnet-lite0``, ``light``, ...).
        pretrained: what the encoder started from (``{"data": "ImageNet-1k", "package": ..., "licence": ...}``),
            empty when it was trained from scratch.
        training_data: source name -> ``{"folder": ..., "train": n, "select": n, "test": n}`` (image counts);
            for a bundle that records no sources, ``{kind: {"labeled": n}}`` with kind ``photos`` or ``scenes``.
        steps: optimiser steps trained.
        threshold: the model's decision threshold on the foreground probability (0-1); None: 0.5.
        test_scores: held-out test set name -> score name -> value (0-1; ``n_test`` images).
        transfer_scores: scores on data of other sources than the training data, same form.
        licence: the licence of the weights (inherited from the training data), as the bundle records it.
        weights_sha256: SHA-256 of the weights file.
    """

    name: str
    path: Path
    classes: list[str]
    pixel_size_m: float | None
    tile_px: int
    bands: list[int]
    encoder: str
    pretrained: dict = field(default_factory=dict)
    training_data: dict[str, dict] = field(default_factory=dict)
    steps: int | None = None
    threshold: float | None = None
    test_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    transfer_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    licence: str | None = None
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        """The card as JSON-ready values (``path`` as a string)."""
        return {**asdict(self), "path": str(self.path)}


def _scores(table: dict) -> dict[str, dict[str, float]]:
    return {
        name: {key: values[key] for key in ("n_test", *SCORE_KEYS) if key in values}
        for name, values in table.items() if isinstance(values, dict)
    }


def read_model_card(folder: str | os.PathLike, name: str | None = None) -> ModelCard:
    """Describe the bundle in ``folder`` from its ``bundle.json`` (the weights are not read).

    Raises:
        GeoccsegError: no ``bundle.json`` there, or one that is not a bundle's JSON.
    """
    folder = Path(folder)
    meta_path = folder / "bundle.json"
    try:
        meta = json.loads(meta_path.read_text())
        training = meta.get("training") or {}
        data = training.get("data") or {}
        sources = {key: dict(value) for key, value in (training.get("sources") or {}).items()}
        if not sources and data:
            sources = {data.get("source", "data"): {"labeled": data.get("num_labeled")}}
        return ModelCard(
            name=name or folder.name, path=folder, classes=list(meta["classes"]), pixel_size_m=meta.get("pixel_size_m"),
            tile_px=meta.get("tile_px", 256), bands=list(meta["bands"]), encoder=meta["model"].get("encoder", "light"),
            pretrained=dict(training.get("pretrained") or {}), training_data=sources, steps=training.get("steps"),
            threshold=meta.get("threshold"), test_scores=_scores(training.get("held_out_test") or {}),
            transfer_scores=_scores(training.get("transfer") or {}), licence=training.get("licence"),
            weights_sha256=meta.get("weights_sha256"),
        )
    except OSError as exc:
        raise GeoccsegError(f"cannot read {meta_path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GeoccsegError(f"{meta_path} is not the bundle.json of a geoccseg model ({type(exc).__name__}: {exc})") from None


def shipped_models() -> list[str]:
    """Names of the models shipped in the package (``road``, ``crack``)."""
    if not SHIPPED_MODELS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_MODELS.iterdir() if (p / "bundle.json").is_file())


def shipped_model_cards() -> list[ModelCard]:
    """The models shipped in the package, by name."""
    return [read_model_card(SHIPPED_MODELS / name) for name in shipped_models()]


def sample_scene() -> Path:
    """Path of the shipped sample scene: a SpaceNet Las Vegas chip (GeoTIFF, RGB + alpha, 1300 x 1300
    pixels of about 0.3 m, EPSG:4326; CC BY-SA 4.0)."""
    return SHIPPED_SAMPLE / "vegas_img0_rgb.tif"


def sample_roads() -> Path:
    """Path of the sample scene's 38 truth road centrelines (SpaceNet, CC BY-SA 4.0; GeoJSON, CRS84)."""
    return SHIPPED_SAMPLE / "vegas_img0_roads.geojson"
