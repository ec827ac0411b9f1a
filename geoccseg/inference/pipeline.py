"""Scene to GIS lines in one call: predict probabilities, vectorise them, write the lines.

:func:`run_predict` is what ``geoccseg predict`` and the notebooks call for a georeferenced scene.
It checks every output before any computation, predicts the probability COG block by block
(:func:`geoccseg.inference.predict.predict_scene`), vectorises it block by block
(:func:`geoccseg.vectorize.vectorize_raster`) and writes the lines atomically
(:func:`geoccseg.io.vector_write.write_vectors`). Photos, folders and patterns of photos go to
:func:`geoccseg.inference.photos.predict_photos` instead (:func:`is_scene` tells them apart).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.errors

from geoccseg.inference.confidence import ConfidenceThresholds, check_confidence_out, write_confidence_cog
from geoccseg.inference.cog import provenance
from geoccseg.inference.predict import PredictOptions, bundle_files, check_prob_out, predict_scene
from geoccseg.io.atomic import check_not_input, scratch_dir
from geoccseg.io.bundle import resolve_model
from geoccseg.io.formats import RASTER_SUFFIXES
from geoccseg.io.scene import is_gdal_path, open_raster
from geoccseg.io.vector_write import check_vector_crs, check_vector_output, write_vectors
from geoccseg.models import Bundle, load_bundle
from geoccseg.vectorize import VectorizeParams, vectorize_raster
from geoccseg.vectorize.blocks import line_block_px
from geoccseg.vectorize.network import DEFAULT_SNAP_M, check_graph_output, with_graph_layers


@dataclass
class PredictResult:
    """What :func:`run_predict` produced.

    Attributes:
        vectors: the GIS file of lines.
        probabilities: the probability COG, or None when it was not kept.
        lines: number of lines per class.
        length_km: total line length over all classes, in kilometres.
        seconds: wall time of the whole run, in seconds.
        params: the vectoriser settings the lines were drawn with (threshold resolved).
    """

    vectors: Path
    probabilities: Path | None
    lines: dict[str, int]
    length_km: float
    seconds: float
    params: VectorizeParams


def is_scene(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> bool:
    """True when the inputs are one georeferenced scene: a single GeoTIFF or VRT with a CRS
    (:data:`~geoccseg.io.formats.RASTER_SUFFIXES`; or one GDAL cannot open, so that its error is
    the scene reader's), or a URL or GDAL virtual file
    (``/vsicurl/...``, ``https://...``, ``s3://...``). Anything else (photos, a plain TIFF
    without CRS, folders, patterns, several files) is photos."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if len(items) != 1:
        return False
    if is_gdal_path(items[0]):  # a URL or GDAL virtual file: the scene reader opens it or says why not
        return True
    path = Path(items[0])
    if not path.is_file() or path.suffix.lower() not in RASTER_SUFFIXES:
        return False
    try:
        with open_raster(path) as src:
            return src.crs is not None
    except rasterio.errors.RasterioIOError:
        return True


def run_predict(
    scene: str | os.PathLike,
    out_vectors: str | os.PathLike,
    *,
    model: Bundle | str | os.PathLike,
    prob_out: str | os.PathLike | None = None,
    options: PredictOptions | None = None,
    params: VectorizeParams | None = None,
    threshold: float | None = None,
    low_threshold: float | None = None,
    min_length_m: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    graph: bool = False,
    graph_snap_m: float = DEFAULT_SNAP_M,
    confidence_out: str | os.PathLike | None = None,
) -> PredictResult:
    """Predict a scene and write its lines (one layer per class in a GeoPackage).

    Args:
        scene: the GeoTIFF scene.
        out_vectors: lines file: ``.gpkg``, ``.geojson``, ``.fgb`` or ``.shp``.
        model: a loaded bundle, or the path of a bundle folder.
        prob_out: also keep the probability COG here; None: use a temporary one.
        options: tiling, batching, device and Dask settings of
            :func:`geoccseg.inference.predict.predict_scene`; None for the defaults. The lines are
            traced in blocks of :func:`~geoccseg.vectorize.blocks.line_block_px` (4096 px by default).
        params: vectoriser settings (lengths in metres); None for the defaults.
        threshold: the foreground probability (0-1) of the lines, over ``params.threshold``;
            None: ``params``' threshold, whose default (None) is the bundle's own
            (:attr:`BundleMeta.threshold`), else 0.5.
        low_threshold: overrides ``params.low_threshold`` (hysteresis), checked against the
            threshold the lines are drawn at.
        min_length_m: overrides ``params.min_length_m`` (metres).
        overwrite: replace existing outputs.
        progress: show progress bars.
        graph: also write each class's road graph (:mod:`geoccseg.vectorize.network`) as layers
            ``<class>_nodes`` and ``<class>_edges``; needs a ``.gpkg`` output.
        graph_snap_m: with ``graph``, line ends this close to other ends or lines are joined (metres).
        confidence_out: also write the teacher's confidence map here
            (:mod:`geoccseg.inference.confidence`: max class probability and confidence level,
            with the bundle's thresholds).

    Raises:
        GeoccsegError: an output that exists, cannot be written or is one of the inputs (scene,
            bundle files), a probability raster not named .tif, an unknown vector format, or any
            problem :func:`predict_scene` reports; all before any computation.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    out_vectors = check_vector_output(out_vectors, overwrite, example="roads.gpkg")
    check_vector_crs(out_vectors, scene)
    if graph:
        check_graph_output(out_vectors)
    inputs = [scene, *bundle_files(model if isinstance(model, Bundle) else resolve_model(model))]
    check_not_input(out_vectors, inputs)
    if prob_out is not None:
        prob_out = check_prob_out(prob_out, overwrite, inputs)
        check_not_input(prob_out, [out_vectors])  # e.g. a link to the lines file
    if confidence_out is not None:
        confidence_out = check_confidence_out(confidence_out, overwrite, [*inputs, out_vectors, *([prob_out] if prob_out else [])])
    bundle = model if isinstance(model, Bundle) else load_bundle(resolve_model(model))
    overrides = {"threshold": threshold, "low_threshold": low_threshold, "min_length_m": min_length_m}
    params = dataclasses.replace(params or VectorizeParams(), **{k: v for k, v in overrides.items() if v is not None})
    params = params.resolved(bundle.meta.threshold)  # the model's own decision threshold, unless one is given
    with contextlib.ExitStack() as stack:
        # every output is finished in a work folder beside it, then all move into place as one set,
        # the lines last: a run stopped while tracing lines leaves no probabilities behind
        workdir = stack.enter_context(scratch_dir(out_vectors))
        prob_path = stack.enter_context(scratch_dir(prob_out)) / prob_out.name if prob_out is not None else workdir / "probability.tif"
        # a temporary probability raster is read once, by the vectoriser: no overviews, no compressed copy
        predict_scene(scene, bundle, prob_path, options, progress=progress, threshold=params.threshold, as_cog=prob_out is not None)
        finished = [(prob_path, prob_out)] if prob_out is not None else []
        if confidence_out is not None:
            confidence_path = stack.enter_context(scratch_dir(confidence_out)) / confidence_out.name
            write_confidence_cog(prob_path, confidence_path, ConfidenceThresholds.from_meta(bundle.meta))
            finished.append((confidence_path, confidence_out))
        # a smaller --block-px bounds the vectoriser's memory too (its windows are blocks plus a halo)
        layers = vectorize_raster(prob_path, params=params, block_px=line_block_px(options.block_px), progress=progress)
        write_vectors(with_graph_layers(layers, snap_m=graph_snap_m) if graph else layers, out_vectors, overwrite=overwrite,
                      metadata=provenance(bundle, params.threshold), together=finished)
    return PredictResult(
        vectors=out_vectors,
        probabilities=prob_out,
        lines={name: len(frame) for name, frame in layers.items()},
        length_km=float(sum(frame["length_m"].sum() for frame in layers.values()) / 1000.0),
        seconds=time.perf_counter() - start,
        params=params,
    )
