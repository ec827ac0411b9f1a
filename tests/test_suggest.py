"""Where to label next: the confidence COG of ``geoccseg predict --confidence-out`` and
``geoccseg suggest`` on the real SpaceNet Las Vegas chip and CrackForest photos, with the shipped
models (no training: each test runs in seconds)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tracemalloc
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import rasterio
from rasterio.enums import ColorInterp
import yaml
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import box

from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.inference.predict import PredictOptions
from geoccseg.io.bundle import resolve_model, save_meta
from geoccseg.models import load_bundle
from geoccseg.suggest import PARTS, SuggestParams, suggest_areas
from geoccseg.suggest import select
from geoccseg.suggest.select import (Candidates, choose, coverage, greedy, kmeans, knn_typicality, most_similar, nearest_centre,
                                      typicality)

CPU = PredictOptions(device="cpu")
THRESHOLDS = {"tau_high": 0.9, "tau_high_fg": 0.6, "tau_low": 0.55}
"""Thresholds of the test bundle, unlike TrainConfig's defaults (0.95, 0.8, 0.6)."""


@pytest.fixture(scope="module")
def scene_path(vegas: Path) -> Path:
    return vegas / "vegas_img0_rgb.tif"


def masked_scene(scene_path: Path, dest: Path, rows: slice = slice(None), cols: slice = slice(None)) -> Path:
    """The sample with its alpha band set to 0 (nodata) over ``rows`` x ``cols``."""
    with rasterio.open(scene_path) as src:
        profile, data = src.profile, src.read()
    data[3, rows, cols] = 0
    with rasterio.open(dest, "w", **(profile | {"tiled": True, "blockxsize": 256, "blockysize": 256})) as dst:
        dst.write(data)
    return dest


def with_own_thresholds(name: str, folder: Path) -> Path:
    """A copy of a shipped model with :data:`THRESHOLDS` recorded in its training config."""
    shutil.copytree(resolve_model(name), folder)
    meta = load_bundle(folder).meta
    config = yaml.safe_load(meta.training["config"]) | THRESHOLDS
    save_meta(folder, dataclasses.replace(meta, training=meta.training | {"config": yaml.safe_dump(config)}))
    return folder


@pytest.fixture(scope="module")
def own_thresholds_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_own_thresholds("road", tmp_path_factory.mktemp("bundle") / "road")


def one_line_error(result) -> bool:
    return result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("geoccseg: error: ")


# -- the confidence COG ------------------------------------------------------------------------
def expected_levels(prob: np.ndarray, tau_high: float, tau_high_fg: float, tau_low: float) -> np.ndarray:
    """Level 0 high / 1 low / 2 unreliable of a one-class probability, worked out here (float32 like the raster)."""
    p = prob.astype(np.float32) / np.float32(255)
    confidence = np.maximum(p, np.float32(1) - p)
    tau_h = np.where(p > 0.5, np.float32(tau_high_fg), np.float32(tau_high))
    return np.where(confidence >= tau_h, 0, np.where(confidence < np.float32(tau_low), 2, 1))


def test_confidence_cog_is_on_the_scene_grid_and_follows_the_bundles_thresholds(scene_path, own_thresholds_bundle, tmp_path):
    scene = masked_scene(scene_path, tmp_path / "masked.tif", rows=slice(-100, None))  # bottom 100 rows nodata
    prob, conf = tmp_path / "p.tif", tmp_path / "conf.tif"
    result = CliRunner().invoke(cli, [
        "predict", str(scene), "-o", str(tmp_path / "roads.gpkg"), "--model", str(own_thresholds_bundle), "--prob-out", str(prob),
        "--confidence-out", str(conf), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(conf) as ds, rasterio.open(prob) as p:
        assert (ds.crs, ds.transform, ds.width, ds.height) == (src.crs, src.transform, src.width, src.height)
        assert ds.count == 2 and ds.dtypes == ("uint8", "uint8")
        assert "confidence" in ds.descriptions[0] and "0 high, 1 low, 2 unreliable" in ds.descriptions[1]
        assert ds.tags()["TAU_HIGH_FG"] == "0.6"
        assert ds.scales == (p.scales[0], 1.0) and p.scales[0] == pytest.approx(1 / 255)  # QGIS shows both as 0-1, levels as codes
        mask, (confidence, level), probability = ds.read_masks(1), ds.read(), p.read(1)
    assert (mask[-100:] == 0).all() and (mask[:-100] == 255).all()
    valid = mask == 255
    p = probability[valid].astype(np.float64) / 255
    assert np.abs(confidence[valid].astype(np.int64) - np.round(np.maximum(p, 1 - p) * 255)).max() == 0
    own = expected_levels(probability[valid], **THRESHOLDS)
    assert (level[valid] == own).all()
    assert set(np.unique(own)) == {0, 1, 2}  # every level occurs, so the comparison means something
    assert (own != expected_levels(probability[valid], 0.95, 0.8, 0.6)).sum() > 1000  # not the default thresholds
    # read as probabilities its confidence (>= 0.5 everywhere) was a road on every pixel: vectorize drew a grid of lines
    for args in (["vectorize", str(conf), "-o", str(tmp_path / "conf.gpkg")], ["evaluate", str(conf), str(prob)]):
        result = CliRunner().invoke(cli, args)
        assert one_line_error(result) and "is a confidence raster of `geoccseg predict --confidence-out`" in result.stderr, result.output
    assert not (tmp_path / "conf.gpkg").exists()



def test_a_bundle_recording_thresholds_out_of_range_names_its_file_and_values(scene_path, tmp_path):
    """A bundle trained before thresholds were checked may record tau_high 1.2: its confidence was
    refused with the trainer's words ("confidence thresholds must satisfy ..."), as if the user had
    typed them."""
    folder = tmp_path / "road"
    shutil.copytree(resolve_model("road"), folder)
    meta = load_bundle(folder).meta
    config = yaml.safe_load(meta.training["config"]) | {"tau_high": 1.2}
    save_meta(folder, dataclasses.replace(meta, training=meta.training | {"config": yaml.safe_dump(config)}))
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "roads.gpkg"), "--model", str(folder),
                                      "--confidence-out", str(tmp_path / "conf.tif"), "--device", "cpu"])
    assert one_line_error(result), result.output
    assert "bundle.json records confidence thresholds tau_high=1.2, tau_high_fg=" in result.stderr and "set them there" in result.stderr
    assert not (tmp_path / "roads.gpkg").exists() and not (tmp_path / "conf.tif").exists()


def test_photos_get_a_confidence_png_that_follows_their_probabilities(data_dir, tmp_path):
    crack = with_own_thresholds("crack", tmp_path / "crack")
    out = tmp_path / "out"
    photos = [str(data_dir / "cfd" / "images" / name) for name in ("001.jpg", "002.jpg")]
    result = CliRunner().invoke(cli, ["predict", *photos, "-o", str(out), "--model", str(crack), "--confidence",
                                      "--device", "cpu", "--no-overlay"])
    assert result.exit_code == 0, result.output
    for name in ("001", "002"):
        with Image.open(out / "confidence" / f"{name}.png") as im, Image.open(out / "probability" / f"{name}.png") as pr:
            assert im.mode == "P" and im.size == pr.size == Image.open(data_dir / "cfd" / "images" / f"{name}.jpg").size
            assert im.info["TAU_HIGH"] == "0.9"
            level, probability = np.asarray(im), np.asarray(pr)
        assert (level == expected_levels(probability, **THRESHOLDS)).all()
        assert len(np.unique(level)) >= 2
    result = CliRunner().invoke(cli, ["evaluate", str(out / "confidence" / "001.png"), str(data_dir / "cfd" / "masks" / "001.png")])
    assert one_line_error(result) and "001.png is a confidence raster" in result.stderr, result.output


# -- suggest on scenes -------------------------------------------------------------------------
def test_suggest_returns_n_separate_squares_outside_the_aoi_ranked_by_score(scene_path, tmp_path):
    best = suggest_areas(scene_path, model="road", n=1, size_m=80, options=CPU, progress=False).areas
    with rasterio.open(scene_path) as src:
        crs, bounds = src.crs, src.bounds
    strip = box(bounds.left, bounds.bottom, bounds.left + 0.3 * (bounds.right - bounds.left), bounds.top)
    labeled = strip.union(best.geometry.iloc[0].buffer(1e-5))  # the best square of an unconstrained run is labeled
    gpd.GeoDataFrame(geometry=[labeled], crs=crs).to_file(tmp_path / "aoi.gpkg")
    out = tmp_path / "areas.gpkg"

    result = CliRunner().invoke(cli, ["suggest", str(scene_path), "--model", "road", "--aoi", str(tmp_path / "aoi.gpkg"),
                                      "-n", "4", "--size-m", "80", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    areas = gpd.read_file(out, layer="areas")
    assert len(areas) == 4 and areas.crs == crs
    assert list(areas["rank"]) == [1, 2, 3, 4]
    assert (np.diff(areas["score"]) <= 0).all() and (areas["score"] > 0).all()
    assert {"acquisition", *PARTS, "typicality", "spread", "novelty", "valid_share", "size_m"} <= set(areas.columns)
    assert np.allclose(areas["size_m"], 80, rtol=0.02)
    footprint = box(*bounds)
    for i, square in enumerate(areas.geometry):
        assert square.within(footprint.buffer(1e-9))
        assert square.intersection(labeled).area < 1e-9 * square.area
        for other in areas.geometry.iloc[i + 1:]:
            assert square.intersection(other).area < 1e-9 * square.area


def test_squares_stay_inside_a_scene_the_model_scale_does_not_divide(scene_path, tmp_path):
    """1001 px at 0.3 m is 300.3 model pixels of the road model's 1 m: the cell grid spanned 301,
    and with 86 m squares (43-px cells, 7 x 43 = 301) the last row and column of squares reached
    0.7 m past the scene's edge."""
    with rasterio.open(scene_path) as src:
        pixels = src.read(window=rasterio.windows.Window(0, 0, 1001, 1001))
    scene = tmp_path / "utm_0.3m.tif"
    profile = {"driver": "GTiff", "width": 1001, "height": 1001, "count": 4, "dtype": "uint8", "crs": "EPSG:32611",
               "transform": rasterio.Affine(0.3, 0, 660_000, 0, -0.3, 4_000_000)}
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(pixels)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    areas = suggest_areas(scene, model="road", n=25, size_m=86, options=CPU, progress=False).areas
    footprint = box(660_000, 4_000_000 - 300.3, 660_000 + 300.3, 4_000_000)
    assert len(areas) >= 4
    assert all(square.within(footprint.buffer(1e-6)) for square in areas.geometry), [s.bounds for s in areas.geometry]


def crop(scene_path: Path, dest: Path, cols: slice) -> Path:
    """Columns ``cols`` of the sample as a GeoTIFF of their own."""
    with rasterio.open(scene_path) as src:
        window = rasterio.windows.Window(cols.start, 0, cols.stop - cols.start, src.height)
        profile = src.profile | {"width": window.width, "transform": src.window_transform(window), "tiled": False}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(dest, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return dest


@pytest.mark.parametrize("strategy", ["acquisition", "random"])
def test_squares_of_overlapping_scenes_never_overlap(scene_path, tmp_path, strategy):
    """Overlap was checked within each scene only: two scenes sharing ground (neighbouring tiles cut
    with an overlap) gave squares on top of each other."""
    for side in ("west", "east"):
        (tmp_path / side).mkdir()
    west = crop(scene_path, tmp_path / "west" / "tile.tif", slice(0, 800))
    east = crop(scene_path, tmp_path / "east" / "tile.tif", slice(500, 1300))
    areas = suggest_areas([west, east], model="road", n=12, size_m=60, options=CPU, strategy=strategy, progress=False).areas
    # two tiles of one file name are told apart by their paths (both were "tile.tif")
    assert len(areas) == 12 and set(areas["scene"]) == {str(west), str(east)}
    for i, square in enumerate(areas.geometry):
        for other in areas.geometry.iloc[i + 1:]:
            assert square.intersection(other).area < 1e-6 * square.area


def warped(source: Path, dest: Path, crs: str) -> Path:
    """``source`` reprojected to ``crs`` at its own resolution (nodata outside, through the alpha band)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": crs, "transform": transform, "width": width, "height": height, "tiled": False}
        with rasterio.open(dest, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.bilinear)
    return dest


def test_squares_of_overlapping_scenes_in_two_crss_never_overlap(scene_path, tmp_path):
    """Review G10: scenes in different CRSs were untested. The east tile warped to UTM overlaps the
    west one (in degrees): squares come back in the first scene's CRS, and none overlaps another."""
    west = crop(scene_path, tmp_path / "west.tif", slice(0, 800))
    east = warped(crop(scene_path, tmp_path / "east_4326.tif", slice(500, 1300)), tmp_path / "east.tif", "EPSG:32611")
    areas = suggest_areas([west, east], model="road", n=12, size_m=60, options=CPU, progress=False).areas
    assert len(areas) == 12 and set(areas["scene"]) == {"west.tif", "east.tif"}
    with rasterio.open(west) as src:
        assert areas.crs == src.crs
    for i, square in enumerate(areas.geometry):
        for other in areas.geometry.iloc[i + 1:]:
            assert square.intersection(other).area < 1e-6 * square.area
    assert np.allclose(areas["size_m"], 60, rtol=0.05)


def test_a_scene_too_small_for_a_square_beside_others_is_told_not_dropped_unsaid(scene_path, tmp_path, caplog):
    """Review G10: a scene smaller than one square beside usable ones was skipped silently."""
    small = crop(scene_path, tmp_path / "small.tif", slice(0, 150))  # 45 m wide: no 60 m square
    with caplog.at_level("WARNING", logger="geoccseg.suggest.areas"):
        areas = suggest_areas([small, scene_path], model="road", n=2, size_m=60, options=CPU, progress=False).areas
    assert set(areas["scene"]) == {scene_path.name}
    assert f"no square of 60 m fits in {small}; it is not scored (a smaller --size-m would)" in caplog.text


def test_an_aoi_sliver_reaching_one_scene_and_a_callers_model_in_training(scene_path, tmp_path):
    """Each scene dissolves only the AOI polygons that reach it: a zero-area sliver among them (a
    polygon drawn as three points in a row) alone over the east tile stopped the run with "AOI is
    empty (zero area)" though the AOI has area over the west one. And a model given in memory keeps
    its mode: suggest switched a notebook's model in training to eval."""
    west = crop(scene_path, tmp_path / "west.tif", slice(0, 600))
    east = crop(scene_path, tmp_path / "east.tif", slice(700, 1300))
    with rasterio.open(west) as w, rasterio.open(east) as e:
        crs, wb, eb = w.crs, w.bounds, e.bounds
    labeled = box(wb.left, wb.bottom, wb.left + (wb.right - wb.left) / 3, wb.top)
    cx, cy = (eb.left + eb.right) / 2, (eb.bottom + eb.top) / 2
    sliver = shapely.Polygon([(cx, cy), (cx + 1e-4, cy), (cx + 2e-4, cy)])  # no area
    gpd.GeoDataFrame(geometry=[labeled, sliver], crs=crs).to_file(tmp_path / "aoi.gpkg")
    bundle = load_bundle(resolve_model("road"))
    bundle.model.train()
    areas = suggest_areas([west, east], model=bundle, n=4, size_m=60, aoi=tmp_path / "aoi.gpkg", options=CPU, progress=False).areas
    assert "east.tif" in set(areas["scene"]) and not areas.geometry.intersects(labeled.buffer(-1e-9)).any()
    assert bundle.model.training


def test_the_scenes_of_one_run_share_one_local_cluster(scene_path, tmp_path, monkeypatch):
    """Each scene started its own local Dask cluster (and probed an existing one's workers again):
    40 scene tiles with --workers 4 started 40 clusters, each loading the model anew. One run now
    starts one, and its ranking is the in-process one."""
    import distributed

    west = crop(scene_path, tmp_path / "west.tif", slice(0, 700))
    east = crop(scene_path, tmp_path / "east.tif", slice(600, 1300))
    started = []
    original = distributed.LocalCluster.__init__

    def counted(self, *args, **kwargs):  # the real cluster, counted
        started.append(kwargs.get("n_workers"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(distributed.LocalCluster, "__init__", counted)
    options = replace(CPU, tile_px=128, overlap_px=32)
    here = suggest_areas([west, east], model="road", n=4, size_m=60, options=options, progress=False).areas
    cluster = suggest_areas([west, east], model="road", n=4, size_m=60, options=replace(options, workers=1), progress=False).areas
    assert started == [1]
    assert list(here["scene"]) == list(cluster["scene"])
    assert here.geometry.geom_equals_exact(cluster.geometry, tolerance=1e-12).all()


def test_nothing_is_suggested_where_the_scene_is_nodata(scene_path, tmp_path):
    scene = masked_scene(scene_path, tmp_path / "half.tif", cols=slice(650, None))  # eastern half nodata
    with rasterio.open(scene) as src:
        bounds = src.bounds
        nodata = box(src.xy(0, 650, offset="ul")[0], bounds.bottom, bounds.right, bounds.top)
    areas = suggest_areas(scene, model="road", n=100, size_m=60, options=CPU, progress=False).areas
    assert len(areas) >= 4  # every square of the valid half: each holds at most 10 % nodata
    share_nodata = areas.geometry.intersection(nodata).area / areas.geometry.area
    assert (share_nodata <= 0.1 + 1e-6).all()
    assert (areas["valid_share"] >= 0.9).all()


def test_block_size_and_a_dask_cluster_give_the_same_ranking(scene_path):
    """Blocks of 2 x 2 cells on a Dask worker score every pixel as one block in this process does."""
    options = replace(CPU, tile_px=128, overlap_px=32)
    one_block = suggest_areas(scene_path, model="road", n=6, size_m=60, options=replace(options, block_px=4096), progress=False).areas
    cluster = suggest_areas(scene_path, model="road", n=6, size_m=60, options=replace(options, block_px=120, workers=1), progress=False).areas
    assert one_block.geometry.geom_equals_exact(cluster.geometry, tolerance=1e-12).all()
    for column in ("score", *PARTS):
        assert np.allclose(one_block[column], cluster[column], rtol=1e-4, atol=1e-6), column


def test_blocks_smaller_than_a_cell_cut_it_and_its_parts_add_up(scene_path):
    """Review G2: a block was at least one whole cell, so --block-px did not bound memory for large
    squares (1 km squares of a 10 cm model: one block of some 12 GB). Cells larger than the block
    are now cut into parts of at most block_px pixels (60-px cells into 30-px parts here, 4 tasks
    per cell) whose sums add up to the whole block's."""
    from geoccseg.suggest.blocks import block_spans
    from geoccseg.suggest.terms import cell_sums

    assert block_spans(3, 30, 16) == [(0, 15), (15, 30), (30, 45), (45, 60), (60, 75), (75, 90)]
    assert block_spans(5, 30, 64) == [(0, 60), (60, 120), (120, 150)]  # whole cells, as before
    assert all(end - start <= 100 for start, end in block_spans(4, 1000, 100))
    plane = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    assert cell_sums(plane, 4, 5, offset=(2, 3)).tolist() == [[plane[:2, :2].sum(), plane[:2, 2:7].sum(), plane[:2, 7:].sum()],
                                                              [plane[2:6, :2].sum(), plane[2:6, 2:7].sum(), plane[2:6, 7:].sum()],
                                                              [plane[6:, :2].sum(), plane[6:, 2:7].sum(), plane[6:, 7:].sum()]]
    options = replace(CPU, tile_px=128, overlap_px=32)
    whole = suggest_areas(scene_path, model="road", n=4, size_m=120, options=replace(options, block_px=4096), progress=False)
    parts = suggest_areas(scene_path, model="road", n=4, size_m=120, options=replace(options, block_px=40), progress=False)
    assert parts.candidates == whole.candidates
    assert whole.areas.geometry.geom_equals_exact(parts.areas.geometry, tolerance=1e-12).all()
    for column in ("score", *PARTS):
        assert np.allclose(whole.areas[column], parts.areas[column], rtol=1e-6, atol=1e-9), column


def test_onnx_scoring_gives_what_pytorch_scoring_gives(tmp_path, monkeypatch):
    """The acquisition terms through the network's ``scoring`` ONNX export (the default on the CPU)
    equal PyTorch's: probabilities, the flipped view and the projected embeddings, on a whole chip
    and on chips cut at an edge (96 x 80 px: padded, and flipped before padding as PyTorch does)."""
    import torch

    from geoccseg.inference.engine import TorchEngine, clear_sessions
    from geoccseg.suggest.terms import OnnxScoringEngine, scoring_engine, scoring_forward

    monkeypatch.setenv("GEOCCSEG_CACHE", str(tmp_path / "cache"))
    clear_sessions()  # a new process, as far as the engine is concerned
    road = load_bundle(resolve_model("road"))
    onnx = scoring_engine("auto", road.model, "cpu", road.meta)
    assert isinstance(onnx, OnnxScoringEngine)
    assert isinstance(scoring_engine("torch", road.model, "cpu", road.meta), TorchEngine)
    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 256, 256), (2, 3, 96, 80)]:
        chips = torch.randn(*shape, generator=generator)
        expected, got = scoring_forward(road.model, chips, "cpu"), onnx(chips)
        assert got.shape == expected.shape == (shape[0], 2 + 8, *shape[2:])
        assert float((got - expected).abs().max()) < 1e-3, shape
        assert float(expected[:, 1].std()) > 0  # the flipped view is a real prediction, not a copy
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # the scoring graph, exported once


def test_suggest_ranks_the_same_squares_with_either_engine(scene_path, tmp_path):
    onnx = suggest_areas(scene_path, model="road", n=6, size_m=60, options=CPU, progress=False).areas
    out = tmp_path / "torch.gpkg"
    result = CliRunner().invoke(cli, ["suggest", str(scene_path), "--model", "road", "-n", "6", "--size-m", "60", "-o", str(out),
                                      "--device", "cpu", "--engine", "torch"])
    assert result.exit_code == 0, result.output
    torch_ = gpd.read_file(out, layer="areas")
    assert onnx.geometry.geom_equals_exact(torch_.geometry, tolerance=1e-12).all()
    for column in ("score", *PARTS):
        assert np.allclose(onnx[column], torch_[column], rtol=1e-3, atol=1e-5), column


def test_greedy_choice_trades_score_for_spread_and_novelty():
    """Hand-worked: B is nearly as good as A but next to it and alike; C is worse alone but far and unlike."""
    candidates = Candidates(
        parts=np.array([[1.0, 1.0, 1.0], [0.9, 0.9, 0.9], [0.6, 0.6, 0.6]]),
        embedding=np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
        group=np.zeros(3, dtype=np.int64), cell=np.array([[0, 0], [0, 2], [0, 10]]),
        centre_m=np.array([[0.0, 0.0], [0.0, 100.0], [0.0, 500.0]]),
    )
    choice = greedy(candidates, np.zeros((0, 2)), 3, SuggestParams(), spacing_m=100.0)
    assert list(choice.index) == [0, 2, 1]
    # B: acquisition 0.9, spread 1 - exp(-1) against A, novelty 1 - 0.5 x cos(B, A) = 0.5
    assert choice.score[2] == pytest.approx(0.9 * (1 - np.exp(-1)) * 0.5)
    assert choice.score[1] == pytest.approx(0.6)  # C: 500 m away, opposite embedding


def test_typicality_prefers_what_the_pool_is_made_of():
    """Hand-worked: A, B, C look alike (the pool's common kind), D is the odd one. Centred on the
    pool's mean, A's mean clipped cosine to the others is (1 + 1 + 0) / 3, D's is 0: typicality 1
    and 0. With the weight at 0.5, D (acquisition 1.0, typicality factor 0.5) loses to A (0.8, factor 1)."""
    embedding = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-3.0, 0.0]])  # mean 0: A, B, C one way, D the other
    assert typicality(embedding / np.abs(embedding).max(axis=1, keepdims=True)) == pytest.approx([1, 1, 1, 0])
    candidates = Candidates(np.array([[0.8] * 3, [0.1] * 3, [0.1] * 3, [1.0] * 3]), embedding, np.zeros(4, dtype=np.int64))
    plain = greedy(candidates, np.zeros((0, 2)), 1, SuggestParams(novelty_weight=0.0), spacing_m=np.inf)
    typical = greedy(candidates, np.zeros((0, 2)), 1, SuggestParams(novelty_weight=0.0, typicality_weight=0.5), spacing_m=np.inf)
    assert list(plain.index) == [3] and plain.typicality[0] == 1.0  # off: the odd one, factor 1
    assert list(typical.index) == [0]
    assert typical.typicality[0] == pytest.approx(1.0) and typical.score[0] == pytest.approx(0.8)


def test_chunked_selection_steps_give_the_values_of_one_pass(monkeypatch):
    """Typicality, novelty, k-means' nearest centres and TypiClust's typicality take the rows of
    their items x items temporaries in chunks; chunks of 3 to 7 rows give the values of one pass."""
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(50, 8))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    centres = unit[:7] + 0.1
    whole = (typicality(unit), most_similar(unit, unit[:9]), nearest_centre(unit, (unit**2).sum(axis=1), centres), knn_typicality(unit))
    assert (whole[1] == np.clip((unit @ unit[:9].T).max(axis=1), 0, None)).all()
    assert (whole[2] == np.argmin(((unit[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)).all()
    monkeypatch.setattr(select, "CHUNK_VALUES", 50 * 3 + 1)  # 3 rows of 50 columns, 16 of 9, 21 of 7: each ends in a part chunk
    chunked = (typicality(unit), most_similar(unit, unit[:9]), nearest_centre(unit, (unit**2).sum(axis=1), centres), knn_typicality(unit))
    for a, b in zip(whole, chunked):
        assert a == pytest.approx(b)


def test_novelty_against_many_labeled_squares_keeps_memory_flat():
    """greedy (the default strategy) measured each candidate's likeness to the labeled squares as one
    candidates x labeled matrix, and its clipped copy: a 10 km scene at 1 m with 64 m squares and a
    quarter labeled is 72,500 x 24,300 squares, 28 GB, after the whole scene was scored. Here 6,000 x
    6,000 (576 MB in one pass) must stay under 150 MB of numpy memory."""
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(6000, 8))
    candidates = Candidates(rng.uniform(size=(6000, 3)), embedding, np.zeros(6000, dtype=np.int64))
    reference = rng.normal(size=(6000, 8))
    tracemalloc.start()
    try:
        choice = greedy(candidates, reference, 5, SuggestParams(), spacing_m=np.inf)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150e6, f"{peak / 1e6:.0f} MB"
    assert len(set(choice.index)) == 5


def blobs() -> tuple[np.ndarray, list[np.ndarray]]:
    """Three kinds far apart in 3-D, of 30, 20 and 5 items: each a centre item and a ring around it."""
    rng = np.random.default_rng(1)
    kinds = []
    for axis, size in ((0, 30), (1, 20), (2, 5)):
        centre = np.eye(3)[axis] * 10
        ring = rng.normal(size=(size - 1, 3))
        kinds.append(np.concatenate([centre[None], centre + 0.5 * ring / np.linalg.norm(ring, axis=1, keepdims=True)]))
    return np.concatenate(kinds), kinds


def test_kmeans_finds_separate_kinds_whatever_the_seed():
    points, kinds = blobs()
    truth = np.repeat([0, 1, 2], [len(k) for k in kinds])
    for seed in range(5):
        label = kmeans(points, 3, seed)
        assert len(set(label)) == 3 and len(set(zip(label, truth))) == 3  # three clusters, each one whole kind


def test_knn_typicality_is_highest_at_the_centre_of_a_kind():
    _, kinds = blobs()
    for kind in kinds:
        typical = knn_typicality(kind)
        assert np.argmax(typical) == 0 and typical[0] == 1.0 and (typical[1:] < 1).all()
    assert list(knn_typicality(np.ones((1, 3)))) == [1.0]


def test_coverage_takes_the_centre_of_each_unlabeled_kind_largest_first():
    """One item of the largest kind (30) is labeled: 1 + 2 clusters, the kinds of 20 and 5 are
    uncovered, so the first two picks are their centres (items 30 and 50), the 20's first; ranking
    on, the next pick comes from the kind with the fewest labeled and taken items (all have one
    now), the largest: the 30."""
    points, _ = blobs()
    reference = points[1:2]  # a ring item of the 30 is labeled
    candidates = Candidates(np.zeros((len(points), 3)), points, np.zeros(len(points), dtype=np.int64))
    choice = coverage(candidates, reference, 2, seed=0, params=SuggestParams())
    assert list(choice.index) == [30, 50] and list(choice.typicality) == [1.0, 1.0] and np.isnan(choice.score).all()
    ranked = choose(candidates, reference, 2, SuggestParams(), np.inf, "coverage", seed=0, take=len(points))
    assert list(ranked.index[:2]) == [30, 50] and ranked.index[2] < 30
    assert sorted(ranked.index) == list(range(len(points)))  # a full ranking, each once
    # with the acquisition counted fully, the 20's pick is its ring item of high acquisition, not its centre
    parts = np.full((len(points), 3), 0.1)
    parts[35] = 1.0
    scored = dataclasses.replace(candidates, parts=parts)
    assert list(coverage(scored, reference, 2, seed=0, params=SuggestParams()).index) == [30, 50]
    assert list(coverage(scored, reference, 2, seed=0, params=SuggestParams(coverage_acquisition=1.0)).index) == [35, 50]


def test_coverage_never_takes_squares_that_overlap_one_taken():
    """The kind of 20 as squares in a row, one cell apart (each overlaps its neighbours), the others
    far apart: no two squares taken overlap, and every square left overlaps one taken."""
    points, _ = blobs()
    cells = np.stack([np.where(np.arange(55) < 30, 10 + 3 * np.arange(55), 0), np.arange(55)], axis=1)
    candidates = Candidates(np.zeros((55, 3)), points, np.zeros(55, dtype=np.int64), cell=cells, centre_m=cells * 1.0)
    choice = coverage(candidates, np.zeros((0, 3)), 3, seed=0, params=SuggestParams(), take=55)
    taken = cells[choice.index]
    assert all(np.abs(a - b).max() >= 2 for i, a in enumerate(taken) for b in taken[:i])
    left = np.setdiff1d(np.arange(55), choice.index)
    assert all((np.abs(taken - cells[i]).max(axis=1) < 2).any() for i in left)
    assert set(range(30)) <= set(choice.index)  # the far-apart squares are all taken


# -- photos ------------------------------------------------------------------------------------
def test_photos_are_ranked_one_row_per_photo(data_dir, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(data_dir / "cfd" / "masks" / "002.png", masks)  # 002 is already labeled
    out = tmp_path / "next.csv"
    pattern = str(data_dir / "cfd" / "images" / "00[1-5].jpg")
    result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "crack", "-n", "2", "--labels", str(masks), "-o", str(out),
                                      "--device", "cpu", "--strategy", "acquisition"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert sorted(table["photo"]) == ["001.jpg", "002.jpg", "003.jpg", "004.jpg", "005.jpg"]
    assert list(table["status"]) == ["suggested", "suggested", "unlabeled", "unlabeled", "labeled"]
    assert table.loc[table["photo"] == "002.jpg", "rank"].isna().all()
    assert list(table["rank"].dropna()) == [1, 2, 3, 4]
    assert (np.diff(table["score"].dropna()) <= 0).all()
    assert result.stdout.splitlines()[:2] == list(table["photo"][:2])
    # coverage, the photos' default: no score; the suggested photos are each the most typical of their cluster, every photo ranked
    coverage = tmp_path / "coverage.csv"
    result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "crack", "-n", "2", "--labels", str(masks), "-o", str(coverage),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(coverage)
    assert list(table["status"]) == ["suggested", "suggested", "unlabeled", "unlabeled", "labeled"]
    assert list(table["rank"].dropna()) == [1, 2, 3, 4] and table["score"].isna().all()
    # the first round: an empty masks folder is no label yet (it was refused as "holds no image")
    (masks / "002.png").unlink()
    first = tmp_path / "first.csv"
    result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "crack", "-n", "2", "--labels", str(masks), "-o", str(first),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(first)  # every photo ranked, 002 (no longer labeled) included; the two suggested are each the most typical of their cluster
    assert list(table["rank"]) == [1, 2, 3, 4, 5] and sorted(table["photo"]) == ["001.jpg", "002.jpg", "003.jpg", "004.jpg", "005.jpg"]
    assert list(table["typicality"][:2]) == [1.0, 1.0] and set(table["status"]) == {"suggested", "unlabeled"}
    assert result.stdout.splitlines()[:2] == list(table["photo"][:2])
    # masks named otherwise than their photos (002_mask.png) matched none: every photo stayed suggestible, silently
    shutil.copy(data_dir / "cfd" / "masks" / "002.png", masks / "002_mask.png")
    result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "crack", "-n", "2", "--labels", str(masks), "-o",
                                      str(tmp_path / "misnamed.csv"), "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"no mask in {masks} has the name of a photo (e.g. 002_mask against 001); name each mask as its photo" in result.output


@pytest.mark.parametrize("near_px", [0, 40])
def test_photo_sums_stream_chip_rows_and_equal_one_whole_blend(near_px: int, data_dir) -> None:
    """photo_sums held whole-photo planes of ten float32 channels (1.9 GB for 48 megapixels); it
    now streams chip rows. The sums are those of one whole-photo blend, also where the likely-road
    neighbourhood reaches past a chip row (40 px against a 32-px stride)."""
    from geoccseg.data.photos import read_photo
    from geoccseg.inference.blend import ChipGrid, blend_window
    from geoccseg.inference.confidence import ConfidenceThresholds
    from geoccseg.inference.predict import blend_chips
    from geoccseg.suggest.photos import photo_sums
    from geoccseg.suggest.terms import TermParams, cell_features, n_channels, scoring_engine

    bundle = load_bundle(resolve_model("crack"))
    image = read_photo(data_dir / "cfd" / "images" / "004.jpg")[:, 120:320, :160]  # the part with the crack
    thresholds, params = ConfidenceThresholds.from_meta(bundle.meta), TermParams(0.1, near_px)
    engine = scoring_engine("torch", bundle.model, "cpu", bundle.meta)
    streamed = photo_sums(bundle, image, thresholds, params, engine=engine, tile_px=48, overlap_px=16, batch_size=8)
    grid = ChipGrid.create(200, 160, 48, 16, block_px=200)
    chips = [(r, c, *grid.chip_shape(r, c)) for block in grid.blocks() for r, c in block.chips]
    weighted, weight = blend_chips(engine, bundle.meta.norm.for_image(image), image, None, chips, blend_window(48, 16), 8,
                                   n_channels(1))
    whole = cell_features(weighted, weight, 1, thresholds, params, cell_px=(200, 160))[:, 0, 0]
    assert streamed[0] == 200 * 160 and (streamed[1] > 0 or near_px == 0)  # every pixel counted once; some near a likely crack
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-3)


def test_the_likely_neighbourhood_of_any_radius_is_the_disk_dilation() -> None:
    """A neighbourhood of 8 m in model pixels was a disk dilation: minutes a block at 5 cm (160 px),
    and for a crack model declaring 0.5 mm pixels a 16,000-pixel disk (16 GB). Large radii take the
    distance transform now: the same pixels, in time and memory independent of the radius."""
    from scipy import ndimage

    from geoccseg.suggest.terms import DILATE_UP_TO_PX, near_likely

    likely = np.zeros((120, 90), bool)
    likely[[5, 60, 118], [3, 45, 80]] = True
    likely[30:33, 10:70] = True
    for radius in (0, 1, DILATE_UP_TO_PX, DILATE_UP_TO_PX + 1, 40):
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        disk = ndimage.binary_dilation(likely, structure=xx**2 + yy**2 <= radius**2) if radius else likely
        assert np.array_equal(near_likely(likely, radius), disk), radius
    assert near_likely(likely, 16_000).all() and not near_likely(np.zeros((4, 4), bool), 16_000).any()


def test_the_transparent_part_of_a_photo_is_not_scored(data_dir) -> None:
    """suggest read a cut-out photo's transparent part as its stored colours: its black area and
    edge counted in the photo's terms. They are left out now, as prediction leaves them out."""
    from geoccseg.data.photos import read_photo
    from geoccseg.inference.confidence import ConfidenceThresholds
    from geoccseg.suggest.photos import photo_sums
    from geoccseg.suggest.terms import TermParams, scoring_engine

    bundle = load_bundle(resolve_model("crack"))
    image = read_photo(data_dir / "cfd" / "images" / "004.jpg")[:, :160, :160]
    valid = np.ones((160, 160), bool)
    valid[:, :64] = False
    cut = image.copy()
    cut[:, ~valid] = 0  # stored black where transparent
    thresholds, params = ConfidenceThresholds.from_meta(bundle.meta), TermParams(0.1, 8)
    engine = scoring_engine("torch", bundle.model, "cpu", bundle.meta)
    sums = {name: photo_sums(bundle, pixels, thresholds, params, engine=engine, tile_px=64, overlap_px=16, batch_size=8, valid=v)
            for name, pixels, v in (("cut", cut, valid), ("image", image, valid), ("black", cut, None))}
    assert sums["cut"][0] == valid.sum() and sums["black"][0] == valid.size
    np.testing.assert_allclose(sums["cut"], sums["image"], rtol=1e-5, atol=1e-3)  # what is stored there plays no part
    assert not np.allclose(sums["cut"][1:], sums["black"][1:] * valid.sum() / valid.size, rtol=1e-2)


def test_a_wholly_transparent_photo_is_not_suggested(data_dir, tmp_path) -> None:
    """Its valid-pixel count was clamped to 1: parts and embedding 0, a candidate the novelty term
    could rank first. It is listed as transparent now, neither ranked nor a labeled reference."""
    from geoccseg.suggest.photos import suggest_photos

    for stem in ("001", "002"):
        shutil.copy(data_dir / "cfd" / "images" / f"{stem}.jpg", tmp_path / f"{stem}.jpg")
    Image.new("RGBA", (480, 320), (0, 0, 0, 0)).save(tmp_path / "blank.png")
    table = suggest_photos(tmp_path, model="crack", n=2, options=CPU, progress=False).table
    assert dict(zip(table["photo"], table["status"])) == {"001.jpg": "suggested", "002.jpg": "suggested", "blank.png": "transparent"}


def test_an_unreadable_photo_is_left_out_not_the_whole_ranking(data_dir, tmp_path, caplog) -> None:
    """Review G4: one photo cut short by a copy stopped `suggest` after every photo before it was
    scored, and nothing was written; training leaves such a photo out with a warning."""
    from geoccseg.suggest.photos import suggest_photos

    for stem in ("001", "002"):
        shutil.copy(data_dir / "cfd" / "images" / f"{stem}.jpg", tmp_path / f"{stem}.jpg")
    whole = (data_dir / "cfd" / "images" / "003.jpg").read_bytes()
    (tmp_path / "003.jpg").write_bytes(whole[: len(whole) // 3])  # its header reads, its body does not
    with caplog.at_level("WARNING", logger="geoccseg.suggest.photos"):
        result = suggest_photos(tmp_path, model="crack", n=1, options=CPU, progress=False, out=tmp_path / "next.csv")
    status = dict(zip(result.table["photo"], result.table["status"]))
    assert status["003.jpg"] == "unreadable" and sorted(status[p] for p in ("001.jpg", "002.jpg")) == ["suggested", "unlabeled"]
    assert "003.jpg is left out (" in caplog.text and (tmp_path / "next.csv").is_file()
    # when no photo is left, the refusal says what the first unreadable one needs (here: 8 or 16 bits)
    only = tmp_path / "floats"
    only.mkdir()
    Image.fromarray(np.zeros((64, 64), dtype=np.float32), mode="F").save(only / "f.tif")
    with pytest.raises(GeoccsegError, match=r"or unreadable \(photo f.tif has 32-bit floating-point pixels; save it as an 8- or "
                                            r"16-bit image\): there is nothing to suggest$"):
        suggest_photos(only, model="crack", n=1, options=CPU, progress=False)


def test_photos_are_scored_with_the_engine_asked_for(data_dir, tmp_path, monkeypatch):
    from geoccseg.inference.engine import clear_sessions

    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    pattern = str(data_dir / "cfd" / "images" / "00[1-3].jpg")
    for engine, exported in (("torch", False), ("auto", True)):  # auto is ONNX Runtime on the CPU: it exports the network
        clear_sessions()
        result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "crack", "-n", "1", "-o", str(tmp_path / f"{engine}.csv"),
                                          "--device", "cpu", "--engine", engine])
        assert result.exit_code == 0, result.output
        assert any(cache.rglob("*.onnx")) is exported, engine


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "told"), [
    ("count", "-n 0 is invalid; ask for 1 or more areas"),
    ("size", "no square of 5000 m fits in the scene; give a smaller --size-m"),
    ("aoi_elsewhere", "far.gpkg does not overlap the scene; check its location and CRS"),
    ("exists", "areas.gpkg already exists; pass --overwrite to replace it"),
    ("suffix", "areas.txt: unknown extension '.txt'"),
    ("is_input", "aoi.gpkg is also an input"),
    ("photo_aoi", "--aoi only applies to georeferenced scenes; leave it out for photos"),
    ("csv_suffix", "l.gpkg is a CSV table: name it .csv"),
    ("confidence_png", "c.png is a GeoTIFF: name it .tif or .tiff"),
    ("tile_zero", "--tile-px 0 is invalid"),
    ("tiny_squares", "--size-m 2 is too small for vegas_img0_rgb.tif"),
    ("missing_scene", "scnee.tif does not exist"),
    ("labels_file", "masks folder {tmp}/001.png is a file, not a folder; give the folder that holds the masks"),
])
def test_bad_input_is_one_line_and_leaves_nothing(case, told, scene_path, data_dir, tmp_path):
    out = tmp_path / "areas.gpkg"
    args = ["suggest", str(scene_path), "-o", str(out), "--device", "cpu"]
    if case == "count":
        args += ["-n", "0"]
    elif case == "size":
        args += ["--size-m", "5000"]
    elif case == "aoi_elsewhere":
        gpd.GeoDataFrame(geometry=[box(10, 10, 11, 11)], crs="EPSG:4326").to_file(tmp_path / "far.gpkg")
        args += ["--aoi", str(tmp_path / "far.gpkg")]
    elif case == "exists":
        out.write_text("keep me")
    elif case == "suffix":
        args[3] = str(tmp_path / "areas.txt")
    elif case == "is_input":  # the output named as the AOI it reads
        with rasterio.open(scene_path) as src:
            gpd.GeoDataFrame(geometry=[box(*src.bounds)], crs=src.crs).to_file(tmp_path / "aoi.gpkg")
        args[3:4] = [str(tmp_path / "aoi.gpkg"), "--overwrite", "--aoi", str(tmp_path / "aoi.gpkg")]
    elif case == "photo_aoi":
        args = ["suggest", str(data_dir / "cfd" / "images"), "--aoi", str(tmp_path / "x.gpkg"), "-o", str(tmp_path / "l.csv")]
    elif case == "missing_scene":  # was "--aoi only applies to georeferenced scenes"
        args = ["suggest", str(tmp_path / "scnee.tif"), "--aoi", str(tmp_path / "x.gpkg"), "-o", str(out)]
    elif case == "tiny_squares":  # 1-px cells: 26 GB of sums on a 16k scene
        args += ["--size-m", "2"]
    elif case == "tile_zero":  # was a ZeroDivisionError traceback after loading the model
        args = ["suggest", str(data_dir / "cfd" / "images"), "--tile-px", "0", "-o", str(tmp_path / "l.csv")]
    elif case == "csv_suffix":
        args = ["suggest", str(data_dir / "cfd" / "images" / "001.jpg"), "-o", str(tmp_path / "l.gpkg")]
    elif case == "labels_file":  # one mask given for the masks folder: it "does not exist"
        shutil.copy(data_dir / "cfd" / "masks" / "001.png", tmp_path / "001.png")
        args = ["suggest", str(data_dir / "cfd" / "images"), "--labels", str(tmp_path / "001.png"), "-o", str(tmp_path / "l.csv")]
    else:
        args = ["predict", str(scene_path), "-o", str(tmp_path / "r.gpkg"), "--confidence-out", str(tmp_path / "c.png")]
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(cli, args)
    assert one_line_error(result), result.output
    assert told.format(tmp=tmp_path) in result.stderr  # this case's own refusal, not an earlier one
    assert sorted(tmp_path.iterdir()) == before
    if case == "exists":
        assert out.read_text() == "keep me"


# -- the loop ----------------------------------------------------------------------------------
def test_simulated_labels_are_the_truth_inside_the_area_and_its_margin(vegas):
    from geoccseg.suggest.loop import label_from_truth

    truth = gpd.read_file(vegas / "vegas_img0_roads.geojson")
    metric = truth.estimate_utm_crs()
    centre = truth.to_crs(metric).union_all().centroid
    area = gpd.GeoSeries([centre.buffer(60, cap_style="square")], crs=metric)  # a 120 m square
    labels = label_from_truth(truth, area.to_crs(truth.crs).iloc[0], margin_m=5.0)
    assert len(labels) > 0 and set(labels.geom_type) == {"LineString"} and labels.crs == truth.crs
    drawn = labels.to_crs(metric)
    assert drawn.within(area.buffer(5.0 + 0.01).iloc[0]).all()
    inside = truth.to_crs(metric).clip(area.buffer(5.0).iloc[0]).length.sum()
    assert drawn.length.sum() == pytest.approx(inside, rel=1e-3)
    assert drawn.length.sum() > truth.to_crs(metric).clip(area.iloc[0]).length.sum()  # the margin adds the ends


def test_a_finished_loop_round_is_read_back_without_suggesting_its_squares_again(scene_path, vegas, tmp_path):
    """Rerunning the loop reads a round that holds round.json back with its AOI and suggests nothing for
    it (a benchmark resumed after its last round only scores). Round 0's model is moved away once it has
    mapped the scene, so any new suggestion would fail."""
    from geoccseg.suggest.loop import LoopRound, active_labeling

    out, truth = tmp_path / "loop", vegas / "vegas_img0_roads.geojson"
    shutil.copytree(resolve_model("road"), out / "round0" / "model")
    (first,) = active_labeling(scene_path, truth, out, train_settings={}, rounds=0, strategy="random", options=CPU)
    first.model.rename(out / "round0" / "model-moved-away")
    strip = gpd.read_file(first.aoi)
    square = box(*strip.total_bounds).buffer(0)  # the whole strip's box: any AOI the round could have had
    (out / "round1").mkdir()
    strip.set_geometry([square]).to_file(out / "round1" / "aoi.gpkg")
    finished = dataclasses.replace(first, round=1, strategy="random", folder=str(out / "round1"), squares=1)
    (out / "round1" / "round.json").write_text(json.dumps(dataclasses.asdict(finished)))
    rounds = active_labeling(scene_path, truth, out, train_settings={}, rounds=1, strategy="random", start=first, options=CPU)
    assert rounds == [first, finished] and isinstance(rounds[1], LoopRound)
    assert not list(out.glob("round0-*.gpkg"))  # no squares were suggested for round 1
    # other settings in the same folder: its rounds would be read back as if run with them; refused before any work
    before = sorted(p.name for p in out.rglob("*"))
    for other in ({"per_round": 3}, {"strategy": "coverage"}, {"train_settings": {"max_steps": 10}}, {"seed": 1}):
        with pytest.raises(GeoccsegError, match=rf"^{out} holds a loop run with other settings \({next(iter(other))}\)"):
            active_labeling(scene_path, truth, out, **{"train_settings": {}, "rounds": 1, "strategy": "random", "start": first,
                                                       "options": CPU, **other})
    assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.parametrize(("bad", "message"), [
    ({"strategy": "coverge"}, "strategy 'coverge' is unknown"), ({"seed": -1}, "seed -1 is invalid"),
    ({"size_m": 0.0}, "--size-m 0.0 is invalid"),
])
def test_the_loop_refuses_bad_suggest_settings_before_round_0_trains(scene_path, vegas, tmp_path, bad, message):
    """The loop checked its suggest settings only at round 1, after round 0 had trained (and recorded
    the typo in loop.json, so the corrected rerun was refused as another run)."""
    from geoccseg.suggest.loop import active_labeling

    with pytest.raises(GeoccsegError, match=re.escape(message)):
        active_labeling(scene_path, vegas / "vegas_img0_roads.geojson", tmp_path / "loop", train_settings={"max_steps": 1},
                        rounds=1, options=CPU, **bad)
    assert not (tmp_path / "loop").exists()


def test_a_loop_round_writes_its_aoi_and_labels_as_geopackage_1_2_again_when_rerun(scene_path, vegas, tmp_path):
    """The round's AOI and labels go through the one vector writer (atomic, GeoPackage 1.2, a layer
    named after the file); a round left unfinished (no round.json) writes them again. The round's
    model is the shipped one, already in place, so nothing trains."""
    import sqlite3

    import pyogrio

    from geoccseg.suggest.loop import active_labeling

    out = tmp_path / "loop"
    shutil.copytree(resolve_model("road"), out / "round0" / "model")
    for _ in range(2):
        (first,) = active_labeling(scene_path, vegas / "vegas_img0_roads.geojson", out, train_settings={}, rounds=0, options=CPU)
        folder = Path(first.folder)
        assert sorted(p.name for p in folder.iterdir()) == ["aoi.gpkg", "labels.gpkg", "lines.gpkg", "model", "round.json"]
        (folder / "round.json").unlink()  # as if the run had stopped before the round ended
    for name in ("aoi", "labels"):
        with sqlite3.connect(folder / f"{name}.gpkg") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert [str(layer) for layer, _ in pyogrio.list_layers(folder / f"{name}.gpkg")] == [name]
    labels = gpd.read_file(folder / "labels.gpkg")
    assert len(labels) > 0 and labels.crs == gpd.read_file(folder / "aoi.gpkg").crs


def test_labels_with_a_self_crossing_polygon_are_taken(scene_path, tmp_path):
    """A hand-drawn bow tie among the labels was a GEOS TopologyException traceback."""
    with rasterio.open(scene_path) as src:
        crs, b = src.crs, src.bounds
    w, h = b.right - b.left, b.top - b.bottom
    x, y = b.left + 0.1 * w, b.bottom + 0.1 * h
    bow = shapely.Polygon([(x, y), (x + 0.2 * w, y + 0.2 * h), (x + 0.2 * w, y), (x, y + 0.2 * h)])
    gpd.GeoDataFrame(geometry=[bow, box(x + 0.5 * w, y, x + 0.6 * w, y + 0.1 * h)], crs=crs).to_file(tmp_path / "labels.gpkg")
    result = suggest_areas(scene_path, model="road", n=3, size_m=60, labels=tmp_path / "labels.gpkg", options=CPU, progress=False)
    areas = result.areas
    assert len(areas) == 3 and not areas.geometry.intersects(shapely.make_valid(bow)).any()
    # both labels were taken: fewer candidates than without them, and none over either
    unlabeled = suggest_areas(scene_path, model="road", n=3, size_m=60, options=CPU, progress=False)
    assert result.candidates < unlabeled.candidates
    assert not result.areas.geometry.intersects(box(x + 0.5 * w, y, x + 0.6 * w, y + 0.1 * h)).any()


def test_every_square_that_holds_a_label_in_another_crs_is_left_out(scene_path, tmp_path):
    """Review G10: labels were tested only far from the squares chosen. A short line drawn in UTM
    inside the top-left cell of the best square takes that square and each other square over the
    cell out of the candidates (and nothing else); a label on another continent in the same file
    changes nothing."""
    first = suggest_areas(scene_path, model="road", n=1, size_m=80, options=CPU, progress=False)
    best = first.areas.geometry.iloc[0]
    with rasterio.open(scene_path) as src:
        crs, bounds = src.crs, src.bounds
    x0, y0, x1, y1 = best.bounds
    cx, cy = x0 + (x1 - x0) / 4, y1 - (y1 - y0) / 4  # the centre of the square's top-left cell
    line = shapely.LineString([(cx - (x1 - x0) / 20, cy), (cx + (x1 - x0) / 20, cy)])
    far = shapely.LineString([(10.0, 50.0), (10.01, 50.0)])  # near Frankfurt
    labels = gpd.GeoDataFrame(geometry=[line, far], crs=crs).to_crs(32611)
    labels.to_file(tmp_path / "labels.gpkg")
    second = suggest_areas(scene_path, model="road", n=3, size_m=80, labels=tmp_path / "labels.gpkg", options=CPU, progress=False)
    holding = (1 + (x0 > bounds.left + 1e-9)) * (1 + (y1 < bounds.top - 1e-9))  # squares over the cell: 1, 2 or 4
    assert second.candidates == first.candidates - holding
    assert not second.areas.geometry.intersects(line).any()
    assert not any(square.equals_exact(best, 1e-9) for square in second.areas.geometry)


def test_an_aoi_in_another_crs_with_a_hole_leaves_the_squares_of_the_hole(scene_path, tmp_path):
    """Review G10: an AOI in a CRS other than the scene's, and one with a hole, were untested. The
    AOI is the whole scene in Web Mercator but for a hole a little larger than the best square: that
    square is the one candidate left."""
    best = suggest_areas(scene_path, model="road", n=1, size_m=80, options=CPU, progress=False).areas.geometry.iloc[0]
    with rasterio.open(scene_path) as src:
        crs, bounds = src.crs, src.bounds
    margin = (best.bounds[2] - best.bounds[0]) / 80  # about 1 m
    holed = shapely.Polygon(box(*bounds).buffer(0.001, join_style="mitre").exterior.coords, [best.buffer(margin, join_style="mitre").exterior.coords])
    gpd.GeoDataFrame(geometry=[holed], crs=crs).to_crs(3857).to_file(tmp_path / "aoi.gpkg")
    result = suggest_areas(scene_path, model="road", n=3, size_m=80, aoi=tmp_path / "aoi.gpkg", options=CPU, progress=False)
    assert result.candidates == 1
    assert len(result.areas) == 1 and result.areas.geometry.iloc[0].equals_exact(best, 1e-9)


def test_the_neighbourhood_of_likely_roads_is_bounded_in_pixels() -> None:
    """Review G1: near_m (8 m) became every scored block's halo in model pixels: 8 px for the road
    model at 1 m, but 4000 px for a crack model at 2 mm (blocks 10,000 px a side, 4 GB an array;
    16,000 px at 0.5 mm, the whole scene) and "near a likely crack" covered every square."""
    from geoccseg.suggest.select import NEAR_MAX_PX, SuggestParams

    params = SuggestParams()
    assert params.near_px(1.0) == 8 and params.near_px(None) == params.near_px_photos  # the measured settings, unchanged
    assert params.near_px(0.002) == params.near_px(0.0005) == NEAR_MAX_PX == 32


def test_scenes_mixed_with_other_inputs_are_told_which_is_which(vegas, data_dir, tmp_path) -> None:
    """Review G7: one input that is not a scene sent every input to the photo path, whose message
    named the scene ("it is a georeferenced scene, not a photo") and advised `predict`; a folder of
    scene tiles was told to use predict, which takes one scene, where suggest takes them all."""
    scene = vegas / "vegas_img0_rgb.tif"
    shutil.copy(data_dir / "cfd" / "images" / "001.jpg", tmp_path / "001.jpg")
    result = CliRunner().invoke(cli, ["suggest", str(scene), str(tmp_path / "001.jpg"), "-o", str(tmp_path / "areas.gpkg")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{tmp_path / '001.jpg'} is not a georeferenced scene (a GeoTIFF or VRT with a CRS) while {scene} is" in result.output
    # a mistyped second scene was told it is "not a georeferenced scene": its CRS checked, not its name
    result = CliRunner().invoke(cli, ["suggest", str(scene), str(tmp_path / "vegas_img1.tif"), "-o", str(tmp_path / "areas.gpkg")])
    assert result.exit_code == 2 and result.output == f"geoccseg: error: {tmp_path / 'vegas_img1.tif'} does not exist; check its name\n", result.output
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    shutil.copy(scene, tiles / "a.tif")
    result = CliRunner().invoke(cli, ["suggest", str(tiles), "-o", str(tmp_path / "areas.gpkg")])
    assert result.exit_code == 2 and "geoccseg suggest SCENE [SCENE ...] -o AREAS.gpkg, e.g. tiles/*.tif" in result.output, result.output
    assert not (tmp_path / "areas.gpkg").exists()


@pytest.mark.parametrize("field, value", [("weights", (float("nan"), 0.25, 0.25)), ("spacing_m", float("nan")), ("near_m", float("inf"))])
def test_suggest_settings_that_are_not_numbers_are_refused(field, value) -> None:
    """Review G8: NaN weights or spacing passed every check (comparisons with NaN are False) and the
    squares came out in index order as if ranked; an infinite near_m ended in OverflowError."""
    with pytest.raises(GeoccsegError, match="suggest settings must be finite numbers"):
        SuggestParams(**{field: value}).check()


# -- label-free embeddings: the ImageNet encoder's view of each photo ---------------------------
def test_the_imagenet_embedding_of_a_photo_is_its_valid_pixels_own(data_dir) -> None:
    """The frozen ImageNet encoder's mean stride-32 features over the valid pixels, chip by chip
    (DeepCrack-sized photos are 544 px wide: two chips): what is stored under a transparent part
    plays no part, and the embedding depends on the photo alone."""
    from geoccseg.data.photos import read_photo
    from geoccseg.suggest.imagenet import CHIP_PX, DIMS, ImagenetEmbedder

    embedder = ImagenetEmbedder(3)
    image = read_photo(data_dir / "deepcrack" / "train" / "images" / "11111.jpg")
    assert image.shape[2] > CHIP_PX  # embedded in more than one chip
    whole = embedder(image)
    assert whole.shape == (DIMS,) and np.isfinite(whole).all() and np.abs(whole).max() > 0
    np.testing.assert_array_equal(ImagenetEmbedder(3)(image), whole)  # the same weights, no state: the same photo, the same vector
    valid = np.ones(image.shape[1:], bool)
    valid[:, :200] = False
    cut = image.copy()
    cut[:, ~valid] = 0
    np.testing.assert_allclose(embedder(cut, valid), embedder(image, valid), rtol=1e-6, atol=1e-9)
    assert not np.allclose(embedder(cut), embedder(image, valid), rtol=1e-2)  # the black part counts where it is not marked
    other = read_photo(data_dir / "deepcrack" / "train" / "images" / "11112.jpg")
    assert not np.allclose(embedder(other), whole, rtol=1e-2)
    assert not embedder(image, np.zeros(image.shape[1:], bool)).any()


def test_coverage_on_imagenet_embeddings_picks_the_same_photos_whatever_the_model(data_dir) -> None:
    """SuggestParams(embedding="imagenet"): the clusters and typicality come from the photos alone,
    so the crack and the road model suggest the same photos; with the models' own embeddings
    (the default) they do not."""
    from geoccseg.suggest.photos import suggest_photos

    pattern = str(data_dir / "cfd" / "images" / "0[0-2][0-9].jpg")
    imagenet = SuggestParams(embedding="imagenet")
    picks = {model: suggest_photos(pattern, model=model, n=4, options=CPU, params=imagenet, progress=False).suggested
             for model in ("crack", "road")}
    assert len(picks["crack"]) == 4 and picks["crack"] == picks["road"]
    own = {model: suggest_photos(pattern, model=model, n=4, options=CPU, progress=False).suggested for model in ("crack", "road")}
    assert own["crack"] != own["road"]


def test_the_command_clusters_photos_on_imagenet_embeddings_when_asked(data_dir, tmp_path) -> None:
    """`geoccseg suggest --embedding imagenet`: the measured setting of aerial road crops was in the
    Python API only; the command suggests the API's photos with it, and refuses it for scenes."""
    from geoccseg.io.catalog import sample_scene
    from geoccseg.suggest.photos import suggest_photos

    pattern = str(data_dir / "cfd" / "images" / "00[1-9].jpg")
    expected = suggest_photos(pattern, model="road", n=4, options=CPU, params=SuggestParams(embedding="imagenet"), progress=False).suggested
    result = CliRunner().invoke(cli, ["suggest", pattern, "--model", "road", "-n", "4", "--embedding", "imagenet", "-o",
                                      str(tmp_path / "next.csv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "next.csv")
    assert sorted(table.loc[table["status"] == "suggested", "photo"]) == sorted(expected)
    result = CliRunner().invoke(cli, ["suggest", str(sample_scene()), "--embedding", "imagenet", "-o", str(tmp_path / "a.gpkg")])
    assert one_line_error(result) and "--embedding only applies to photos; leave it out for scenes" in result.stderr


def test_imagenet_embeddings_are_refused_for_squares_of_scenes_and_unknown_ones_everywhere() -> None:
    from geoccseg.io.catalog import sample_scene

    with pytest.raises(GeoccsegError, match="embedding 'imagenet' is for photos; squares of scenes are compared by the model's"):
        suggest_areas(sample_scene(), model="road", n=1, size_m=60, options=CPU, params=SuggestParams(embedding="imagenet"), progress=False)
    with pytest.raises(GeoccsegError, match="embedding 'dino' is unknown; use one of model, imagenet"):
        SuggestParams(embedding="dino").check()


LOCAL_WKT = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
"""A drone orthomosaic's "local coordinates": an engineering CRS in metres, with no place on the earth."""


def _halves(folder: Path, crs: str, x0: float = 500000.0, y0: float = 4000000.0) -> list[Path]:
    """The sample cut into its west and east halves, 0.3 m pixels at (x0, y0) in ``crs``."""
    from affine import Affine

    from geoccseg.io.catalog import sample_scene

    folder.mkdir()
    paths = []
    with rasterio.open(sample_scene()) as src:
        pixels, profile = src.read(), src.profile
    for k, cols in enumerate((slice(0, 650), slice(650, 1300))):
        path = folder / f"tile{k}.tif"
        transform = Affine(0.3, 0, x0 + 0.3 * cols.start, 0, -0.3, y0)
        with rasterio.open(path, "w", **(profile | {"crs": crs, "transform": transform, "width": 650})) as dst:
            dst.write(pixels[:, :, cols])
        paths.append(path)
    return paths


def test_tiles_of_one_local_grid_are_spread_as_tiles_of_one_map(tmp_path: Path) -> None:
    """Review-suggest41 F1: tiles of one local grid (no place on the earth) were put 1e9 m apart, so
    squares side by side across a seam never lowered each other's spread. They now pick as the
    same tiles in UTM (the same coordinates at the central meridian, within its 0.9996 scale)."""
    picked = {}
    for name, crs in (("local", LOCAL_WKT), ("utm", "EPSG:32611")):
        result = suggest_areas(_halves(tmp_path / name, crs), tmp_path / f"{name}.gpkg", n=12, size_m=60,
                               options=PredictOptions(device="cpu"), progress=False)
        picked[name] = result.areas
    local, utm = picked["local"], picked["utm"]
    assert len(local) == 12 and set(local["scene"]) == {"tile0.tif", "tile1.tif"}
    assert list(local["scene"]) == list(utm["scene"])
    assert all(a.equals_exact(b, 1e-6) for a, b in zip(local.geometry, utm.geometry))
    assert np.allclose(local["spread"], utm["spread"], atol=1e-3)


def test_a_local_grid_that_meets_georeferenced_inputs_is_one_line(tmp_path: Path) -> None:
    """Review-suggest41 F4: a scene in local coordinates with an AOI in WGS 84, or beside a
    georeferenced scene, ended in pyproj's traceback (the second only after every scene was scored)."""
    local = _halves(tmp_path / "local", LOCAL_WKT)
    utm = _halves(tmp_path / "utm", "EPSG:32611")
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(-115.17, 36.23, -115.16, 36.24)], crs=4326).to_file(aoi)
    for inputs, extra, what in (([local[0]], ["--aoi", str(aoi)], f"scene {local[0]}"), ([utm[0], local[1]], [], f"scene {local[1]}")):
        result = CliRunner().invoke(cli, ["suggest", *map(str, inputs), "--size-m", "60", "-o", str(tmp_path / "a.gpkg"), *extra])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith(f"geoccseg: error: {what} in "), result.output
        assert "cannot be placed in" in result.output and "give the scenes, AOI and labels in one CRS" in result.output
    assert not (tmp_path / "a.gpkg").exists()
