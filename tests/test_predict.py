"""Scene-scale prediction on the real SpaceNet Las Vegas chip: seams, COG format, nodata,
resampling, the CLI end to end, bad input, and the Dask cluster.

A small bundle is trained here for a few steps (the real trainer will replace this fixture). Exact
values are checked with a point-wise model, whose probability at a pixel depends on that pixel
only, so any tiling must reproduce ``sigmoid(4 * x)`` of the normalised first band everywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from shapely.geometry import box
from torch import nn

from geoccseg.cli import cli
from geoccseg.data.scenes import SceneTrainingData
from geoccseg.errors import GeoccsegError
from geoccseg.inference.array import predict_array
from geoccseg.inference.blend import ChipGrid, blend_window, ramp
from geoccseg.inference.engine import build_engine
from geoccseg.inference.predict import PredictOptions, blend_chips, block_slot, predict_scene
from geoccseg.io.bundle import BundleMeta, resolve_model, save_bundle
from geoccseg.io.scene import open_scene
from geoccseg.label_values import IGNORE_INDEX
from geoccseg.models import Bundle, ModelConfig, build_model, load_bundle
from geoccseg.models.bundle import state_sha256

TRAIN_STEPS = 20
TRAIN_BATCH = 4
SMALL_TILES = PredictOptions(tile_px=128, overlap_px=32, device="cpu")
"""Chips small enough that the 1300 px test chip is cut into many of them."""


@pytest.fixture(scope="module")
def scene_path(vegas: Path) -> Path:
    return vegas / "vegas_img0_rgb.tif"


@pytest.fixture(scope="module")
def bundle_dir(vegas: Path, scene_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default light network trained for a few Adam steps on labeled 128-px chips."""
    data = SceneTrainingData([scene_path], labels=vegas / "vegas_img0_roads.geojson", tile_px=128)
    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=3, num_classes=2))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is as fast, and immune to a busy machine
    try:
        for _ in range(TRAIN_STEPS):
            chips = [data.labeled_chip(generator) for _ in range(TRAIN_BATCH)]
            images = torch.stack([c["image"] for c in chips])
            masks = torch.stack([c["mask"] for c in chips])
            loss = F.cross_entropy(model.forward_logits(images), masks, ignore_index=IGNORE_INDEX)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    meta = BundleMeta(
        model=model.config.to_dict(), classes=["road"], bands=[1, 2, 3], norm=data.norm,
        pixel_size_m=open_scene(scene_path).pixel_size_m, tile_px=128,
    )
    return save_bundle(tmp_path_factory.mktemp("bundle") / "roads", model, meta)


class PointwiseNet(nn.Module):
    """Logits (0, 4 x) from the first band alone: road probability ``sigmoid(4 x)`` per pixel."""

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 4 * x[:, :1]], dim=1)


@pytest.fixture(scope="module")
def pointwise(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    meta = load_bundle(bundle_dir).meta
    return Bundle(model=PointwiseNet(), meta=meta, path=tmp_path_factory.mktemp("pointwise"))


def expected_pointwise(scene_path: Path, bundle: Bundle) -> np.ndarray:
    """uint8 probabilities the point-wise model must give on every pixel, worked out directly."""
    image, _ = open_scene(scene_path).read()
    x = bundle.meta.norm.apply(image)[0].astype(np.float64)
    return np.round(255 / (1 + np.exp(-4 * x))).astype(np.int64)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1).astype(np.int64)


@pytest.fixture(scope="module")
def cli_run(scene_path: Path, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``geoccseg predict`` on the chip: tiles of 128 px with 32 px overlap, blocks of 256 px."""
    folder = tmp_path_factory.mktemp("cli")
    out, prob = folder / "roads.gpkg", folder / "prob.tif"
    result = CliRunner().invoke(cli, [
        "predict", str(scene_path), "-o", str(out), "--model", str(bundle_dir), "--prob-out", str(prob),
        "--tile-px", "128", "--overlap-px", "32", "--block-px", "256", "--threshold", "0.4", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    return folder, out, prob


# -- blending and the grid ---------------------------------------------------------------------
def test_blend_window_ramps_add_up_to_one_and_never_vanish() -> None:
    rise = ramp(4)  # sin²(π/2 · (i + 0.5) / 4)
    np.testing.assert_allclose(rise, np.sin(np.pi / 16 * np.array([1, 3, 5, 7])) ** 2)
    np.testing.assert_allclose(rise + rise[::-1], 1.0)
    w = blend_window(12, 4)
    np.testing.assert_allclose(w[6], [*rise, 1, 1, 1, 1, *rise[::-1]], rtol=1e-6)
    # two chips 8 px apart (stride = 12 - 4): the weights sum to one where they overlap
    np.testing.assert_allclose(w[6, 8:] + w[6, :4], 1.0, rtol=1e-6)
    corner = blend_window(128, 32)[0, 0]  # sin⁴(π / 128) ≈ 3.6e-7 would vanish: the floor holds
    assert corner == pytest.approx(1e-3)


def test_chip_grid_covers_the_scene_and_computes_each_chip_once() -> None:
    grid = ChipGrid.create(1300, 1000, tile_px=128, overlap_px=32, block_px=256)
    assert grid.stride_px == 96 and grid.block_px == 288  # 256 rounded to 3 strides
    assert grid.shape == (14, 11)  # 1 + ceil((1300 - 128) / 96), 1 + ceil((1000 - 128) / 96)
    assert 13 * 96 + 128 >= 1300 and 12 * 96 + 128 < 1300
    chips = [c for block in grid.blocks() for c in block.chips]
    assert len(chips) == len(set(chips)) == 14 * 11
    bigger = ChipGrid.create(1300, 1000, tile_px=128, overlap_px=32, block_px=512)
    assert {c for b in bigger.blocks() for c in b.chips} == set(chips)
    first, last = grid.blocks()[0], grid.blocks()[-1]
    assert (first.window.width, first.window.height) == (2 * 96 + 128, 2 * 96 + 128)
    # the last chips are cut at the edge: rows 1248..1300, columns 960..1000
    assert grid.chip_shape(13 * 96, 10 * 96) == (52, 40)
    assert (last.window.row_off + last.window.height, last.window.col_off + last.window.width) == (1300, 1000)
    with pytest.raises(GeoccsegError, match="overlap"):
        ChipGrid.create(100, 100, tile_px=64, overlap_px=64, block_px=256)



def test_blending_only_part_of_a_region_gives_that_part_of_the_whole(scene_path: Path, bundle_dir: Path) -> None:
    """``keep`` adds up the chips over a window of the region alone (a scored block and its halo):
    the same values as blending the whole region and cutting the window out, nodata included."""
    bundle = load_bundle(bundle_dir)
    engine = build_engine("torch", bundle.model, "cpu", bundle.meta)
    image, _ = open_scene(scene_path).read(Window(0, 0, 500, 600))
    valid = np.ones(image.shape[1:], dtype=bool)
    valid[:, :70] = False  # a nodata strip the window cuts through
    grid = ChipGrid.create(600, 500, tile_px=128, overlap_px=32, block_px=1024)
    chips = [(r, c, *grid.chip_shape(r, c)) for block in grid.blocks() for r, c in block.chips]
    blend = blend_window(128, 32)
    whole = blend_chips(engine, bundle.meta.norm, image, valid, chips, blend, 4, 1)
    keep = (101, 37, 250, 199)  # starts and ends inside chips, not on the stride
    part = blend_chips(engine, bundle.meta.norm, image, valid, chips, blend, 4, 1, keep=keep)
    rows, cols = slice(101, 351), slice(37, 236)
    assert part[0].shape == (1, 250, 199) and part[1].shape == (250, 199)
    np.testing.assert_allclose(part[0], whole[0][:, rows, cols], atol=1e-6)
    np.testing.assert_allclose(part[1], whole[1][rows, cols], atol=1e-6)
    assert (part[1][:, :70 - 37] == 0).all() and (part[1][:, 70 - 37:] > 0).all()

# -- seams -------------------------------------------------------------------------------------
def test_pointwise_model_is_reproduced_exactly_by_any_tiling(scene_path: Path, pointwise: Bundle, tmp_path: Path) -> None:
    """Blending adds no error anywhere, including the outermost rows and columns."""
    expected = expected_pointwise(scene_path, pointwise)
    for tile_px, overlap_px, block_px in [(128, 32, 256), (192, 48, 512)]:
        out = predict_scene(
            scene_path, pointwise, tmp_path / f"p{tile_px}.tif",
            PredictOptions(tile_px=tile_px, overlap_px=overlap_px, block_px=block_px, device="cpu"), progress=False,
        )
        diff = np.abs(read_band(out) - expected)
        assert diff.max() <= 1
        for edge in (diff[0], diff[-1], diff[:, 0], diff[:, -1]):
            assert edge.max() <= 1


def test_block_size_does_not_change_probabilities(cli_run, scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    _, _, prob_256 = cli_run
    prob_512 = predict_scene(
        scene_path, bundle_dir, tmp_path / "p512.tif", PredictOptions(tile_px=128, overlap_px=32, block_px=512, device="cpu"),
        progress=False,
    )
    assert np.abs(read_band(prob_256) - read_band(prob_512)).max() <= 1


def test_a_smaller_block_bounds_the_vectoriser_too(scene_path: Path, bundle_dir: Path, tmp_path: Path, capfd) -> None:
    """--block-px bounds prediction's memory; the lines were then traced in 4096-px windows whatever
    it was (up to 6144 px with the halo: 0.6-0.8 GB per class; review V6). They go in blocks of twice
    its edge within [1024, 4096] px (the default 2048: 4096, as before; a tiny block must not cut
    the scene into thousands of blocks, each read with its halo: review of session 33, F1)."""
    import math

    from geoccseg.inference.pipeline import run_predict
    from geoccseg.vectorize.blocks import line_block_px

    assert (line_block_px(1), line_block_px(700), line_block_px(2048), line_block_px(100_000)) == (1024, 1400, 4096, 4096)
    options = PredictOptions(tile_px=128, overlap_px=32, block_px=128, device="cpu")
    run_predict(scene_path, tmp_path / "roads.gpkg", model=bundle_dir, prob_out=tmp_path / "p.tif", options=options, progress=True)
    with rasterio.open(tmp_path / "p.tif") as src:
        blocks = math.ceil(src.height / 1024) * math.ceil(src.width / 1024)
    assert blocks > 1
    bars = [line for line in capfd.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("vectorise")]
    assert bars and f"| {blocks}/{blocks} [" in bars[-1], bars[-1:]


def test_tile_size_changes_only_the_model_context(cli_run, scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """Other tiles give the network other context: a bounded difference, none peculiar to the border.

    Blending that zeroes the scene's outer pixels (or a chip grid that misses them) would make
    the outermost rows and columns differ by up to the full probability.
    """
    _, _, prob_128 = cli_run
    prob_192 = predict_scene(
        scene_path, bundle_dir, tmp_path / "p192.tif", PredictOptions(tile_px=192, overlap_px=48, block_px=512, device="cpu"),
        progress=False,
    )
    diff = np.abs(read_band(prob_128) - read_band(prob_192))
    border = np.concatenate([diff[0], diff[-1], diff[:, 0], diff[:, -1]])
    inner = diff[64:-64, 64:-64]
    print(f"tile 128/32 vs 192/48: max |Δ| {diff.max()}/255, border rows/cols {border.max()}/255, "
          f"inner {inner.max()}/255, mean {diff.mean():.2f}/255")
    assert diff.mean() < 8
    assert border.max() <= inner.max()


def test_default_chips_are_the_training_tile_raised_to_512_px(scene_path: Path, tmp_path: Path) -> None:
    """Without options the shipped road model (trained on 256-px chips) predicts on 512-px chips,
    one per forward pass: the sample (390 x 390 pixels at the model's 1 m) is one chip, as with
    ``--tile-px 512``, not the four chips of ``--tile-px 256``, which see less context."""
    road = resolve_model("road")
    probs = {
        name: read_band(predict_scene(scene_path, road, tmp_path / f"{name}.tif", PredictOptions(device="cpu", **options), progress=False))
        for name, options in [("default", {}), ("512", {"tile_px": 512, "batch_size": 1}), ("256", {"tile_px": 256, "batch_size": 4})]
    }
    assert np.array_equal(probs["default"], probs["512"])
    assert np.abs(probs["default"] - probs["256"]).max() > 10
    cpu, cuda = PredictOptions(device="cpu"), PredictOptions(device="cuda")  # batch_for needs no GPU
    assert (cpu.batch_for(256), cpu.batch_for(512), cpu.batch_for(1024)) == (4, 1, 1)
    assert (cuda.batch_for(256), cuda.batch_for(512), cuda.batch_for(1024)) == (32, 8, 2)
    assert PredictOptions().batch_for(512) == (8 if torch.cuda.is_available() else 1)
    assert PredictOptions(tile_px=256, batch_size=3).batch_for(256) == 3


# -- the COG -----------------------------------------------------------------------------------
def test_probability_cog_is_on_the_scene_grid(cli_run, scene_path: Path) -> None:
    _, _, prob = cli_run
    with rasterio.open(scene_path) as src, rasterio.open(prob) as ds:
        assert ds.crs == src.crs
        assert ds.transform.almost_equals(src.transform)
        assert (ds.width, ds.height, ds.count) == (1300, 1300, 1)
        assert ds.dtypes == ("uint8",)
        assert ds.descriptions == ("road",)
        assert ds.block_shapes == [(512, 512)]
        assert ds.compression is not None and ds.compression.name in ("zstd", "deflate")
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1) == [2, 4]
        assert [flag.name for flag in ds.mask_flag_enums[0]] == ["per_dataset"]
        assert (ds.read_masks(1) == 255).all()  # the chip has no nodata


def test_a_probability_cog_of_four_classes_is_four_grey_bands_not_an_rgba_image(scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """GDAL writes 3 or 4 byte bands as RGB(A) unless told otherwise: a model of 4 classes wrote
    its 4th class as the alpha band, which QGIS drew as transparency and gdalwarp took as the mask."""
    from rasterio.enums import ColorInterp

    meta = load_bundle(bundle_dir).meta
    torch.manual_seed(0)
    classes = ["road", "crack", "building", "water"]
    save_bundle(tmp_path / "four", build_model(ModelConfig(in_channels=3, num_classes=5)), replace(meta, classes=classes,
                model={**meta.model, "num_classes": 5}))
    options = PredictOptions(tile_px=128, overlap_px=32, block_px=256, device="cpu", engine="torch")
    prob = predict_scene(scene_path, tmp_path / "four", tmp_path / "four.tif", options, progress=False)
    with rasterio.open(prob) as ds:
        assert ds.count == 4 and ds.descriptions == tuple(classes)
        assert ColorInterp.alpha not in ds.colorinterp and ColorInterp.red not in ds.colorinterp
        assert [flag.name for flag in ds.mask_flag_enums[3]] == ["per_dataset"]  # the internal mask, not the 4th band
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and (ds.read_masks(4) == 255).all()


def test_a_temporary_probability_raster_skips_the_cog_pass(cli_run, scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """Without --prob-out, predict's probabilities are read once, by the vectoriser: they are written
    as the tiled GeoTIFF of the first pass (no overviews, no compressed copy), same values, grid,
    mask and tags as the COG."""
    _, _, cog = cli_run
    options = PredictOptions(tile_px=128, overlap_px=32, block_px=256, device="cpu")
    plain = predict_scene(scene_path, bundle_dir, tmp_path / "plain.tif", options, progress=False, threshold=0.4, as_cog=False)
    with rasterio.open(cog) as a, rasterio.open(plain) as b:
        assert b.overviews(1) == [] and b.compression is None and b.block_shapes == a.block_shapes
        assert (b.crs, b.transform, b.descriptions, b.scales) == (a.crs, a.transform, a.descriptions, a.scales)
        assert b.tags() == a.tags() and b.mask_flag_enums == a.mask_flag_enums
        assert np.array_equal(b.read(), a.read()) and np.array_equal(b.read_masks(), a.read_masks())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.tif"]


def test_nodata_stays_nodata(scene_path: Path, pointwise: Bundle, tmp_path: Path) -> None:
    with rasterio.open(scene_path) as src:
        profile, data = src.profile, src.read()
    data[3, -100:] = 0  # alpha: the bottom 100 rows are nodata
    profile.update(tiled=True, blockxsize=256, blockysize=256)
    masked = tmp_path / "masked.tif"
    with rasterio.open(masked, "w", **profile) as dst:
        dst.write(data)
    expected = expected_pointwise(scene_path, pointwise)

    out = predict_scene(masked, pointwise, tmp_path / "p.tif", SMALL_TILES, progress=False)
    with rasterio.open(out) as ds:
        mask, values = ds.read_masks(1), ds.read(1).astype(np.int64)
    assert (mask[-100:] == 0).all() and (mask[:-100] == 255).all()
    assert np.abs(values[:-100] - expected[:-100]).max() <= 1

    out16 = predict_scene(masked, pointwise, tmp_path / "p16.tif", replace(SMALL_TILES, prob_dtype="float16"), progress=False)
    with rasterio.open(out16) as ds:
        values16 = ds.read(1)
        assert np.isnan(ds.nodata)
    assert np.isnan(values16[-100:]).all() and np.isfinite(values16[:-100]).all()
    assert np.abs(values16[:-100] * 255 - expected[:-100]).max() <= 1


def test_in_memory_prediction_is_the_scene_prediction(scene_path: Path, bundle_dir: Path, pointwise: Bundle, tmp_path: Path) -> None:
    """predict_array runs the engine of predict_scene: same tiles, blending, normalisation and device choice."""
    window = rasterio.windows.Window(0, 0, 300, 260)
    with rasterio.open(scene_path) as src:
        profile, data = src.profile, src.read(window=window)
        profile.update(width=300, height=260, transform=src.window_transform(window))
    crop = tmp_path / "crop.tif"
    with rasterio.open(crop, "w", **profile) as dst:
        dst.write(data)
    image = data[:3]  # the RGB bands in file units (uint8); band 4 is alpha
    bundle = load_bundle(bundle_dir)
    out = predict_scene(crop, bundle, tmp_path / "p.tif", replace(SMALL_TILES, prob_dtype="float32"), progress=False)
    with rasterio.open(out) as ds:
        from_scene = ds.read(1)
    probs = predict_array(bundle, image, device="cpu", tile_px=128, overlap_px=32)
    assert probs.shape == (2, 260, 300) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[1], from_scene, atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    # one chip (the default): the network sees the whole image; the point-wise model shows no seam
    whole = predict_array(pointwise, image, device="cpu")[1]
    x = pointwise.meta.norm.apply(image)[0].astype(np.float64)
    np.testing.assert_allclose(whole, 1 / (1 + np.exp(-4 * x)), atol=1e-6)
    if not torch.cuda.is_available():
        with pytest.raises(GeoccsegError, match="no CUDA GPU"):
            predict_array(pointwise, image, device="cuda")
    with pytest.raises(GeoccsegError, match=r"must be a \(bands, height, width\) array, got shape \(260, 300\); add a band axis"):
        predict_array(pointwise, image[0], device="cpu")
    with pytest.raises(GeoccsegError, match="batch_size must be a positive integer, got 0"):
        predict_array(pointwise, image, device="cpu", batch_size=0)


def test_model_pixel_size_is_resampled_back_to_the_scene_grid(scene_path: Path, pointwise: Bundle, tmp_path: Path) -> None:
    """A model at 1 m on the 0.27 m chip: the prediction runs on a 351 x 351 grid and returns to 1300 x 1300."""
    at_1m = Bundle(pointwise.model, BundleMeta(**{**vars(pointwise.meta), "pixel_size_m": 1.0}), tmp_path / "at1m")
    out = predict_scene(scene_path, at_1m, tmp_path / "p.tif", SMALL_TILES, progress=False)
    native = expected_pointwise(scene_path, pointwise)
    with rasterio.open(scene_path) as src, rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (src.width, src.height)
        assert ds.transform.almost_equals(src.transform) and ds.crs == src.crs
        assert (ds.read_masks(1) == 255).all()
        values = ds.read(1).astype(np.int64)
    # a smoothed copy of the native map, in place: closer to it than the map shifted by 4 pixels
    assert np.abs(values - native).mean() < np.abs(np.roll(values, 4, axis=1) - native).mean()
    assert np.corrcoef(values.ravel(), native.ravel())[0, 1] > 0.8


def test_a_scene_far_coarser_than_the_model_or_in_the_wrong_crs_is_one_line(scene_path: Path, pointwise: Bundle,
                                                                           tmp_path: Path) -> None:
    """A 1 m road model on a 10 m scene predicted on a grid 100 times the scene's (memory and time
    without end, on blurred roads); a UTM scene tagged EPSG:4326 had a NaN pixel size, and predict
    ended in "cannot convert float NaN to integer"."""
    size = open_scene(scene_path).pixel_size_m
    fine = Bundle(pointwise.model, BundleMeta(**{**vars(pointwise.meta), "pixel_size_m": size / 5}), tmp_path / "fine")
    with pytest.raises(GeoccsegError, match=rf"has {size:.3g} m pixels, 5 times the model's .* give imagery of at most "):
        predict_scene(scene_path, fine, tmp_path / "p.tif", SMALL_TILES, progress=False)
    assert not (tmp_path / "p.tif").exists()
    predict_scene(scene_path, Bundle(pointwise.model, BundleMeta(**{**vars(pointwise.meta), "pixel_size_m": size / 4}), tmp_path / "q"),
                  tmp_path / "q.tif", replace(SMALL_TILES, block_px=512), progress=False)  # 4 times: predicted
    wrong = tmp_path / "wrong_crs.tif"
    with rasterio.open(scene_path) as src:
        profile = src.profile | {"transform": rasterio.transform.from_origin(500000, 4000000, 0.3, 0.3)}  # UTM 11N's, tagged EPSG:4326
        with rasterio.open(wrong, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(GeoccsegError, match=r"coordinates \(x 5.* are not in its CRS \(EPSG:4326\): no pixel size follows"):
        open_scene(wrong)
    result = CliRunner().invoke(cli, ["predict", str(wrong), "-o", str(tmp_path / "roads.gpkg")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "are not in its CRS" in result.output, result.output


def test_a_block_job_reads_the_same_files_from_another_working_folder(scene_path: Path, bundle_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dask worker started in another folder got the scene and the bundle as typed (relative) and
    could read neither: the bundle's empty checksum was reported as "rewritten while this run used
    it (a training run writing into it?)"."""
    import pickle

    from geoccseg.inference.predict import cached_model, model_ref

    monkeypatch.chdir(scene_path.parent)
    scene = open_scene(scene_path.name)
    sent = pickle.dumps(scene)  # what goes to a worker
    monkeypatch.chdir(tmp_path)
    window = Window(0, 0, 64, 64)
    assert np.array_equal(pickle.loads(sent).read(window)[0], open_scene(scene_path).read(window)[0])
    with pytest.raises(GeoccsegError, match=rf"^this process cannot read model bundle {bundle_dir.name} \(moved or deleted during "
                                            r"the run\? on a Dask cluster every worker must see the bundle and the scene at the same "
                                            r"paths as the client\)$"):
        cached_model(replace(model_ref(load_bundle(bundle_dir)), path=bundle_dir.name), "cpu")  # relative to a folder this process is not in
    # a bundle loaded by a relative path is sent by its absolute one, which reads from anywhere
    monkeypatch.chdir(bundle_dir.parent)
    ref = model_ref(load_bundle(bundle_dir.name))
    monkeypatch.chdir(tmp_path)
    assert Path(ref.path) == bundle_dir.resolve()
    cached_model(ref, "cpu")


def test_a_coarser_model_leaves_no_valid_pixel_without_prediction(scene_path: Path, pointwise: Bundle, tmp_path: Path) -> None:
    """A model at 3x the scene's pixel size on a 1000 x 997 crop (not a multiple of 3) with a nodata
    square inside: the model cells across the crop's edges and the square's have no prediction of
    their own, and the scene pixels next to them must still get the neighbours' (they became nodata:
    the last rows and columns, and a ring of up to 3 pixels around every nodata area)."""
    crop = tmp_path / "crop.tif"
    with rasterio.open(scene_path) as src:
        window = Window(0, 0, 997, 1000)
        data = src.read(window=window)
        profile = src.profile | {"width": 997, "height": 1000, "transform": src.window_transform(window)}
        colorinterp = src.colorinterp
    assert colorinterp[3] == rasterio.enums.ColorInterp.alpha
    data[3, 400:500, 400:500] = 0  # the alpha band: a nodata square
    with rasterio.open(crop, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = colorinterp
    size = open_scene(crop).pixel_size_m
    coarse = Bundle(pointwise.model, BundleMeta(**{**vars(pointwise.meta), "pixel_size_m": 3 * size}), tmp_path / "at3x")
    out = predict_scene(crop, coarse, tmp_path / "p.tif", SMALL_TILES, progress=False)
    with rasterio.open(out) as ds:
        has_data = ds.read_masks(1) == 255
    expected = data[3] > 0
    assert expected.sum() == 1000 * 997 - 100 * 100
    assert (has_data == expected).all(), (~has_data & expected).sum()


def test_workers_refuse_a_model_in_memory_that_is_not_the_one_in_its_folder(scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """Dask workers load the model from the bundle folder: a model changed in memory (fine-tuned in
    a notebook) would not be the one that predicts."""
    from geoccseg.inference.predict import check_workers_read_the_same_model

    with_workers = replace(SMALL_TILES, workers=1)
    for name in ("crack", str(bundle_dir)):  # float16 weights on disk (shipped) and float32
        check_workers_read_the_same_model(load_bundle(resolve_model(name)), with_workers)
    bundle = load_bundle(bundle_dir)
    with torch.no_grad():
        next(bundle.model.parameters()).add_(0.1)
    check_workers_read_the_same_model(bundle, SMALL_TILES)  # in this process: the model in memory is used
    with pytest.raises(GeoccsegError, match="the model in memory differs from it; save it with .*save_bundle"):
        predict_scene(scene_path, bundle, tmp_path / "p.tif", with_workers, progress=False)
    assert not (tmp_path / "p.tif").exists()


def test_the_probability_cog_names_the_weights_that_ran(scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """The COG's weights checksum was read again from the bundle folder when the COG was written:
    a model changed in memory was tagged with the file's weights, and a bundle rewritten after it
    was loaded was run with the loaded model under the new weights' checksum. An in-process run
    predicts with the model in memory whatever its folder holds meanwhile (rewritten, removed)."""
    crop = crop_of(scene_path, tmp_path / "crop.tif", 256, 256)
    folder = Path(shutil.copytree(bundle_dir, tmp_path / "roads"))
    on_disk = json.loads((folder / "bundle.json").read_text())["weights_sha256"]
    bundle = load_bundle(folder)

    def tags(name: str) -> dict[str, str]:
        with rasterio.open(predict_scene(crop, bundle, tmp_path / name, SMALL_TILES, progress=False)) as src:
            return src.tags()

    loaded = tags("loaded.tif")
    assert loaded["GEOCCSEG_WEIGHTS_SHA256"] == on_disk and loaded["GEOCCSEG_STATE_SHA256"] == state_sha256(bundle.model)
    with torch.no_grad():  # fine-tuned in a notebook
        next(bundle.model.parameters()).add_(0.1)
    changed = tags("changed.tif")
    assert "GEOCCSEG_WEIGHTS_SHA256" not in changed and changed["GEOCCSEG_STATE_SHA256"] == state_sha256(bundle.model)
    assert changed["GEOCCSEG_STATE_SHA256"] != loaded["GEOCCSEG_STATE_SHA256"]
    before = load_bundle(folder)
    save_bundle(folder, bundle.model, bundle.meta)  # a training run saves into the folder after it was loaded
    with rasterio.open(predict_scene(crop, before, tmp_path / "rewritten.tif", SMALL_TILES, progress=False)) as src:
        assert src.tags()["GEOCCSEG_WEIGHTS_SHA256"] == on_disk  # the model in memory ran, not the folder's new one
        assert src.tags()["GEOCCSEG_STATE_SHA256"] == loaded["GEOCCSEG_STATE_SHA256"]
        assert np.array_equal(src.read(1), read_band(tmp_path / "loaded.tif"))
    with pytest.raises(GeoccsegError, match="the model in memory differs from it"):  # Dask workers would load the new one
        predict_scene(crop, before, tmp_path / "workers.tif", replace(SMALL_TILES, workers=1), progress=False)
    shutil.rmtree(folder)  # a model trained into a scratch folder since removed
    assert tags("gone.tif")["GEOCCSEG_STATE_SHA256"] == state_sha256(bundle.model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA (tests/test_gpu.py has the other)")
def test_the_device_asked_for_is_named_when_there_is_no_gpu() -> None:
    from geoccseg.inference.predict import resolve_device

    with pytest.raises(GeoccsegError, match=r"^--device cuda:1 was requested but no CUDA GPU is available; use --device cpu or auto$"):
        resolve_device("cuda:1")


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_writes_lines_in_the_scene_crs_inside_the_scene(cli_run, scene_path: Path) -> None:
    folder, out, _ = cli_run
    lines = gpd.read_file(out, layer="road")
    scene = open_scene(scene_path)
    assert lines.crs == scene.crs
    assert len(lines) >= 1
    assert (lines.geom_type == "LineString").all()
    assert lines.within(box(*scene.bounds).buffer(1e-9)).all()
    assert (lines["length_m"] > 0).all()
    assert sorted(p.name for p in folder.iterdir()) == ["prob.tif", "roads.gpkg"]  # no temporary file left


def test_cli_low_threshold_is_checked_against_the_threshold_the_lines_use(scene_path: Path, tmp_path: Path) -> None:
    """--low-threshold was checked against 0.5, not the threshold lines are drawn at: 0.6 under
    --threshold 0.7, or 0.52 under the road model's own 0.53, were refused."""
    for n, flags in enumerate((["--threshold", "0.7", "--low-threshold", "0.6"], ["--low-threshold", "0.52"])):
        out = tmp_path / f"roads{n}.gpkg"
        result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(out), "--device", "cpu", *flags])
        assert result.exit_code == 0, result.output
        assert out.is_file()
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "x.gpkg"), "--low-threshold", "0.6"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output  # the model's threshold named as the model's
    assert "--low-threshold 0.6 is above the model's own decision threshold 0.53 (chosen on its validation images)" in result.output


def test_the_api_draws_lines_at_the_threshold_of_its_settings_else_the_models(scene_path: Path, tmp_path: Path) -> None:
    """run_predict drew at the model's threshold whatever ``params`` said (0.3 was dropped), while
    predict_photos and vectorize drew at 0.5 whenever settings were given (the model's 0.44 was
    dropped for a --min-length): a threshold left out of the settings is now the model's everywhere."""
    import pyogrio

    from geoccseg.inference.pipeline import run_predict
    from geoccseg.vectorize import VectorizeParams

    for name, params, expected in (("given", VectorizeParams(threshold=0.3), 0.3), ("own", VectorizeParams(gap_m=5), 0.53)):
        result = run_predict(scene_path, tmp_path / f"{name}.gpkg", model="road", params=params, progress=False)
        assert result.params.threshold == expected
        assert float(pyogrio.read_info(tmp_path / f"{name}.gpkg", layer="road")["layer_metadata"]["GEOCCSEG_THRESHOLD"]) == expected


@pytest.mark.parametrize(("case", "told"), [
    ("bands", "has 1 input band(s) but the model expects 3"),
    ("missing_bundle", "no-such-bundle does not exist; give a folder written by `geoccseg train`"),
    ("exists", "roads.gpkg already exists; pass --overwrite to replace it"),
    ("no_folder", "missing-folder does not exist; create it first"),
])
def test_bad_input_is_one_line_and_leaves_nothing(case: str, told: str, vegas: Path, scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "roads.gpkg"
    scene, model = scene_path, bundle_dir
    if case == "bands":
        scene = vegas / "vegas_pan.tif"
    elif case == "missing_bundle":
        model = tmp_path / "no-such-bundle"
    elif case == "exists":
        out.write_text("keep me")
    else:
        out = tmp_path / "missing-folder" / "roads.gpkg"
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(out), "--model", str(model), "--prob-out", str(tmp_path / "p.tif")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("geoccseg: error: ")
    assert told in result.stderr  # this case's own refusal, not an earlier one
    assert sorted(tmp_path.iterdir()) == before
    if case == "exists":
        assert out.read_text() == "keep me"


def test_a_killed_run_leaves_no_output_and_the_next_run_clears_its_leftovers(scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """SIGKILL (no cleanup code runs) mid-prediction: nothing under the requested names, only hidden
    temporary entries, which the next run removes as it writes the same outputs."""
    out, prob = tmp_path / "roads.gpkg", tmp_path / "prob.tif"
    args = ["predict", str(scene_path), "-o", str(out), "--model", str(bundle_dir), "--prob-out", str(prob),
            "--tile-px", "128", "--overlap-px", "32", "--block-px", "256", "--device", "cpu"]
    child = subprocess.Popen([sys.executable, "-m", "geoccseg.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".") for p in tmp_path.iterdir()):
        assert child.poll() is None and time.monotonic() < deadline, "the prediction never created its work folder"
        time.sleep(0.01)
    time.sleep(0.5)  # let it write into the work folder
    child.send_signal(signal.SIGKILL)
    child.wait()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers and all(name.startswith((".roads.", ".prob.")) for name in leftovers), leftovers

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prob.tif", "roads.gpkg"]


# -- Dask --------------------------------------------------------------------------------------
def crop_of(scene_path: Path, crop: Path, width: int = 520, height: int = 400) -> Path:
    """The top left ``width`` x ``height`` pixels of a scene, written as a GeoTIFF ``crop``."""
    with rasterio.open(scene_path) as src:
        window = rasterio.windows.Window(0, 0, width, height)
        profile = src.profile | {"width": width, "height": height, "transform": src.window_transform(window)}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return crop


def test_local_dask_cluster_gives_the_same_probabilities(scene_path: Path, bundle_dir: Path, tmp_path: Path) -> None:
    crop = crop_of(scene_path, tmp_path / "crop.tif")
    options = PredictOptions(tile_px=128, overlap_px=32, block_px=256, device="cpu")
    local = predict_scene(crop, bundle_dir, tmp_path / "local.tif", options, progress=False)
    cluster = predict_scene(crop, bundle_dir, tmp_path / "cluster.tif", replace(options, workers=2), progress=False)
    assert np.abs(read_band(local) - read_band(cluster)).max() <= 1


def test_a_dask_scheduler_without_workers_is_a_one_line_error(scene_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--scheduler pointing at a scheduler with no worker ended in distributed's TimeoutError traceback."""
    import distributed

    import geoccseg.inference.predict as predict

    monkeypatch.setattr(predict, "WORKER_WAIT_S", 2.0)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--device", "cpu",
                                          "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"the Dask scheduler at {cluster.scheduler_address} has no worker (waited 2 s)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_local_workers_may_use_the_machines_memory_and_a_dying_worker_is_one_line(tmp_path: Path) -> None:
    """--workers N gave each worker Dask's share of memory (the machine's over N): a worker whose
    model and block passed 80 % of it was paused for good (the run hung); a worker killed ended in
    distributed's KilledWorker traceback."""
    import os

    import dask
    import distributed  # noqa: F401  (its defaults in dask's config first: set() removes on exit the sections it created)

    from geoccseg.inference.predict import _run_dask, dask_client

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client(1, None, tmp_path) as client:
        from distributed.system import MEMORY_LIMIT

        assert [w["memory_limit"] for w in client.scheduler_info()["workers"].values()] == [MEMORY_LIMIT]  # the machine's, not a share
        with pytest.raises(GeoccsegError, match=r"^a Dask worker died running one block, each time it was tried \(killed for "
                                                r"memory\? .*use fewer --workers"):
            list(_run_dask(client, [3], task=os._exit))  # the worker process exits, as the kernel's OOM killer ends it


@pytest.mark.parametrize("address", ["http://127.0.0.1:8787", "tcp://127.0.0.1:port"])
def test_a_scheduler_address_that_is_not_one_is_a_one_line_error(address: str, scene_path: Path, tmp_path: Path) -> None:
    """Review E6: the dashboard's http:// address (what a browser shows) or a port that is not a
    number raised distributed's ValueError as a traceback."""
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--device", "cpu",
                                      "--scheduler", address])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"--scheduler {address} is not a Dask scheduler address (" in result.stderr and "give the scheduler's tcp://host:8786" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_tls_scheduler_without_tls_settings_is_told_so(scene_path: Path, tmp_path: Path) -> None:
    """Review S8: a right tls:// address without the Dask configuration's TLS settings raised
    distributed's TypeError, which was called "not a Dask scheduler address", with tcp:// advised."""
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--device", "cpu",
                                      "--scheduler", "tls://127.0.0.1:8786"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "the Dask scheduler at tls://127.0.0.1:8786 needs TLS settings (distributed.comm.tls.*" in result.stderr


@pytest.mark.parametrize("address", ["http://127.0.0.1:8787", "tls://127.0.0.1:8786", "tcp://127.0.0.1:1"])
def test_a_scheduler_that_cannot_be_reached_leaves_dask_as_it_was(address: str, scene_path: Path, tmp_path: Path) -> None:
    """A distributed Client that fails to start has already made itself dask's default scheduler:
    after one mistyped --scheduler (in a notebook, the API's scheduler=), every later dask compute
    of the process failed with "Requested dask.distributed scheduler but no Client active"."""
    import dask

    before = dask.config.get("scheduler", None)
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--device", "cpu",
                                      "--scheduler", address])
    assert result.exit_code == 2, result.output
    assert dask.config.get("scheduler", None) == before
    assert dask.array.ones(4, chunks=2).sum().compute() == 4  # this process's own scheduler still computes


@pytest.mark.parametrize("field, value", [("pixel_size_m", 0), ("pixel_size_m", -1.0), ("pixel_size_m", "NaN"), ("tile_px", 0)])
def test_a_bundle_with_an_impossible_scale_is_refused_as_damaged(field: str, value, scene_path: Path, tmp_path: Path) -> None:
    """A bundle.json with pixel_size_m 0 was a ZeroDivisionError traceback inside the refusal of a
    too-small scale; NaN a ValueError from math.ceil; tile_px 0 a traceback in the chip grid."""
    model = tmp_path / "model"
    shutil.copytree(resolve_model("road"), model)
    text = (model / "bundle.json").read_text()
    raw = json.loads(text)
    raw[field] = value
    (model / "bundle.json").write_text(json.dumps(raw).replace('"NaN"', "NaN"))
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--model", str(model), "--device", "cpu"])
    assert result.exit_code != 0 and result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert f"model bundle {model} has a damaged bundle.json ({field} " in result.stderr and "retrain or restore it" in result.stderr
    assert not (tmp_path / "roads.gpkg").exists()


def test_a_scheduler_gets_two_blocks_per_worker_thread(scene_path: Path, bundle_dir: Path, tmp_path: Path, torch_threads) -> None:
    """Review E1: --scheduler kept 2 blocks in flight per worker process, so a `dask worker` (one
    process with a thread per core) ran 2 blocks at a time whatever its cores. Here one worker
    process of 4 threads (its engine on one thread, as Dask's nanny sets): more than 2 blocks run
    at once (the scheduler's task stream), with the same result. The same for the API's lazy
    array computed on the cluster (review S1: its one-block-per-process limit is for processes
    whose engine takes every core; two threads here, as on any machine of two cores or more)."""
    import distributed

    import geoccseg

    torch_threads(max(2, torch.get_num_threads()))

    def most_at_once(client, since: float, name: str) -> tuple[int, int]:
        """How many ``name`` tasks ran since ``since``, and the most of them at once."""
        spans = [(s["start"], s["stop"]) for task in client.get_task_stream(start=since) for s in task["startstops"]
                 if s["action"] == "compute" and name in str(task["key"])]
        events = sorted([(start, 1) for start, _ in spans] + [(stop, -1) for _, stop in spans])
        return len(spans), max(itertools.accumulate(change for _, change in events), default=0)

    options = PredictOptions(device="cpu", tile_px=128, overlap_px=16, block_px=64, engine="torch")
    local = predict_scene(scene_path, bundle_dir, tmp_path / "local.tif", options, progress=False)
    with (distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=True, dashboard_address=None) as cluster,
          distributed.Client(cluster) as client):
        client.get_task_stream()  # the scheduler records tasks from now on
        start = time.time()
        remote = predict_scene(scene_path, bundle_dir, tmp_path / "remote.tif", replace(options, scheduler=cluster.scheduler_address),
                               progress=False)
        blocks, at_once = most_at_once(client, start, "predict_block")
        assert blocks >= 16 and at_once >= 3, (blocks, at_once)
        # a worker process's engine runs on one thread, so its blocks take no place of the process's
        # (the task stream cannot show it: a task waiting for a place counts as running)
        assert set(client.run(lambda: isinstance(block_slot("cpu"), contextlib.nullcontext)).values()) == {True}
        assert not isinstance(block_slot("cpu"), contextlib.nullcontext)  # this process: its engine takes both cores
        assert isinstance(block_slot("cuda"), threading.BoundedSemaphore)  # a GPU: two places per process, everywhere
        lazy = geoccseg.predict(scene_path, bundle_dir, device="cpu", tile_px=128, overlap_px=16, block_px=64, engine="torch")
        on_cluster = client.compute(lazy.data).result()
    np.testing.assert_allclose(on_cluster, geoccseg.predict(scene_path, bundle_dir, device="cpu", tile_px=128, overlap_px=16,
                                                            block_px=64, engine="torch").values, atol=1e-5)  # 1 thread against 2
    # the worker's engine runs on one thread, this process's on the threads earlier tests left: the
    # last bit of a sum may differ (6 pixels of 1.7 M by 1/255 when the suite ran in one process)
    assert np.abs(read_band(local).astype(int) - read_band(remote)).max() <= 1


@contextlib.contextmanager
def _worker_without_onnx_runtime(tmp_path: Path):
    """A Dask scheduler with one real `dask worker` process whose installation lacks ONNX Runtime
    (a sitecustomize hides it: ``import onnxruntime`` fails there, as where it is not installed)."""
    import os

    import distributed

    hidden = tmp_path / "no_onnxruntime"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    path = [str(hidden), str(Path(__file__).parents[1]), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "CUDA_VISIBLE_DEVICES": ""}  # a CPU worker, on a GPU machine too
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None) as cluster:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nthreads", "1",
                                   "--no-dashboard", "--local-directory", str(tmp_path / "worker")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with distributed.Client(cluster) as client:
                client.wait_for_workers(1, timeout=60)
                assert set(client.run(lambda: "onnxruntime" in sys.modules and sys.modules["onnxruntime"] is None).values()) == {True}
                yield cluster.scheduler_address
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def test_a_cluster_runs_what_its_workers_can_not_what_the_client_can(scene_path: Path, bundle_dir: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Review E3: on an existing Dask cluster the device and engine were settled on the client: a
    client with ONNX Runtime chose the onnx engine for workers without it, and every block failed
    with a remote traceback (a GPU client with CPU workers the same with CUDA; a laptop never used
    its GPU workers). Now the workers are asked: an engine asked by name that a worker lacks is one
    line naming the worker, `auto` falls back to torch there, and `--device cuda` names the worker
    without a GPU."""
    crop = crop_of(scene_path, tmp_path / "crop.tif", 256, 256)
    out = tmp_path / "out"
    out.mkdir()
    base = ["predict", str(crop), "--model", str(bundle_dir), "--tile-px", "128", "--overlap-px", "16", "--block-px", "128"]
    with _worker_without_onnx_runtime(tmp_path) as address:
        refused = CliRunner().invoke(cli, [*base, "-o", str(out / "a.gpkg"), "--engine", "onnx", "--scheduler", address])
        assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.output, refused.output
        assert "--engine onnx: the Dask worker tcp://" in refused.stderr and "has no ONNX Runtime and onnx; install them on every worker, or use --engine torch" in refused.stderr
        no_gpu = CliRunner().invoke(cli, [*base, "-o", str(out / "b.gpkg"), "--device", "cuda", "--scheduler", address])
        assert no_gpu.exit_code == 2 and "--device cuda: the Dask worker tcp://" in no_gpu.stderr and "has no CUDA GPU" in no_gpu.stderr, no_gpu.output
        scoring = CliRunner().invoke(cli, ["suggest", str(crop), "--model", str(bundle_dir), "-n", "1", "--size-m", "30", "-o",
                                           str(out / "areas.gpkg"), "--engine", "onnx", "--scheduler", address])
        assert scoring.exit_code == 2 and "--engine onnx: the Dask worker tcp://" in scoring.stderr, scoring.output  # suggest's blocks too
        assert sorted(p.name for p in out.iterdir()) == []
        with caplog.at_level("WARNING", logger="geoccseg.inference.cluster"):
            auto = CliRunner().invoke(cli, [*base, "-o", str(out / "c.gpkg"), "--prob-out", str(out / "c.tif"), "--scheduler", address])
        assert auto.exit_code == 0, auto.output
        assert "has no ONNX Runtime and onnx; running the torch engine there" in caplog.text
    with rasterio.open(out / "c.tif") as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == "torch"


def test_an_error_while_blocks_are_added_ends_the_block_threads(scene_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block threads were shut down only when their generator was collected: when adding a
    block failed (a full disk in the work folder), predict raised with blocks still running after
    the work folder was gone, and in a notebook (which keeps the traceback) until the session ended."""
    import errno
    import threading

    from geoccseg.inference.cog import Accumulator

    calls = []
    add = Accumulator.add

    def full_after_one(self, *args) -> None:  # the real sums, then the disk is full
        if calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(1)
        add(self, *args)

    monkeypatch.setattr(Accumulator, "add", full_after_one)
    options = PredictOptions(device="cpu", tile_px=128, overlap_px=32, block_px=192)
    with pytest.raises(GeoccsegError, match="space|full|No space"):
        predict_scene(scene_path, resolve_model("road"), tmp_path / "prob.tif", options, progress=False)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("geoccseg-block")]


def test_a_shared_model_is_a_copy_of_the_callers() -> None:
    """The process kept the caller's own model on the CPU: share_bundle switched a notebook's model
    in training to eval mode, and weights changed in place afterwards reached the runs and lazy
    arrays that name the digest it had when it was shared."""
    from geoccseg.inference.predict import cached_model, model_ref, share_bundle

    bundle = load_bundle(resolve_model("road"))
    bundle.model.train()
    ref = model_ref(bundle)
    share_bundle(bundle, "cpu", ref)
    assert bundle.model.training  # the caller's mode is the caller's
    first = next(bundle.model.parameters())
    kept = first.detach().clone()
    with torch.no_grad():
        first.add_(1.0)  # trained on in place
    model, _ = cached_model(ref, "cpu")
    assert not model.training and torch.equal(next(model.parameters()), kept)


def test_the_device_of_a_cluster_is_the_one_every_worker_has() -> None:
    from geoccseg.inference.cluster import cluster_device, cluster_engine
    from geoccseg.inference.predict import CUDA_BATCH_PX, DEFAULT_BATCH_PX, resolve_device

    # the chips per pass follow the device the workers settled, not this machine's
    assert PredictOptions().batch_for(512, "cuda") == CUDA_BATCH_PX // 512**2 > PredictOptions().batch_for(512, "cpu") == max(1, DEFAULT_BATCH_PX // 512**2)

    gpus = {"tcp://a:1": {"cuda_gpus": 1}, "tcp://b:1": {"cuda_gpus": 2}}
    mixed = {**gpus, "tcp://c:1": {"cuda_gpus": 0}}
    assert cluster_device("auto", gpus) == "cuda"  # a client without a GPU predicts on its GPU workers
    assert cluster_device("auto", mixed) == "cpu" and cluster_device("cpu", gpus) == "cpu"
    with pytest.raises(GeoccsegError, match="--device cuda:1: the Dask worker tcp://a:1 has 1 CUDA GPU"):
        cluster_device("cuda:1", gpus)
    for settle in (lambda device: cluster_device(device, gpus), resolve_device):  # one reading of device names for both
        with pytest.raises(GeoccsegError, match="unknown device 'gpu'; use auto, cpu or cuda"):
            settle("gpu")
        with pytest.raises(GeoccsegError, match="device 'meta' is not supported; use auto, cpu or cuda"):
            settle("meta")
    lacking = {"tcp://a:1": {"onnx": True, "openvino": True, "openvino_bf16": False}}
    assert cluster_engine("openvino", "auto", "fp32", lacking) == "openvino"
    assert cluster_engine("openvino", "auto", "bf16", lacking) == "torch"  # its CPU has no bf16: torch runs it
    with pytest.raises(GeoccsegError, match=r"--precision int8 \(the onnx engine\): the Dask worker tcp://c:1 has no ONNX Runtime "
                                            "and onnx; install them on every worker, or use --precision fp32"):
        cluster_engine("onnx", "auto", "int8", {**lacking, "tcp://c:1": {"onnx": False}})
    with pytest.raises(GeoccsegError, match="tcp://a:1 has no CPU with bfloat16 instructions for OpenVINO; use --precision fp32"):
        cluster_engine("openvino", "openvino", "bf16", lacking)
