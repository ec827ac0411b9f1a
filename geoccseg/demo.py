"""``geoccseg demo``: the whole job on the shipped sample scene with the shipped road model.

Predicts the SpaceNet sample (resampled to the road model's 1 m pixels and back), writes the
probability COG, the road lines as a GeoPackage and a ``preview.png`` (image, probability, lines
over the image), and returns a short summary. It is the first command a newcomer runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from geoccseg.errors import GeoccsegError  # noqa: E402
from geoccseg.inference.pipeline import PredictResult, run_predict  # noqa: E402
from geoccseg.io.atomic import atomic_path, check_writable  # noqa: E402

ASSETS = files("geoccseg") / "assets"

TRANSFER_NOTE = (
    "note: the shipped road model learned New England roads (Massachusetts, 1 m) and misses most roads of\n"
    "this Las Vegas scene. To map roads of another region, label the roads of a strip of your scene and\n"
    "train on it (geoccseg train --scene S --labels L --aoi STRIP); see 'Your own scene' in the README."
)


def sample_scene() -> Path:
    """Path of the shipped sample scene (SpaceNet Las Vegas chip, CC BY-SA 4.0)."""
    return Path(str(ASSETS / "sample" / "vegas_img0_rgb.tif"))


@dataclass
class DemoResult:
    """Outputs of :func:`run_demo` and the prediction summary."""

    folder: Path
    vectors: Path
    probabilities: Path
    preview: Path
    predict: PredictResult
    model: str = "road"

    def summary(self) -> str:
        lines = sum(self.predict.lines.values())
        return (
            f"{lines} road lines, {self.predict.length_km:.2f} km in total, in {self.predict.seconds:.1f} s\n"
            f"  lines:       {self.vectors}\n  probability: {self.probabilities}\n  preview:     {self.preview}"
            + (f"\n{TRANSFER_NOTE}" if self.model == "road" else "")
        )


def run_demo(out_dir: str | os.PathLike = "geoccseg-demo", model: str = "road", progress: bool = True) -> DemoResult:
    """Run prediction and vectorisation on the sample scene; outputs in ``out_dir`` (its three
    demo files are replaced; nothing else in it is touched).

    Raises:
        GeoccsegError: ``out_dir`` is a file or cannot be created, or a folder stands in place of
            an output; before any computation.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise GeoccsegError(f"{folder} exists and is not a folder; give the demo a folder with -o, e.g. geoccseg-demo")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoccsegError(f"cannot create the demo folder {folder} ({exc.strerror}); choose another folder with -o") from None
    scene = sample_scene()
    vectors, prob = folder / "roads.gpkg", folder / "road_probability.tif"
    check_writable(folder / "preview.png", overwrite=True)
    result = run_predict(scene, vectors, model=model, prob_out=prob, overwrite=True, progress=progress)
    preview = render_preview(scene, prob, vectors, folder / "preview.png")
    return DemoResult(folder=folder, vectors=vectors, probabilities=prob, preview=preview, predict=result, model=model)


def render_preview(scene: str | os.PathLike, prob: str | os.PathLike, vectors: str | os.PathLike, out: str | os.PathLike, max_px: int = 1000) -> Path:
    """Three panels: the image, the predicted probability, and the lines over the image (PNG ``out``, replaced)."""
    out = check_writable(out, overwrite=True, example="preview.png")
    with rasterio.open(scene) as ds:
        scale = max(1, int(np.ceil(max(ds.width, ds.height) / max_px)))
        shape = (ds.height // scale, ds.width // scale)
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        image = ds.read(bands, out_shape=(len(bands), *shape)).astype(np.float32)
        extent = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)
        # Degrees of longitude shrink with latitude: keep ground distances square on screen.
        geographic = ds.crs is not None and ds.crs.is_geographic
        aspect = 1 / np.cos(np.radians((extent[2] + extent[3]) / 2)) if geographic else 1.0
    lo, hi = np.percentile(image, [1, 99])
    rgb = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.moveaxis(rgb, 0, -1) if rgb.shape[0] == 3 else rgb[0]
    with rasterio.open(prob) as ds:
        p = ds.read(1, out_shape=shape, masked=True).astype(np.float32) / (255.0 if ds.dtypes[0] == "uint8" else 1.0)
        name = ds.descriptions[0] or "class_1"
    layers = gpd.list_layers(vectors)["name"].tolist() if str(vectors).endswith(".gpkg") else [None]
    lines = [gpd.read_file(vectors, layer=layer) for layer in layers]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    axes[0].imshow(rgb, extent=extent, cmap="gray")
    axes[0].set_title("image")
    shown = axes[1].imshow(p, extent=extent, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"{name} probability")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(rgb, extent=extent, cmap="gray")
    count = 0
    for frame in lines:
        if len(frame):
            frame.plot(ax=axes[2], color="#ff2d2d", linewidth=1.6)
            count += len(frame)
    axes[2].set_title(f"{count} vectorised lines")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect(aspect)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out
