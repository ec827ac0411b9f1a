"""What ``geoccseg demo`` runs (:mod:`geoccseg.demo`): the shipped model on the sample, fine-tuning
on a strip, scores and the preview."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
from matplotlib.figure import Figure  # drawn without pyplot: no backend chosen, a notebook's stays as it is
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
import numpy as np
import rasterio
from PIL import Image
from shapely.geometry import Polygon

from geoccseg.benchmark import quiet_lightning
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import LineCounts, Strips, clipped, score_rest, strips
from geoccseg.demo.settings import BUFFER_M, FINE_TUNE, LABELED_FRACTION, STEPS
from geoccseg.evaluate.files import read_lines
from geoccseg.inference.pipeline import PredictResult, run_predict
from geoccseg.io.atomic import atomic_path, check_writable, move_all_into_place, scratch_dir
from geoccseg.io.bundle import resolve_model
from geoccseg.io.catalog import sample_roads, sample_scene
from geoccseg.io.display import read_display
from geoccseg.io.probability import probabilities
from geoccseg.io.vector_write import write_vectors
from geoccseg.models import load_bundle
from geoccseg.train import TrainConfig, train

@dataclass
class StripResult:
    """Part (b) of the demo: the road model fine-tuned on the labeled strip, mapping the rest.

    Attributes:
        vectors: the fine-tuned model's lines over the whole scene (``roads_fine_tuned.gpkg``).
        aoi: the labeled strip, a polygon (``labeled_strip.gpkg``), as ``geoccseg train --aoi`` takes it.
        labeled_km: length of the truth centrelines inside the strip (the training labels), in kilometres.
        steps: fine-tuning steps run.
        train_seconds: wall time of the fine-tuning, in seconds.
        predict: the prediction of the scene with the fine-tuned model.
        scores: its lines against the truth in the unlabeled rest (lengths in metres).
    """

    vectors: Path
    aoi: Path
    labeled_km: float
    steps: int
    train_seconds: float
    predict: PredictResult
    scores: LineCounts


@dataclass
class DemoResult:
    """Outputs and figures of :func:`run_demo`.

    Attributes:
        folder: the demo folder.
        vectors: lines of the shipped road model, part (a) (``roads.gpkg``).
        probabilities: its road probability COG (``road_probability.tif``).
        preview: ``preview.png``.
        predict: the prediction of part (a).
        shipped: part (a)'s lines against the truth in the unlabeled rest (lengths in metres).
        fine_tuned: part (b), None with ``quick``.
        seconds: wall time of the whole demo, in seconds.
        model: the road model predicted in (a) and fine-tuned in (b).
    """

    folder: Path
    vectors: Path
    probabilities: Path
    preview: Path
    predict: PredictResult
    shipped: LineCounts
    fine_tuned: StripResult | None
    seconds: float
    model: str = "road"

    def statement(self) -> str:
        """One honest sentence on what the figures show."""
        rest = f"{1 - LABELED_FRACTION:.0%} of the scene"
        found = f"the shipped road model found {self.shipped.completeness:.0%} of the roads in the unlabeled {rest}"
        b = self.fine_tuned
        if b is None:
            return (f"{found.capitalize()} (correctness {self.shipped.correctness:.2f}). Labeling a strip of a scene maps the "
                    f"rest of it: run the demo without --quick to see it here (1-2 minutes on 2 CPU cores).")
        change = "raised" if b.scores.completeness > self.shipped.completeness else "changed"
        return (f"{found.capitalize()}; labeling the roads of the western {LABELED_FRACTION:.0%} and {_duration(b.train_seconds)} of "
                f"fine-tuning {change} it to {b.scores.completeness:.0%}, at correctness {b.scores.correctness:.2f} "
                f"(shipped model: {self.shipped.correctness:.2f}).")

    def commands(self) -> str:
        """What a user types to do part (b) on their own scene (and, with the values given, on the sample)."""
        steps = self.fine_tuned.steps if self.fine_tuned else STEPS
        flags = " ".join(f"--{key.replace('_', '-')} {value:g}" for key, value in fine_tune_options(steps).items())
        strip = self.fine_tuned.aoi if self.fine_tuned else self.folder / "labeled_strip.gpkg"
        return (
            "To map the roads of your own scene: digitise the roads of a strip of it (lines) and the strip (a polygon), then\n"
            f'  geoccseg train --scene "$SCENE" --labels "$ROADS" --aoi "$STRIP" --init-from {shlex.quote(self.model)} {flags} '
            f"--max-steps {steps} -o my_road_model\n"
            '  geoccseg predict "$SCENE" --model my_road_model -o roads.gpkg\n'
            f"where, for this sample{'' if self.fine_tuned else ' (the full demo writes the strip)'}:\n"
            f"  SCENE={shlex.quote(str(sample_scene()))} ROADS={shlex.quote(str(sample_roads()))} STRIP={shlex.quote(str(strip))}"
        )

    def summary(self) -> str:
        """What ``geoccseg demo`` prints: outputs, figures, the statement and the commands."""
        a, b = self.predict, self.fine_tuned
        lines = [f"(a) shipped road model: {sum(a.lines.values())} road lines, {a.length_km:.2f} km, in {a.seconds:.1f} s -> {self.vectors}"]
        if b is not None:
            lines.append(
                f"(b) label a strip: fine-tuned on the roads of the western {LABELED_FRACTION:.0%} ({b.labeled_km:.2f} km of centrelines) "
                f"for {b.steps} steps in {_duration(b.train_seconds)}, then mapped the scene: {sum(b.predict.lines.values())} "
                f"road lines, {b.predict.length_km:.2f} km -> {b.vectors}"
            )
        lines += [
            f"scored on the unlabeled eastern {1 - LABELED_FRACTION:.0%} against its {self.shipped.truth_total_m / 1000:.2f} km of "
            f"truth centrelines (buffer {BUFFER_M:g} m):",
            f"  {'':<24}completeness  correctness",
            f"  {'(a) shipped road model':<24}{self.shipped.completeness:>12.2f}  {self.shipped.correctness:>11.2f}",
        ]
        if b is not None:
            lines.append(f"  {'(b) label a strip':<24}{b.scores.completeness:>12.2f}  {b.scores.correctness:>11.2f}")
        lines += [
            self.statement(),
            f"probability: {self.probabilities}",
            f"preview:     {self.preview}",
            f"done in {_duration(self.seconds)}",
            self.commands(),
        ]
        return "\n".join(lines)


def run_demo(
    out_dir: str | os.PathLike = "geoccseg-demo",
    quick: bool = False,
    *,
    model: str = "road",
    steps: int = STEPS,
    progress: bool = True,
    overwrite: bool = False,
) -> DemoResult:
    """Run the demo on the sample scene; outputs in ``out_dir``.

    Writes ``roads.gpkg``, ``road_probability.tif`` and ``preview.png`` and, unless ``quick``,
    ``labeled_strip.gpkg`` and ``roads_fine_tuned.gpkg``, all into a hidden work folder there (with
    the fine-tuned model), moved into place each atomically at the end: a demo stopped or failing
    halfway leaves the folder as it was; nothing else in ``out_dir`` is touched.

    Args:
        out_dir: the demo folder, created if missing.
        quick: run part (a) alone (seconds instead of minutes).
        model: road model of (a), fine-tuned in (b): a shipped name or a bundle folder predicting ``road``.
        steps: fine-tuning steps of (b).
        progress: show progress bars and what the demo is doing (on stderr).
        overwrite: replace the demo's files where ``out_dir`` already holds them (an earlier demo's,
            or the user's own ``roads.gpkg``); without it they are refused before any work.

    Raises:
        GeoccsegError: ``out_dir`` is a file or cannot be created, a folder stands in place of an
            output, an output exists without ``overwrite``, or ``model`` does not predict roads;
            before any computation.
        TrainingStopped: SIGINT or SIGTERM stopped the fine-tuning.
    """
    start = time.perf_counter()
    folder = Path(out_dir)
    model = os.fspath(model)  # a Path goes into the training config (YAML) and the printed commands
    if folder.exists() and not folder.is_dir():
        raise GeoccsegError(f"{folder} exists and is not a folder; give the demo a folder with -o, e.g. geoccseg-demo")
    if steps < 1:
        raise GeoccsegError(f"steps must be at least 1, got {steps}")
    bundle = load_bundle(resolve_model(model))
    if list(bundle.meta.classes) != ["road"]:
        raise GeoccsegError(f"the demo maps the sample's roads, but model {model} predicts {', '.join(bundle.meta.classes)}; "
                            "give a road model (road, or a bundle folder trained on roads)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoccsegError(f"cannot create the demo folder {folder} ({exc.strerror}); choose another folder with -o") from None
    scene, truth = sample_scene(), sample_roads()
    vectors, prob, preview = folder / "roads.gpkg", folder / "road_probability.tif", folder / "preview.png"
    aoi, tuned = folder / "labeled_strip.gpkg", folder / "roads_fine_tuned.gpkg"
    for path in (vectors, prob, preview) if quick else (vectors, prob, preview, aoi, tuned):
        check_writable(path, overwrite=overwrite)  # an earlier demo's (or the user's) files: only with overwrite

    outputs = (vectors, prob, preview) if quick else (vectors, prob, preview, aoi, tuned)
    with scratch_dir(vectors) as work:  # written here, moved into place at the end: a stopped demo leaves the folder as it was
        at = {path: work / path.name for path in outputs}
        _say(progress, "(a) the shipped road model maps the sample")
        shipped = run_predict(scene, at[vectors], model=bundle, prob_out=at[prob], overwrite=True, progress=progress)
        split = strips(scene, LABELED_FRACTION)
        truth_lines = read_lines(truth)
        fine_tuned = None
        if not quick:
            fine_tuned = _label_a_strip(scene, truth_lines, split, at[aoi], at[tuned], model, steps, progress)
        scores = score_rest(read_lines(at[vectors], "PRED"), truth_lines, split, BUFFER_M)
        render_preview(
            scene, at[prob], at[vectors], at[preview], fine_tuned=fine_tuned.vectors if fine_tuned else None, truth=truth_lines,
            labeled=split.labeled, captions=(_caption("(a) shipped road model", scores),
                                             _caption("(b) fine-tuned on the labeled strip", fine_tuned.scores) if fine_tuned else None),
        )
        for path in outputs:  # all checked again before the first move: none moves unless all can
            check_writable(path, overwrite=overwrite)
        (work / "replaced-outputs").mkdir()
        move_all_into_place([(at[path], path) for path in outputs], work / "replaced-outputs", overwrite=overwrite)  # a set, or nothing
    shipped = dataclasses.replace(shipped, vectors=vectors, probabilities=prob)
    if fine_tuned is not None:
        fine_tuned = dataclasses.replace(fine_tuned, vectors=tuned, aoi=aoi,
                                         predict=dataclasses.replace(fine_tuned.predict, vectors=tuned))
    return DemoResult(
        folder=folder, vectors=vectors, probabilities=prob, preview=preview, predict=shipped, shipped=scores,
        fine_tuned=fine_tuned, seconds=time.perf_counter() - start, model=model,
    )


def strip_config(out: str | os.PathLike, aoi: str | os.PathLike, *, model: str = "road", steps: int = STEPS,
                 progress: bool = False) -> TrainConfig:
    """The training of part (b): fine-tune ``model`` with the method on the sample's truth centrelines
    inside ``aoi``, with :func:`fine_tune_options`, into the bundle folder ``out`` (one checkpoint, at the end)."""
    return TrainConfig(
        out=str(out), scenes=[str(sample_scene())], labels=str(sample_roads()), aoi=str(aoi), init_from=model,
        max_steps=steps, val_every=steps, checkpoint_every=steps, checkpoint_minutes=None, seed=0, progress=progress,
        **fine_tune_options(steps),
    )


def fine_tune_options(steps: int = STEPS) -> dict:
    """:data:`FINE_TUNE` for a run of ``steps`` steps: fewer than :data:`STEPS` start the unlabeled
    terms and end their ramp-up as early in proportion (at a quarter of the run, over the whole run),
    so that a short run uses the method too."""
    return {**FINE_TUNE, "unlabeled_start_steps": min(FINE_TUNE["unlabeled_start_steps"], steps * FINE_TUNE["unlabeled_start_steps"] // STEPS),
            "rampup_steps": min(FINE_TUNE["rampup_steps"], steps)}


def write_strip(split: Strips, path: str | os.PathLike) -> Path:
    """Write the labeled strip of ``split`` as ``geoccseg train --aoi`` takes it: one polygon in the
    scene's CRS, layer ``labeled_strip`` of the GeoPackage ``path`` (replaced, atomically), written as
    every other vector output is (:func:`~geoccseg.io.vector_write.write_vectors`: GeoPackage 1.2)."""
    strip = gpd.GeoDataFrame({"name": ["labeled strip"]}, geometry=[split.labeled], crs=split.crs)
    return write_vectors({"labeled_strip": strip}, path, overwrite=True)


def _label_a_strip(scene: Path, truth_lines: gpd.GeoSeries, split: Strips, aoi: Path, tuned: Path, model: str,
                   steps: int, progress: bool) -> StripResult:
    """Part (b): write the strip as ``aoi``, fine-tune ``model`` on the truth inside it, map the scene into ``tuned``."""
    write_strip(split, aoi)
    labels = clipped(truth_lines.to_crs(split.crs), split.labeled)
    labeled_km = float(labels.to_crs(labels.estimate_utm_crs()).length.sum() / 1000)
    _say(progress, f"(b) label a strip: fine-tuning the road model on the {labeled_km:.2f} km of truth centrelines in the "
                   f"western {LABELED_FRACTION:.0%} ({steps} steps)")
    with scratch_dir(tuned) as work:
        t0 = time.perf_counter()
        with _quiet_lightning():
            result = train(strip_config(work / "model", aoi, model=model, steps=steps, progress=progress))
        seconds = time.perf_counter() - t0
        _say(progress, "(b) the fine-tuned model maps the sample")
        predicted = run_predict(scene, tuned, model=result.out, overwrite=True, progress=progress)
    scores = score_rest(read_lines(tuned, "PRED"), truth_lines, split, BUFFER_M)
    return StripResult(vectors=tuned, aoi=aoi, labeled_km=labeled_km, steps=result.steps, train_seconds=seconds,
                       predict=predicted, scores=scores)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's banners and repeated warnings silenced for the duration (filters and log level restored)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    with warnings.catch_warnings():
        quiet_lightning()
        try:
            yield
        finally:
            logger.setLevel(level)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``42 s`` under a minute, else ``2.2 min``."""
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _caption(name: str, scores: LineCounts) -> str:
    return f"{name}\ncompleteness {scores.completeness:.2f}, correctness {scores.correctness:.2f} east of the strip"


def render_preview(
    scene: str | os.PathLike,
    prob: str | os.PathLike,
    vectors: str | os.PathLike,
    out: str | os.PathLike,
    max_px: int = 1000,
    *,
    fine_tuned: str | os.PathLike | None = None,
    truth: gpd.GeoSeries | None = None,
    labeled: Polygon | None = None,
    captions: tuple[str | None, str | None] = (None, None),
) -> Path:
    """Draw the image, the predicted probability and the lines of ``vectors`` over the image, and
    with ``fine_tuned`` a fourth panel of its lines (PNG ``out``, replaced).

    Args:
        scene: the GeoTIFF scene.
        prob: the probability raster of ``vectors``.
        vectors: lines file (every layer drawn, red).
        out: the PNG.
        max_px: longest side of the image drawn, in pixels (the scene is read decimated).
        fine_tuned: lines file of a second model, drawn in a fourth panel (the panels are then 2 x 2).
        truth: truth lines, drawn cyan under the predicted lines of each lines panel.
        labeled: the labeled strip, a polygon in the scene's CRS, outlined yellow in each lines panel.
        captions: titles of the lines panels (default: their number of lines).
    """
    out = check_writable(out, overwrite=True, example="preview.png")
    shown_scene = read_display(scene, max_px)
    rgb, extent, crs, aspect = shown_scene.image, shown_scene.extent, shown_scene.crs, shown_scene.aspect
    with rasterio.open(prob) as ds:
        p = probabilities(ds.read(1, out_shape=rgb.shape[:2], masked=True))
        name = ds.descriptions[0] or "class_1"
    if fine_tuned is None:
        fig = Figure(figsize=(15, 5.4))
        axes = fig.subplots(1, 3)
    else:
        fig = Figure(figsize=(11, 11))
        axes = fig.subplots(2, 2).ravel()
    axes[0].imshow(rgb, extent=extent, cmap="gray")
    axes[0].set_title("image")
    shown = axes[1].imshow(p, extent=extent, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"{name} probability" + (" (a)" if fine_tuned is not None else ""))
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    for ax, lines, caption in zip(axes[2:], (vectors, fine_tuned), captions):
        count = _draw_lines(ax, rgb, extent, lines, truth.to_crs(crs) if truth is not None else None,
                            gpd.GeoSeries([labeled], crs=crs) if labeled is not None else None)
        ax.set_title(caption or f"{count} vectorised lines", fontsize=10)
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
        _save_palette_png(fig, tmp, dpi=90)
    return out


def _save_palette_png(fig: Figure, path: Path, dpi: int) -> None:
    """Save ``fig`` as a PNG of 256 colours (octree palette, Floyd-Steinberg dithering, no alpha):
    the full demo's preview of aerial imagery is 0.27 MB instead of matplotlib's 1 MB RGBA PNG, with
    the same text, lines and smooth colour bar."""
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=dpi, format="png")
    rgb = Image.open(rendered).convert("RGB")
    palette = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, format="PNG", optimize=True)


def _draw_lines(ax, rgb: np.ndarray, extent: tuple, path: str | os.PathLike, truth: gpd.GeoSeries | None,
                labeled: gpd.GeoSeries | None) -> int:
    """The image, the truth (cyan), every layer of the lines file ``path`` (red) and the labeled
    strip's outline (yellow) on ``ax``, with a legend when there is more than the lines; returns the number of lines."""
    ax.imshow(rgb, extent=extent, cmap="gray")
    handles = [Line2D([], [], color="#ff2d2d", linewidth=1.6, label="predicted")]
    if truth is not None:
        truth.plot(ax=ax, color="cyan", linewidth=0.9)
        handles.append(Line2D([], [], color="cyan", linewidth=0.9, label="truth"))
    layers = gpd.list_layers(path)["name"].tolist() if str(path).endswith(".gpkg") else [None]
    count = 0
    for layer in layers:
        frame = gpd.read_file(path, layer=layer)
        if len(frame):
            frame.plot(ax=ax, color="#ff2d2d", linewidth=1.6)
            count += len(frame)
    if labeled is not None:
        labeled.plot(ax=ax, facecolor="yellow", edgecolor="none", alpha=0.12)
        labeled.boundary.plot(ax=ax, color="yellow", linewidth=1.4, linestyle="--")
        handles.append(Patch(facecolor=(1, 1, 0, 0.25), edgecolor="yellow", linestyle="--", label="labeled strip"))
    if len(handles) > 1:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    return count
