"""The in-memory API: ``geoccseg.predict`` / ``vectorize`` / ``train`` / ``evaluate``."""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import dask
import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import torch
import xarray as xr

import geoccseg
from geoccseg.data.photos import read_photo
from geoccseg.io.catalog import sample_scene
from geoccseg.errors import GeoccsegError
from geoccseg.inference.photos import predict_photo
from geoccseg.inference.predict import PredictOptions, predict_scene
from geoccseg.io.bundle import resolve_model, save_bundle
from geoccseg.models import load_bundle
from geoccseg.vectorize import VectorizeParams, vectorize_raster

UTM = "EPSG:32611"


def test_import_geoccseg_is_light_and_the_api_resolves_on_use() -> None:
    code = (
        "import sys, geoccseg\n"
        "assert 'torch' not in sys.modules and 'xarray' not in sys.modules, 'heavy import'\n"
        "import geoccseg.train.config, geoccseg.evaluate.report\n"  # subpackages imported first...
        "from geoccseg.train.run import train\n"
        "assert callable(geoccseg.train) and geoccseg.train.TrainConfig is geoccseg.train.config.TrainConfig\n"
        "assert callable(geoccseg.evaluate) and callable(geoccseg.vectorize) and callable(geoccseg.predict)\n"
        "assert geoccseg.vectorize.VectorizeParams().resolved(None).threshold == 0.5\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_predict_a_scene_is_lazy_with_crs_and_vectorize_leaves_nothing_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from geoccseg.inference import predict

    blocks, real = [], predict._predict_block
    monkeypatch.setattr(predict, "_predict_block", lambda job: blocks.append(job) or real(job))  # counts the blocks computed
    prob = geoccseg.predict(sample_scene(), device="cpu")
    assert isinstance(prob.data, dask.array.Array) and blocks == []  # nothing computed yet
    assert prob[:, :8, :8].values.shape == (1, 8, 8) and len(blocks) == 1  # a corner computes its block alone
    assert prob.dims == ("class", "y", "x") and prob["class"].values.tolist() == ["road"]
    with rasterio.open(sample_scene()) as src:
        crs, transform, width = src.crs, src.transform, src.width
    scale = width / prob.sizes["x"]  # 0.3 m scene, 1 m model: the model's grid over the scene's extent
    assert prob.rio.crs == crs
    assert prob.rio.transform().a == pytest.approx(transform.a * scale, rel=1e-2)
    assert (prob.rio.transform().c, prob.rio.transform().f) == pytest.approx((transform.c, transform.f))
    assert prob.attrs["model"] == "road" and len(prob.attrs["weights_sha256"]) == 64
    assert prob.attrs["geoccseg_version"] == geoccseg.__version__
    assert prob.attrs["threshold"] == 0.53  # the road model's own, which lines are drawn at (as the CLI does)
    lines = geoccseg.vectorize(prob)
    assert list(lines) == ["road"] and len(lines["road"]) > 0
    assert lines["road"].crs.to_epsg() == crs.to_epsg() == 4326
    at_half = geoccseg.vectorize(prob, params=VectorizeParams(threshold=0.5))["road"]
    assert lines["road"]["length_m"].sum() < at_half["length_m"].sum()
    # other settings keep the model's threshold, as the CLI's other options do (they drew at 0.5)
    longer = geoccseg.vectorize(prob, params=VectorizeParams(min_length_m=19.5))["road"]
    assert longer["length_m"].sum() == pytest.approx(lines["road"]["length_m"].sum())
    one = geoccseg.vectorize(prob.sel({"class": "road"}))  # one class: named by its class coordinate
    assert list(one) == ["road"] and (one["road"]["class"] == "road").all()
    assert one["road"]["length_m"].sum() == pytest.approx(lines["road"]["length_m"].sum())
    # a coarsened array keeps the transform rioxarray stored with the original: its lines were drawn
    # at half their size in the scene's corner; its own coordinates place them now
    coarse = geoccseg.vectorize(prob.coarsen(x=2, y=2, boundary="trim").mean())["road"]
    full, half = lines["road"].total_bounds, coarse.total_bounds
    assert np.allclose(half, full, atol=4 * abs(prob.rio.transform().a))  # the same extent, within a few pixels
    assert coarse["length_m"].sum() == pytest.approx(lines["road"]["length_m"].sum(), rel=0.25)
    values = prob.values
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    assert list(tmp_path.iterdir()) == []


def test_vectorize_of_a_lazy_array_computes_each_task_once_chunk_by_chunk(tmp_path: Path) -> None:
    """vectorize(DataArray) computed the whole array and ran the raster steps on it as one window
    (about 20 bytes per pixel of a whole scene): the notebook's vectorize(predict("big.tif")) grew
    with the scene. It now writes the array chunk by chunk from one graph and vectorises that block
    by block, with the same lines; each upstream task runs once, also where (as in predict's
    arrays, whose block chips overlap into the next block row) one feeds the chunks of two rows."""
    import dask

    cog = predict_scene(sample_scene(), resolve_model("road"), tmp_path / "prob.tif", PredictOptions(prob_dtype="float32"),
                        progress=False)
    whole = rioxarray.open_rasterio(cog, masked=True).astype("float32")  # (1, y, x), NaN nodata
    size, ran = 160, {"block": [], "chunk": []}

    def block(r: int) -> np.ndarray:  # a block row's computation, which two chunk rows read
        ran["block"].append(r)
        return whole.values[:, r:r + 2 * size]

    def chunk(upper: np.ndarray, lower: np.ndarray | None, r: int, c: int) -> np.ndarray:
        ran["chunk"].append((r, c))
        return whole.values[:, r:r + size, c:c + size]

    height, width = whole.sizes["y"], whole.sizes["x"]
    blocks = {r: dask.delayed(block)(r) for r in range(0, height, 2 * size)}
    rows = []
    for r in range(0, height, size):
        upper, lower = blocks[r - r % (2 * size)], blocks.get(r - r % (2 * size) + 2 * size)
        row = [da_from(dask.delayed(chunk)(upper, lower, r, c), (1, min(size, height - r), min(size, width - c)))
               for c in range(0, width, size)]
        rows.append(dask.array.concatenate(row, axis=2))
    lazy = whole.copy(data=dask.array.concatenate(rows, axis=1)).assign_coords({"band": ["road"]}).rename({"band": "class"})
    assert lazy.data.numblocks[1] > 2 and lazy.data.numblocks[2] > 2
    params = VectorizeParams(threshold=0.5)
    lines = geoccseg.vectorize(lazy, params=params, block_px=256)["road"]
    assert sorted(ran["block"]) == sorted(blocks) and len(ran["chunk"]) == len(set(ran["chunk"])) == lazy.data.npartitions
    from_file = vectorize_raster(cog, params=params, progress=False)["road"]
    assert len(lines) == len(from_file) > 0
    assert lines["length_m"].sum() == pytest.approx(from_file["length_m"].sum(), rel=1e-6)
    # an array read lazily from a file (not Dask-backed) goes chunk by chunk too; values outside [0, 1] are refused
    assert len(geoccseg.vectorize(rioxarray.open_rasterio(cog, masked=True).assign_coords({"band": ["road"]}).rename(
        {"band": "class"}), params=params, block_px=256)["road"]) == len(lines)
    with pytest.raises(GeoccsegError, match=r"prob holds values from [\d.]+ to [\d.]+ \(in the chunk at row \d+, column \d+\), not probabilities in \[0, 1\]; scale a uint8"):
        geoccseg.vectorize((lazy * 255).fillna(0), params=params)
    # an infinity is out of range like a GeoTIFF's (the chunk writer let it through to the temporary raster)
    with pytest.raises(GeoccsegError, match=r"prob holds values from [\d.]+ to inf \(in the chunk at row \d+, column \d+\), not probabilities in \[0, 1\]$"):
        geoccseg.vectorize(lazy.fillna(0).where(lazy.fillna(0) < 0.5, np.inf), params=params)
    with pytest.raises(GeoccsegError, match="block_px must be a positive number of pixels, got 0"):
        geoccseg.vectorize(lazy, block_px=0)


def test_a_refused_chunk_ends_vectorize_only_once_no_task_of_it_runs(tmp_path: Path) -> None:
    """Dask raises at the first failed chunk without waiting for the tasks still running, so
    vectorize(DataArray) returned its error while other chunks went on computing (a lazy
    prediction's blocks: the CPU busy, the model and scene held, reads after the caller moved on).
    It now waits for them."""
    import time

    from rasterio.transform import from_origin

    started, finished = set(), set()

    def chunk(i: int) -> np.ndarray:
        started.add(i)
        if i == 0:
            return np.full((1, 64, 64), 2.0, np.float32)  # refused: not a probability
        time.sleep(1.0)
        finished.add(i)
        return np.full((1, 64, 64), 0.25, np.float32)

    parts = [da_from(dask.delayed(chunk)(i), (1, 64, 64)) for i in range(2)]
    array = xr.DataArray(dask.array.concatenate(parts, axis=2), dims=("class", "y", "x"),
                         coords={"class": ["road"], "y": np.arange(64) + 0.5, "x": np.arange(128) + 0.5})
    array = array.rio.write_crs("EPSG:32611").rio.write_transform(from_origin(500_000, 4_000_064, 1, 1))
    with dask.config.set(num_workers=2), pytest.raises(GeoccsegError, match="not probabilities in"):  # both chunks at once
        geoccseg.vectorize(array, block_px=64)
    assert started == {0, 1} and finished == {1}, (started, finished)  # the chunk still running when 0 failed has ended


def test_the_chunk_writer_is_closed_before_its_raster_and_waits_for_a_chunk_being_written(tmp_path: Path) -> None:
    """When one chunk of vectorize(DataArray) is refused, Dask raises at once while its other threads
    still compute and then write theirs; the temporary raster was closed under a write in progress,
    and the process died of a segmentation fault (CI, Python 3.13, rasterio 1.5 / GDAL 3.12: one
    run of the test above in six). The writer is now closed first: a chunk being written is
    finished before, and chunks after are dropped, so the raster is never closed under a write."""
    import threading

    from rasterio.windows import Window

    from geoccseg.api import _ProbabilityWriter

    size = 4096  # a 64 MB chunk: its write lasts long enough for close() to come during it
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "float32", "nodata": float("nan")}
    with rasterio.open(tmp_path / "p.tif", "w", **profile) as dst:
        writer = _ProbabilityWriter(dst)
        started, ended = threading.Event(), threading.Event()
        original = dst.write

        def write(*args, **kwargs) -> None:  # the real write, announced as it starts and as it ends
            started.set()
            original(*args, **kwargs)
            ended.set()

        dst.write = write
        box = (slice(0, 1), slice(0, size), slice(0, size))
        thread = threading.Thread(target=writer.__setitem__, args=(box, np.full((1, size, size), 0.25, np.float32)))
        thread.start()
        assert started.wait(30)
        writer.close()  # returns once the write in progress has ended
        assert ended.is_set()  # (the thread itself may still be on its way out: on one core it often is)
        thread.join(30)
        writer[(slice(0, 1), slice(0, 8), slice(0, 8))] = np.full((1, 8, 8), 0.75, np.float32)  # after close: dropped
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.read(1, window=Window(0, 0, 8, 8)).tolist() == np.full((8, 8), 0.25).tolist()
        assert src.read(1, window=Window(size - 8, size - 8, 8, 8)).tolist() == np.full((8, 8), 0.25).tolist()


def da_from(task, shape: tuple[int, int, int]) -> dask.array.Array:
    return dask.array.from_delayed(task, dtype=np.float32, shape=shape)


def test_predict_a_rioxarray_array_equals_geoccseg_predict_with_nan_nodata(tmp_path: Path) -> None:
    # the sample at the road model's 1 m in UTM: the model runs on this grid as it is (no resampling);
    # the warp leaves NaN around the scene, which must stay nodata
    image = rioxarray.open_rasterio(sample_scene()).sel(band=[1, 2, 3]).astype("float32")
    image = image.rio.write_nodata(np.nan).rio.reproject(UTM, resolution=1.0, nodata=np.nan)
    assert np.isnan(image.values).any()
    options = dict(tile_px=128, overlap_px=32, block_px=96, device="cpu")  # 4 x 4 blocks of one chip, overlapping
    prob = geoccseg.predict(image, "road", **options)
    assert prob.data.numblocks == (1, 4, 4)
    assert prob.rio.crs == UTM and prob.rio.transform() == image.rio.transform()
    values = prob.values[0]
    # the same image through the engine of `geoccseg predict` (file in, COG out)
    scene = tmp_path / "scene.tif"
    image.rio.to_raster(scene)
    cog = predict_scene(scene, resolve_model("road"), tmp_path / "prob.tif", PredictOptions(prob_dtype="float32", **options), progress=False)
    with rasterio.open(cog) as src:
        expected = src.read(1, masked=True)
    assert values.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(values), expected.mask)
    assert np.isnan(values).any() and not np.isnan(values).all()
    np.testing.assert_allclose(values[~expected.mask], expected.data[~expected.mask], atol=1e-5)
    # at one threshold (the array records the model's, which vectorize() would use; the COG, written without one, none)
    in_memory = geoccseg.vectorize(prob, params=VectorizeParams(threshold=0.5))["road"]
    from_file = vectorize_raster(cog, params=VectorizeParams(threshold=0.5), progress=False)["road"]
    assert len(in_memory) == len(from_file) > 0
    assert in_memory["length_m"].sum() == pytest.approx(from_file["length_m"].sum(), rel=1e-3)


def test_predict_a_photo_in_pixel_coordinates(data_dir: Path) -> None:
    photo = data_dir / "cfd" / "images" / "002.jpg"
    prob = geoccseg.predict(photo, device="cpu")
    assert prob.dims == ("class", "y", "x") and prob.shape == (1, 320, 480) and prob.rio.crs is None
    assert prob.attrs["model"] == "crack"
    assert (prob.x.values[0], prob.y.values[0]) == (0.5, -0.5)  # as the crack lines of `geoccseg predict`
    bundle = load_bundle(resolve_model("crack"))
    defaults = PredictOptions()  # the default chips of `geoccseg predict` on photos
    tile_px = defaults.tile_for(bundle.meta)
    expected = predict_photo(bundle, read_photo(photo, bands=len(bundle.meta.bands), exif_orientation=True),
                             tile_px=tile_px, overlap_px=defaults.overlap_px, device="cpu", batch_size=defaults.batch_for(tile_px))
    assert np.abs(np.round(prob.values * 255) - expected.astype(np.float32)).max() <= 1
    with pytest.raises(GeoccsegError, match="no CRS"):
        geoccseg.vectorize(prob)


def test_predicting_photos_leaves_the_callers_model_as_it_was(data_dir: Path, onnx_cache: Path, tmp_path: Path) -> None:
    """A notebook that fine-tunes a model and predicts between epochs: predicting photos with the
    loaded bundle set its model to eval mode and left it so (its next epochs trained with frozen
    batch-norm statistics and no dropout, without a word). The prediction is the eval model's."""
    from PIL import Image

    from geoccseg.inference.array import predict_array
    from geoccseg.inference.photos import predict_photos

    photo = data_dir / "cfd" / "images" / "002.jpg"
    bundle = load_bundle(resolve_model("crack"))
    image = read_photo(photo, bands=len(bundle.meta.bands))
    expected = predict_array(bundle, image, None, device="cpu", engine="torch", tile_px=256, overlap_px=64)
    run = lambda out, engine: predict_photos([photo], out, model=bundle, options=PredictOptions(device="cpu", engine=engine),  # noqa: E731
                                             progress=False)
    run(tmp_path / "eval", "torch")
    expected_png = np.asarray(Image.open(tmp_path / "eval" / "probability" / "002.png")).astype(int)
    for engine in ("torch", "onnx"):
        bundle.model.train()
        prob = predict_array(bundle, image, None, device="cpu", engine=engine, tile_px=256, overlap_px=64)
        assert bundle.model.training, engine
        assert np.abs(prob - expected).max() <= 2 / 255, engine  # the eval model's probabilities, not batch statistics'
        bundle.model.train()
        run(tmp_path / engine, engine)
        assert bundle.model.training, engine
        assert np.abs(np.asarray(Image.open(tmp_path / engine / "probability" / "002.png")).astype(int) - expected_png).max() <= 2, engine


def test_a_raster_neither_photo_nor_geotiff_is_refused_as_the_command_line_refuses_it(tmp_path: Path) -> None:
    """The API sent every file that is not .tif/.tiff/.vrt down the photo path: a georeferenced
    JPEG 2000 orthophoto was read whole as a photo and run through the crack model in pixel
    coordinates, without a word; ``geoccseg predict`` refused it."""
    from click.testing import CliRunner

    from geoccseg.cli import cli

    jp2 = tmp_path / "ortho.jp2"
    with rasterio.open(sample_scene()) as src:
        window = rasterio.windows.Window(0, 0, 256, 256)
        profile = {"driver": "JP2OpenJPEG", "width": 256, "height": 256, "count": 3, "dtype": "uint8", "crs": src.crs,
                   "transform": src.window_transform(window)}
        with rasterio.open(jp2, "w", **profile) as dst:
            dst.write(src.read([1, 2, 3], window=window))
    with rasterio.open(jp2) as check:
        assert check.crs is not None  # a real georeferenced JPEG 2000
    message = "ortho.jp2 is not a photo; .* gdal_translate ortho.jp2 ortho.tif"
    with pytest.raises(GeoccsegError, match=message):
        geoccseg.predict(jp2, device="cpu")
    result = CliRunner().invoke(cli, ["predict", str(jp2), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert re.search(message, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ortho.jp2"]


def test_a_bundle_rewritten_before_the_lazy_array_is_computed_is_refused(tmp_path: Path) -> None:
    """The array stands for the weights of the moment it was made: it computes with that model in
    memory while this process holds it; a block that has to load the folder again (another model
    predicted since) refuses a folder rewritten meanwhile (a training run writing into it), never
    mixing its weights in."""
    bundle = load_bundle(resolve_model("road"))
    folder = save_bundle(tmp_path / "road", bundle.model, bundle.meta)
    prob = geoccseg.predict(sample_scene(), folder, device="cpu", engine="torch", block_px=512)
    save_bundle(folder, bundle.model, bundle.meta)  # the same weights again: the same model
    first = prob[:, :64, :64].values
    with torch.no_grad():  # a later training step
        next(bundle.model.parameters()).add_(0.01)
    save_bundle(folder, bundle.model, bundle.meta)
    assert np.array_equal(prob[:, :64, :64].values, first, equal_nan=True)  # the model in memory
    geoccseg.predict(sample_scene(), "road", device="cpu", engine="torch")  # another model takes this process's place
    with pytest.raises(GeoccsegError, match="was rewritten while this run used it"):
        prob.values


def test_a_lazy_array_of_a_model_changed_in_memory_never_computes_with_its_folder() -> None:
    """A model fine-tuned in memory: its array names the weights in memory, not its folder's, and
    a block that can no longer find that model in this process (another model predicted since)
    refuses to load the folder's other weights in its place."""
    from geoccseg.models.bundle import state_sha256

    bundle = load_bundle(resolve_model("road"))
    with torch.no_grad():
        next(bundle.model.parameters()).add_(0.01)
    prob = geoccseg.predict(sample_scene(), bundle, device="cpu", engine="torch", block_px=512)
    assert "weights_sha256" not in prob.attrs and prob.attrs["state_sha256"] == state_sha256(bundle.model)
    assert prob[:, :8, :8].values.shape == (1, 8, 8)
    geoccseg.predict(sample_scene(), "road", device="cpu", engine="torch")
    with pytest.raises(GeoccsegError, match="does not hold the model this run predicts with"):
        prob.values


def test_a_lazy_array_of_metadata_changed_in_memory_never_computes_with_another_one() -> None:
    """Two copies of one model whose normalisation differs shared this process's model slot (it was
    keyed by the weights alone): an array made with the edited copy computed, after a prediction
    with the folder's copy, with the folder's normalisation. It now refuses, as for weights."""
    bundle = load_bundle(resolve_model("road"))
    norm = bundle.meta.norm
    edited = dataclasses.replace(bundle, meta=dataclasses.replace(bundle.meta, norm=dataclasses.replace(
        norm, high=[h + 20.0 for h in norm.high])))
    prob = geoccseg.predict(sample_scene(), edited, device="cpu", engine="torch", block_px=512)
    first = prob[:, :64, :64].values
    first_plain = geoccseg.predict(sample_scene(), bundle, device="cpu", engine="torch", block_px=512)[:, :64, :64].values
    assert not np.array_equal(first, first_plain)
    with pytest.raises(GeoccsegError, match="does not hold the model this run predicts with"):
        prob[:, :64, :64].values
    # the same metadata written differently in memory (numpy scalars, an int) is the folder's model
    alike = dataclasses.replace(bundle, meta=dataclasses.replace(bundle.meta, pixel_size_m=int(bundle.meta.pixel_size_m), norm=dataclasses.replace(
        norm, high=[np.float32(h) for h in norm.high])))
    prob = geoccseg.predict(sample_scene(), alike, device="cpu", engine="torch", block_px=512)
    geoccseg.predict(sample_scene(), "crack", device="cpu", engine="torch")  # another model takes this process's place
    assert np.allclose(prob[:, :64, :64].values, first_plain, atol=1e-6)  # the block loads the folder, and computes


def test_a_lazy_array_keeps_the_model_it_was_made_with() -> None:
    """A notebook trains on after predict(): on the CPU the array computed with the live model (on
    a GPU with a copy) under the digest of the weights it was made with."""
    bundle = load_bundle(resolve_model("road"))
    prob = geoccseg.predict(sample_scene(), bundle, device="cpu", engine="torch", block_px=512)
    first = prob[:, :64, :64].values
    assert prob.attrs["weights_sha256"] == bundle.weights_sha256
    with torch.no_grad():
        next(bundle.model.parameters()).add_(0.5)
    assert np.array_equal(prob[:, :64, :64].values, first, equal_nan=True)
    # (the edit does change what the model predicts: an array made now computes other values)
    edited = geoccseg.predict(sample_scene(), bundle, device="cpu", engine="torch", block_px=512)[:, :64, :64].values
    assert not np.allclose(edited, first, equal_nan=True)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GeoccsegError, match="does not exist"):
        geoccseg.predict(tmp_path / "missing.tif")
    with pytest.raises(GeoccsegError, match="no CRS"):
        geoccseg.predict(xr.DataArray(np.zeros((3, 64, 64), dtype=np.float32), dims=("band", "y", "x")))
    with pytest.raises(GeoccsegError, match="no class crack"):
        geoccseg.vectorize(xr.DataArray(np.zeros((1, 8, 8)), dims=("class", "y", "x"), coords={"class": ["road"]})
                           .rio.write_crs(UTM), classes=["crack"])


def test_an_input_array_held_in_gdal_memory_is_freed_with_the_result(vegas: Path) -> None:
    """The in-memory copy of a DataArray input was never closed: each predict() leaked its size."""
    import gc

    import rasterio
    import rioxarray

    from geoccseg.api import _InMemoryRaster

    image = rioxarray.open_rasterio(vegas / "vegas_img0_rgb.tif")
    held = _InMemoryRaster(image)
    path = held.path
    with rasterio.open(path) as src:
        assert src.count == image.shape[0]
    del held
    gc.collect()
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(path)


def test_a_dataarray_is_refused_in_one_line_where_tasks_run_in_other_processes(vegas: Path) -> None:
    """A DataArray input is copied into this process's GDAL memory: a distributed client (even
    with in-process workers: it serialises the tasks) or the processes scheduler failed at compute
    time in a serialisation traceback. predict() says so at once; a client opened after it is told
    the same when it computes."""
    import asyncio

    import dask
    import distributed
    import rioxarray

    import geoccseg

    image = rioxarray.open_rasterio(vegas / "vegas_img0_rgb.tif")[:, :300, :300]
    told = "a DataArray is predicted from this process's memory, which the tasks of a Dask cluster or of the processes scheduler"
    with dask.config.set(scheduler="processes"), pytest.raises(GeoccsegError, match=told):
        geoccseg.predict(image)
    lazy = geoccseg.predict(image)  # made on threads, computed by a client opened later
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, distributed.Client(cluster):
        with pytest.raises(GeoccsegError, match=told):
            geoccseg.predict(image)
        with pytest.raises(Exception) as raised:  # distributed's own, our one line among its causes
            lazy.compute()
        causes, cause = [], raised.value
        while cause is not None:
            causes.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        assert any(told in c for c in causes), causes
    with dask.config.set(scheduler="synchronous"):
        assert 0 <= float(geoccseg.predict(image).mean().compute()) <= 1  # in this process: computed
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool, dask.config.set(scheduler=pool):  # a pool of threads here: computed (it was refused)
        assert 0 <= float(geoccseg.predict(image).mean().compute()) <= 1
    with ProcessPoolExecutor(1) as pool, dask.config.set(scheduler=pool), pytest.raises(GeoccsegError, match=told):
        geoccseg.predict(image)

    async def under_an_asynchronous_client() -> None:  # was dask's own RuntimeError
        async with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None, asynchronous=True) as cluster:
            async with distributed.Client(cluster, asynchronous=True):
                with pytest.raises(GeoccsegError, match=told):
                    geoccseg.predict(image)

    asyncio.run(under_an_asynchronous_client())


def test_the_in_memory_copy_keeps_the_alpha_band_and_the_pixels(vegas: Path) -> None:
    """The copy of an opened scene must read as the scene does: alpha stays alpha (not a 4th input band), pixels unchanged."""
    import rasterio
    import rioxarray

    from geoccseg.api import _InMemoryRaster

    image = rioxarray.open_rasterio(vegas / "vegas_img0_rgb.tif")
    held = _InMemoryRaster(image)
    with rasterio.open(vegas / "vegas_img0_rgb.tif") as src, rasterio.open(held.path) as copy:
        assert copy.colorinterp == src.colorinterp and copy.compression.name.lower() == "deflate"
        assert (copy.read() == src.read()).all()


def test_the_in_memory_copy_of_a_jpeg_ycbcr_scene_is_rgb(vegas: Path, tmp_path: Path) -> None:
    """A JPEG-compressed GeoTIFF stored as YCbCr (how colour orthophotos are often delivered) gave
    its PHOTOMETRIC=YCBCR to the lossless copy, which GDAL refuses: predict() was a traceback."""
    import rasterio
    import rioxarray
    from rasterio.windows import Window

    from geoccseg.api import _InMemoryRaster

    with rasterio.open(vegas / "vegas_img0_rgb.tif") as src:
        profile = {**src.profile, "count": 3, "compress": "JPEG", "photometric": "YCBCR", "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "width": 512, "height": 512, "transform": src.window_transform(Window(0, 0, 512, 512))}
        pixels = src.read([1, 2, 3], window=Window(0, 0, 512, 512))
    with rasterio.open(tmp_path / "ycbcr.tif", "w", **profile) as dst:
        dst.write(pixels)
    held = _InMemoryRaster(rioxarray.open_rasterio(tmp_path / "ycbcr.tif"))
    with rasterio.open(tmp_path / "ycbcr.tif") as src, rasterio.open(held.path) as copy:
        assert [c.name for c in copy.colorinterp] == ["red", "green", "blue"] and copy.compression.name.lower() == "deflate"
        assert (copy.read() == src.read()).all()  # the pixels as the JPEG decodes them


def test_a_lazy_prediction_runs_one_block_at_a_time_on_the_cpu(monkeypatch: pytest.MonkeyPatch, torch_threads) -> None:
    """Review E4: Dask's threaded scheduler ran as many blocks at once as it has threads (the
    machine's cores; 4 here), each engine with its own threads on the same cores (on CUDA: as
    many forward passes of 8 chips on one GPU). The API now runs them as `geoccseg predict` does:
    one at a time on the CPU. Timed by the real blocks' own start and end, same result. The engine
    takes two threads here, as on any machine of two cores or more (a process on one core, as a
    pytest-xdist worker pinned to its core, predicts each block on one thread and may run them all
    at once)."""
    import threading
    import time

    from geoccseg.inference import predict

    torch_threads(max(2, torch.get_num_threads()))
    spans, real = [], predict._predict_block

    def timed(job):
        start = time.perf_counter()
        result = real(job)
        spans.append((start, time.perf_counter(), threading.get_ident()))
        return result

    options = dict(tile_px=128, overlap_px=16, block_px=64, device="cpu", engine="torch")
    with dask.config.set(scheduler="threads", num_workers=4):
        expected = geoccseg.predict(sample_scene(), **options).values
        monkeypatch.setattr(predict, "_predict_block", timed)  # a block's work, inside its place
        got = geoccseg.predict(sample_scene(), **options).values
    events = sorted([(a, 1) for a, _, _ in spans] + [(b, -1) for _, b, _ in spans])
    running = max(itertools.accumulate(change for _, change in events))
    assert len(spans) >= 8 and len({t for *_, t in spans}) > 1 and running == 1, (len(spans), running)
    np.testing.assert_array_equal(got, expected)
