"""``geoccseg predict`` on ordinary photos, with the shipped crack model, on real CrackForest (CFD)
and DeepCrack photos: one probability image and one summary row per photo, crack lines with their
measurements, a corrupt JPEG skipped, resume, EXIF orientation, small and very large photos, and
``geoccseg evaluate`` on the probability folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from geoccseg.cli import cli
from geoccseg.data.photos import find_photos, read_photo
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.files import prediction_scores, read_raster
from geoccseg.inference.array import predict_array
from geoccseg.inference.blend import ChipGrid
from geoccseg.inference.photo_outputs import SUMMARY_COLUMNS, write_probability_png
from geoccseg.inference.photos import predict_photo
from geoccseg.inference.predict import PredictOptions
from geoccseg.io.bundle import resolve_model
from geoccseg.io.probability import THRESHOLD_TAG
from geoccseg.io.catalog import sample_scene
from geoccseg.models import Bundle, load_bundle
from geoccseg.models.bundle import state_sha256
from geoccseg.vectorize.measure import COLUMNS

CFD = ("001", "002", "004")
DEEPCRACK = "11111"
BROKEN = "000-broken.jpg"  # sorts first
PIXEL_MM = 0.5


@pytest.fixture(scope="module")
def crack() -> Bundle:
    return load_bundle(resolve_model("crack"))


@pytest.fixture(scope="module")
def photo_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three CFD photos, one DeepCrack photo (links to the shared data) and a truncated copy of a CFD JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    for stem in CFD:
        (folder / f"{stem}.jpg").symlink_to(data_dir / "cfd" / "images" / f"{stem}.jpg")
    (folder / f"{DEEPCRACK}.jpg").symlink_to(data_dir / "deepcrack" / "train" / "images" / f"{DEEPCRACK}.jpg")
    whole = (data_dir / "cfd" / "images" / "003.jpg").read_bytes()
    (folder / BROKEN).write_bytes(whole[: len(whole) // 2])
    return folder


def test_resume_keeps_outputs_of_runs_that_recorded_no_settings(photo_dir: Path, photo_run, tmp_path: Path) -> None:
    """Probability PNGs of older versions record no weights, tile or overlap: they resume as before."""
    out = tmp_path / "out"
    shutil.copytree(photo_run[0], out)
    for png in (out / "probability").iterdir():
        write_probability_png(np.asarray(Image.open(png)), png, overwrite=True)  # without the settings
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--device", "cpu"])
    assert result.exit_code == 1, result.output  # the corrupt photo is still skipped
    assert "0 predicted, 4 resumed, 1 skipped" in result.stdout


def test_probability_pngs_name_the_weights_file_as_geoccseg_models_does(photo_dir: Path, photo_run, crack: Bundle,
                                                                         tmp_path: Path) -> None:
    """A photo's probability PNG gave, as "the SHA-256 of the weights", a digest of the weights in
    memory: not the checksum that bundle.json, ``geoccseg models`` and the scene outputs give.
    PNGs written so (the digest under the weights key, no state key) still resume."""
    on_disk = json.loads((resolve_model("crack") / "bundle.json").read_text())["weights_sha256"]
    pngs = sorted((photo_run[0] / "probability").iterdir())
    assert len(pngs) == 4
    for png in pngs:
        with Image.open(png) as im:
            assert im.info["GEOCCSEG_WEIGHTS_SHA256"] == on_disk and im.info["GEOCCSEG_STATE_SHA256"] == state_sha256(crack.model)
            assert im.info["GEOCCSEG_MODEL"] == "crack"
    out = tmp_path / "out"
    shutil.copytree(photo_run[0], out)
    for png in (out / "probability").iterdir():
        with Image.open(png) as im:
            older = {"GEOCCSEG_WEIGHTS_SHA256": im.info["GEOCCSEG_STATE_SHA256"], "GEOCCSEG_TILE_PX": im.info["GEOCCSEG_TILE_PX"],
                     "GEOCCSEG_OVERLAP_PX": im.info["GEOCCSEG_OVERLAP_PX"]}
        write_probability_png(np.asarray(Image.open(png)), png, overwrite=True, tags=older)
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--device", "cpu"])
    assert result.exit_code == 1, result.output  # the corrupt photo is still skipped
    assert "0 predicted, 4 resumed, 1 skipped" in result.stdout
    png = sorted((out / "probability").iterdir())[0]
    with Image.open(png) as im:
        other = {**{k: im.info[k] for k in ("GEOCCSEG_TILE_PX", "GEOCCSEG_OVERLAP_PX")}, "GEOCCSEG_WEIGHTS_SHA256": "0" * 64}
    write_probability_png(np.asarray(Image.open(png)), png, overwrite=True, tags=other)  # an older PNG of another model
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--device", "cpu"])
    assert result.exit_code == 2 and f"was predicted with weights (digest in memory) {'0' * 64}" in result.stderr, result.output


def test_resume_refuses_outputs_of_other_chips(photo_dir: Path, photo_run, tmp_path: Path) -> None:
    """Resuming used to keep any probability PNG of the right size: outputs of another model or
    other chips were kept, and the summary named the new model for all of them."""
    out = tmp_path / "out"
    shutil.copytree(photo_run[0], out)
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--overlap-px", "48", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "was predicted with overlap (px) 32, this run uses overlap (px) 48" in result.stderr and "--overwrite" in result.stderr


@pytest.fixture(scope="module")
def photo_run(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``geoccseg predict FOLDER --model crack -o OUT --pixel-size-mm 0.5`` once for the module."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "--model", "crack", "-o", str(out), "--pixel-size-mm", str(PIXEL_MM), "--device", "cpu"])
    return out, result


def read_summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def good_photos(photo_dir: Path) -> list[Path]:
    return sorted(p for p in photo_dir.iterdir() if p.name != BROKEN)


def test_folder_gives_one_probability_image_and_one_row_per_photo(photo_dir: Path, photo_run) -> None:
    out, result = photo_run
    rows = read_summary(out)
    assert [row["image"] for row in rows] == sorted(p.name for p in photo_dir.iterdir())
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    as_json = json.loads((out / "summary.json").read_text())["photos"]
    assert [{k: "" if v is None else str(v) for k, v in row.items()} for row in as_json] == rows
    for photo, row in zip(good_photos(photo_dir), rows[1:]):
        with Image.open(photo) as im:
            size = im.size
        with Image.open(out / "probability" / f"{photo.stem}.png") as prob:
            assert (prob.size, prob.mode) == (size, "L")
        assert (int(row["width"]), int(row["height"]), row["status"]) == (*size, "ok")
        assert (out / "overlay" / f"{photo.stem}.jpg").is_file()
        assert float(row["total_length_mm"]) == pytest.approx(float(row["total_length_px"]) * PIXEL_MM, abs=0.01)
    assert sum(int(row["crack_count"]) for row in rows[1:]) > 0  # the model finds cracks in these photos
    assert sorted(p.name for p in (out / "probability").iterdir()) == [f"{p.stem}.png" for p in good_photos(photo_dir)]
    assert not [p for p in out.rglob(".*")]  # no temporary left behind


def test_lines_carry_the_columns_and_lie_on_the_cracks(photo_dir: Path, photo_run) -> None:
    out, _ = photo_run
    lines = gpd.read_file(out / "cracks.gpkg", layer="crack")
    assert list(lines.columns) == [*COLUMNS, "geometry"] and lines.crs is None
    rows = {row["image"]: row for row in read_summary(out)}
    assert len(lines) == sum(int(row["branch_count"] or 0) for row in rows.values()) > 0
    assert np.allclose(lines["length_mm"], lines["length_px"] * PIXEL_MM)
    assert np.allclose(lines["max_width_mm"], lines["max_width_px"] * PIXEL_MM)
    assert lines["orientation_deg"].between(0, 180).all() and lines["probability"].between(0.5, 1).all()
    assert (lines["max_width_px"] >= lines["mean_width_px"]).all() and (lines["mean_width_px"] > 0).all()
    for image, group in lines.groupby("image"):
        assert float(rows[image]["total_length_px"]) == pytest.approx(group["length_px"].sum(), abs=0.01)
        prob = np.asarray(Image.open(out / "probability" / f"{Path(image).stem}.png"))
        xy = shapely.get_coordinates(group.geometry.values)
        col, row = np.round(xy[:, 0] - 0.5).astype(int), np.round(-xy[:, 1] - 0.5).astype(int)
        assert (col >= 0).all() and (col < prob.shape[1]).all() and (row >= 0).all() and (row < prob.shape[0]).all()
        assert np.mean(prob[row, col] >= 128) > 0.9  # x = column + 0.5, y = -(row + 0.5): on the crack pixels


def test_corrupt_jpeg_is_reported_and_skipped_while_the_others_complete(photo_run) -> None:
    out, result = photo_run
    assert result.exit_code == 1, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("geoccseg: skipped ") and BROKEN in errors[0] and "truncated" in errors[0]
    broken = read_summary(out)[0]
    assert broken["image"] == BROKEN and broken["status"].startswith(f"cannot read photo {BROKEN}")
    assert broken["width"] == "" and broken["crack_count"] == ""
    assert not (out / "probability" / f"{Path(BROKEN).stem}.png").exists()
    assert "4 predicted, 0 resumed, 1 skipped" in result.stdout


def test_no_keep_going_stops_at_the_corrupt_photo(photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--no-keep-going", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("geoccseg: error: ") and "--no-keep-going" in result.stderr
    assert [row["image"] for row in read_summary(out)] == [BROKEN]  # the summary of what was done
    assert not list((out / "probability").iterdir())


def test_resume_skips_complete_photos_and_refuses_without_it(photo_dir: Path, photo_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(photo_run[0], out)
    before = read_summary(out)
    (out / "probability" / "002.png").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "probability").iterdir()}
    again = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--device", "cpu"])
    assert again.exit_code == 2 and "already holds outputs" in again.stderr and "--resume" in again.stderr
    result = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--pixel-size-mm", str(PIXEL_MM), "--device", "cpu"])
    assert result.exit_code == 1, result.output  # the corrupt photo is still skipped
    assert "1 predicted, 3 resumed, 1 skipped" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # complete photos untouched
    assert (out / "probability" / "002.png").is_file()
    assert read_summary(out) == before  # measurements read back from the probability images


def test_resume_redraws_the_overlays_of_other_measuring_settings_only(photo_dir: Path, photo_run, tmp_path: Path) -> None:
    """--resume with another --threshold measures the kept probabilities again (lines, summary) but
    kept the overlays drawn at the old threshold: pictures that disagreed with the lines beside them."""
    from geoccseg.inference.photo_outputs import overlay_drawn_with

    out = tmp_path / "out"
    shutil.copytree(photo_run[0], out)
    overlays = sorted((out / "overlay").iterdir())
    assert len(overlays) == 4 and all("threshold=0.5" in overlay_drawn_with(p) for p in overlays)
    kept = {p: p.read_bytes() for p in overlays}
    same = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--pixel-size-mm", str(PIXEL_MM), "--device", "cpu"])
    assert "0 predicted, 4 resumed" in same.stdout, same.output
    assert {p: p.read_bytes() for p in overlays} == kept  # the same settings: untouched
    lower = CliRunner().invoke(cli, ["predict", str(photo_dir), "-o", str(out), "--resume", "--pixel-size-mm", str(PIXEL_MM),
                                     "--device", "cpu", "--threshold", "0.2"])
    assert "0 predicted, 4 resumed" in lower.stdout, lower.output
    assert all("threshold=0.2" in overlay_drawn_with(p) for p in overlays)
    assert any(p.read_bytes() != kept[p] for p in overlays)  # more crack drawn at 0.2


def test_resume_predicts_again_a_photo_replaced_since(data_dir: Path, tmp_path: Path) -> None:
    """A resume knew a photo by its name and pixel size: a site shot again and copied over the old
    photos (same camera, same names) kept the old probabilities and crack measurements as "ok".
    Each probability PNG now records the file it was predicted from (size and modification time)."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for stem in ("001", "002"):
        (photos / f"{stem}.jpg").symlink_to(data_dir / "cfd" / "images" / f"{stem}.jpg")
    command = ["predict", str(photos), "-o", str(out), "--device", "cpu", "--no-overlay"]
    assert CliRunner().invoke(cli, command).exit_code == 0
    kept = (out / "probability" / "001.png").stat().st_mtime_ns
    (photos / "002.jpg").unlink()
    (photos / "002.jpg").symlink_to(data_dir / "cfd" / "images" / "005.jpg")  # another photo of the same size, same name
    result = CliRunner().invoke(cli, [*command, "--resume"])
    assert result.exit_code == 0, result.output
    assert "1 predicted, 1 resumed" in result.stdout
    assert (out / "probability" / "001.png").stat().st_mtime_ns == kept
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "005.jpg").symlink_to(data_dir / "cfd" / "images" / "005.jpg")
    assert CliRunner().invoke(cli, ["predict", str(fresh), "-o", str(tmp_path / "fresh-out"), "--device", "cpu", "--no-overlay"]).exit_code == 0
    replaced = np.asarray(Image.open(out / "probability" / "002.png"))
    np.testing.assert_array_equal(replaced, np.asarray(Image.open(tmp_path / "fresh-out" / "probability" / "005.png")))
    rows = {row["image"]: row for row in read_summary(out)}
    assert rows["002.jpg"]["crack_count"] == read_summary(tmp_path / "fresh-out")[0]["crack_count"]


def test_webp_and_jfif_photos_are_photos_and_heic_ones_are_named(data_dir: Path, tmp_path: Path, caplog) -> None:
    """A folder of a phone's photos (HEIC, the iPhone's default, beside JPEGs edited or shared as
    .jfif or WebP) was predicted for its .jpg files alone, the rest left out without a word. WebP and
    JFIF are read now (Pillow reads them), and HEIC files are counted and named."""
    photos = tmp_path / "phone"
    photos.mkdir()
    source = Image.open(data_dir / "cfd" / "images" / "001.jpg")
    source.save(photos / "a.webp", lossless=True)
    shutil.copy(data_dir / "cfd" / "images" / "002.jpg", photos / "b.jfif")
    (photos / "c.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # not decodable here: only named
    assert [p.name for p in find_photos([photos])] == ["a.webp", "b.jfif"]
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(cli, ["predict", str(photos), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-overlay"])
    assert result.exit_code == 0, result.output
    assert [row["image"] for row in read_summary(tmp_path / "out")] == ["a.webp", "b.jfif"]
    assert any(r.getMessage().startswith(f"geoccseg: warning: 1 photo(s) in {photos} are left out: .heic is not read (e.g. c.heic); "
                                         "convert them to JPEG") for r in caplog.records), [r.getMessage() for r in caplog.records]
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    (jpeg / "001.jpg").symlink_to(data_dir / "cfd" / "images" / "001.jpg")
    assert CliRunner().invoke(cli, ["predict", str(jpeg), "-o", str(tmp_path / "jpeg-out"), "--device", "cpu", "--no-overlay"]).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "probability" / "a.png")),  # a lossless WebP: the same pixels
                                  np.asarray(Image.open(tmp_path / "jpeg-out" / "probability" / "001.png")))


def test_evaluate_works_on_the_probability_folder(data_dir: Path, photo_run, tmp_path: Path) -> None:
    out, _ = photo_run
    truth = tmp_path / "truth"
    truth.mkdir()
    for stem in CFD:
        (truth / f"{stem}.png").symlink_to(data_dir / "cfd" / "masks" / f"{stem}.png")
    (truth / f"{DEEPCRACK}.png").symlink_to(data_dir / "deepcrack" / "train" / "masks" / f"{DEEPCRACK}.png")
    result = CliRunner().invoke(cli, ["evaluate", str(out / "probability"), str(truth), "--json", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["n_images"] == 4
    # scored at the model's threshold (recorded in each PNG; the crack lines are drawn at it)
    threshold = load_bundle(resolve_model("crack")).meta.threshold
    assert (scores["threshold"], scores["threshold_recorded"]) == (threshold, True)
    assert f"threshold {threshold:g} (recorded in PRED)" in result.stdout
    # whatever the PNGs record, not 0.5 (they are tagged 0.37 here: the shipped model's own is 0.5)
    tagged = tmp_path / "tagged"
    tagged.mkdir()
    for stem in (*CFD, DEEPCRACK):
        with Image.open(out / "probability" / f"{stem}.png") as image:
            info = PngImagePlugin.PngInfo()
            for key, value in image.info.items():
                info.add_text(key, value if key != THRESHOLD_TAG else "0.37")
            image.save(tagged / f"{stem}.png", pnginfo=info)
    result = CliRunner().invoke(cli, ["evaluate", str(tagged), str(truth), "--json", str(tmp_path / "tagged.json")])
    scores = json.loads((tmp_path / "tagged.json").read_text())
    assert (scores["threshold"], scores["threshold_recorded"]) == (0.37, True)
    tp = fp = fn = 0
    for stem in (*CFD, DEEPCRACK):
        pred = np.asarray(Image.open(out / "probability" / f"{stem}.png")) / 255 >= 0.37
        mask = np.asarray(Image.open(truth / f"{stem}.png").convert("L")) >= 128
        tp, fp, fn = tp + int((pred & mask).sum()), fp + int((pred & ~mask).sum()), fn + int((~pred & mask).sum())
    assert scores["classes"][0]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # predictions of two models (two thresholds) in one folder: no single threshold to take
    mixed, mixed_truth = tmp_path / "mixed", tmp_path / "mixed_truth"
    mixed.mkdir()
    mixed_truth.mkdir()
    for k, stem in enumerate(CFD[:2]):
        (mixed_truth / f"{stem}.png").symlink_to(truth / f"{stem}.png")
        with Image.open(out / "probability" / f"{stem}.png") as image:
            info = PngImagePlugin.PngInfo()
            for key, value in image.info.items():
                info.add_text(key, value if key != THRESHOLD_TAG else f"{0.3 + 0.2 * k:g}")
            image.save(mixed / f"{stem}.png", pnginfo=info)
    result = CliRunner().invoke(cli, ["evaluate", str(mixed), str(mixed_truth)])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"geoccseg: error: PRED's probability rasters record different model thresholds: 0.3 ({CFD[0]}.png), 0.5 ({CFD[1]}.png); "
        "give --threshold, or score each model's predictions apart"]


def test_a_probability_image_of_zeros_and_ones_is_read_as_probabilities(tmp_path: Path) -> None:
    """A photo without cracks can give a probability PNG holding only 0 and 1 (p <= 1/255), which
    evaluate used to read as a 0/1 mask (every 1 a crack)."""
    prob = np.zeros((8, 8), dtype=np.uint8)
    prob[2, :] = 1
    scores = prediction_scores(read_raster(write_probability_png(prob, tmp_path / "p.png")))[1]
    assert scores.max() == pytest.approx(1 / 255)


def test_small_photo_is_one_chip_of_its_own_size_never_upscaled(data_dir: Path, crack: Bundle, tmp_path: Path) -> None:
    photo = read_photo(data_dir / "cfd" / "images" / "004.jpg")[:, 150:300, 100:300]  # 200 x 150, smaller than a 256 tile
    grid = ChipGrid.create(150, 200, 256, 64, 256)
    assert grid.shape == (1, 1) and grid.chip_shape(0, 0) == (150, 200)
    Image.fromarray(np.moveaxis(photo, 0, -1)).save(tmp_path / "crop.png")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    prob = np.asarray(Image.open(tmp_path / "out" / "probability" / "crop.png"))
    whole = np.round(predict_array(crack, photo, device="cpu")[1] * 255)  # the network sees the photo as it is
    assert prob.shape == (150, 200) and np.abs(prob - whole).max() <= 1


def test_photo_prediction_is_the_engine_of_predict_array(data_dir: Path, crack: Bundle) -> None:
    """Row by row of chips in uint8, as predict_array blends them in float (one forward path)."""
    photo = read_photo(data_dir / "cfd" / "images" / "002.jpg")  # 480 x 320: 2 x 3 chips of 256 px
    rows = predict_photo(crack, photo, tile_px=256, overlap_px=64, device="cpu", batch_size=4)[0]
    floats = predict_array(crack, photo, device="cpu", tile_px=256, overlap_px=64)[1]
    assert np.abs(rows.astype(int) - np.round(floats * 255)).max() <= 1


def test_the_transparent_part_of_a_cut_out_photo_is_nodata(data_dir: Path, crack: Bundle, tmp_path: Path) -> None:
    """A photo cut out in an image editor (alpha 0 outside, black stored there) was read as its
    colours: the network saw a black area whose edge is a dark line across the pavement. Its
    transparent pixels are now nodata: probability 0 in the PNG, NaN in the API, no crack."""
    import geoccseg

    photo = read_photo(data_dir / "cfd" / "images" / "002.jpg")
    rgba = np.concatenate([photo, np.full((1, *photo.shape[1:]), 255, np.uint8)])
    rgba[:, :, :200] = 0  # the left 200 columns: transparent black
    Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA").save(tmp_path / "cut.png")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "cut.png"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    prob = np.asarray(Image.open(tmp_path / "out" / "probability" / "cut.png"))
    opaque = predict_photo(crack, rgba[:3], tile_px=256, overlap_px=64, device="cpu", batch_size=4)[0]
    assert (prob[:, :200] == 0).all() and prob[:, 200:].max() > 128
    # the black edge read as a crack: a line down the whole photo (731 pixels over 0.5 in these ten
    # columns against 38 where the real crack crosses them with the cut-out left out)
    assert (opaque[:, 195:205] > 128).sum() > 5 * max(1, (prob[:, 195:205] > 128).sum())
    lines = gpd.read_file(tmp_path / "out" / "cracks.gpkg")
    assert len(lines) and all(shapely.get_coordinates(g)[:, 0].min() >= 199 for g in lines.geometry)
    api = geoccseg.predict(tmp_path / "cut.png", model=crack.path, device="cpu").values
    assert np.isnan(api[:, :, :200]).all() and np.isfinite(api[:, :, 200:]).all()


def test_a_wholly_transparent_photo_is_skipped_with_its_reason(data_dir: Path, tmp_path: Path) -> None:
    """A PNG whose alpha is 0 everywhere (some exporters write the picture with a zero alpha) was
    predicted as "ok" with no crack: nothing of it was looked at. It is skipped now, saying why."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "001.jpg").symlink_to(data_dir / "cfd" / "images" / "001.jpg")
    rgba = np.concatenate([read_photo(data_dir / "cfd" / "images" / "002.jpg"), np.zeros((1, 320, 480), np.uint8)])
    Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA").save(photos / "002.png")
    result = CliRunner().invoke(cli, ["predict", str(photos), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-overlay"])
    assert result.exit_code == 1, result.output
    rows = {row["image"]: row["status"] for row in read_summary(tmp_path / "out")}
    assert rows == {"001.jpg": "ok", "002.png": "photo 002.png is wholly transparent (alpha 0 everywhere): nothing to predict"}
    assert not (tmp_path / "out" / "probability" / "002.png").exists() and "1 predicted, 0 resumed, 1 skipped" in result.stdout


def test_a_16_bit_grey_photo_reads_as_its_8_bit_copy(data_dir: Path, tmp_path: Path) -> None:
    """Pillow's conversion clipped 16-bit values to 255: the photo read as white, no crack found.
    Data of fewer bits (a 12-bit camera's) read as its high byte was near black."""
    grey = np.asarray(Image.open(data_dir / "cfd" / "images" / "001.jpg").convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I;16")
    for bands in (1, 3):
        assert np.array_equal(read_photo(tmp_path / "wide.png", bands=bands), np.repeat(grey[None], bands, axis=0))
    # 12-bit camera data in a 16-bit file (0..4095): its high byte read 0..15, a black photo
    Image.fromarray(grey.astype(np.uint16) * 16 + 7).save(tmp_path / "twelve.png")
    assert np.array_equal(read_photo(tmp_path / "twelve.png"), grey[None])
    Image.fromarray(grey.astype(np.uint16)).save(tmp_path / "eight.png")  # 8-bit values saved as uint16
    assert np.array_equal(read_photo(tmp_path / "eight.png"), grey[None])
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(GeoccsegError, match="floating-point pixels; save it as an 8- or 16-bit image"):
        read_photo(tmp_path / "float.tif")


def test_photos_whose_names_differ_in_case_only_are_refused(data_dir: Path, tmp_path: Path) -> None:
    """On macOS and Windows Crack.jpg and crack.png write the same output files."""
    shutil.copy(data_dir / "cfd" / "images" / "001.jpg", tmp_path / "Crack.jpg")
    Image.open(data_dir / "cfd" / "images" / "002.jpg").save(tmp_path / "crack.png")
    assert len(find_photos([tmp_path])) == 2  # distinct files here (suggest ranks both)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), "-o", str(tmp_path / "out")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "share the name crack but for case or accents" in lines[0]
    assert not (tmp_path / "out").exists()


def test_exif_orientation_is_honoured(data_dir: Path, crack: Bundle, tmp_path: Path) -> None:
    stored = Image.open(data_dir / "cfd" / "images" / "004.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    stored.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "turned.jpg"), "-o", str(tmp_path / "out"), "--no-overlay", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    prob = np.asarray(Image.open(tmp_path / "out" / "probability" / "turned.png"))
    upright = np.asarray(Image.open(tmp_path / "turned.jpg").transpose(Image.Transpose.ROTATE_270))
    defaults = PredictOptions()  # the chips `geoccseg predict` uses without options
    tile_px = defaults.tile_for(crack.meta)
    expected = predict_photo(crack, np.moveaxis(upright, -1, 0), tile_px=tile_px, overlap_px=defaults.overlap_px, device="cpu",
                             batch_size=defaults.batch_for(tile_px))[0]
    assert prob.shape == (480, 320) and np.array_equal(prob, expected)


def test_predict_then_evaluate_scores_an_exif_turned_photo_against_its_mask(data_dir: Path, tmp_path: Path) -> None:
    """predict turns a phone photo by its EXIF orientation (as viewers show it), masks follow the
    stored pixels (as training reads them): evaluate scored the prediction of a photo turned 180
    degrees against its mask upside down (F1 near 0, without a word), and stopped on one turned 90
    degrees with "predict on the truth's grid". The probability PNG records the turn; evaluate
    turns it back, so each scores as the photo predicted as stored."""
    from geoccseg.evaluate import evaluate

    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    stored = Image.open(data_dir / "cfd" / "images" / "004.jpg")
    for orientation in (1, 3, 6):
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(tmp_path / "photos" / f"o{orientation}.jpg", exif=exif, quality=95)
        shutil.copy(data_dir / "cfd" / "masks" / "004.png", tmp_path / "masks" / f"o{orientation}.png")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--no-overlay", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for orientation in (1, 3, 6):  # one pair at a time: each photo's own F1
        (tmp_path / f"p{orientation}").mkdir()
        shutil.copy(tmp_path / "out" / "probability" / f"o{orientation}.png", tmp_path / f"p{orientation}")
    f1 = {o: evaluate(tmp_path / f"p{o}" / f"o{o}.png", tmp_path / "masks" / f"o{o}.png").classes[0].f1 for o in (1, 3, 6)}
    assert f1[1] > 0.3 and f1[3] == pytest.approx(f1[1], abs=0.05) and f1[6] == pytest.approx(f1[1], abs=0.05), f1
    # a mask drawn on the photo as shown (turned 90 degrees: only the size can tell) is scored as it is
    Image.open(tmp_path / "masks" / "o6.png").transpose(Image.Transpose.ROTATE_270).save(tmp_path / "shown.png")
    assert evaluate(tmp_path / "p6" / "o6.png", tmp_path / "shown.png").classes[0].f1 == pytest.approx(f1[6], abs=1e-6)
    # a PNG of a run from before the turn was recorded (its pixels turned, no record of it) is predicted
    # again on --resume, not kept to be scored upside down
    from PIL import PngImagePlugin

    from geoccseg.io.probability import TURN_TAG

    png = tmp_path / "out" / "probability" / "o3.png"
    with Image.open(png) as im:
        older, texts = im.copy(), {k: v for k, v in im.info.items() if isinstance(v, str) and k != TURN_TAG}
    assert im.info[TURN_TAG] == "3"
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    older.save(png, pnginfo=info)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--no-overlay", "--device", "cpu", "--resume"])
    assert result.exit_code == 0 and "photos: 3 (1 predicted, 2 resumed, 0 skipped)" in result.output, result.output
    assert Image.open(png).info[TURN_TAG] == "3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/cracks.gpkg"], "photos write a folder"),
        (["-o", "{tmp}/out", "--prob-out", "{tmp}/p.tif"], "--prob-out only applies to georeferenced scenes"),
        (["-o", "{tmp}/out", "--confidence-out", "{tmp}/c.tif"], "leave it out; photos get confidence/<stem>.png with --confidence"),
        (["-o", "{tmp}/out", "--resume", "--overwrite"], "either --resume"),
        (["-o", "{tmp}/out", "--pixel-size-mm", "0"], "--pixel-size-mm 0.0 is invalid"),
        (["-o", "{tmp}/missing/out"], "does not exist"),
    ],
)
def test_bad_photo_runs_are_one_line_and_leave_nothing(data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    photo = data_dir / "cfd" / "images" / "001.jpg"
    result = CliRunner().invoke(cli, ["predict", str(photo), *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoccseg: error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_tiff_photo_is_told_from_a_scene_without_library_warnings(data_dir: Path, tmp_path: Path) -> None:
    """A crack photo saved as TIFF (no CRS) is a photo; telling it from a scene opened it with
    rasterio's own opener, whose NotGeoreferencedWarning reached a notebook (the CLI filters it)."""
    import warnings

    photo = tmp_path / "001.tif"
    Image.open(data_dir / "cfd" / "images" / "001.jpg").save(photo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert find_photos([photo]) == [photo]
    assert [str(w.message) for w in caught] == []


def test_a_scene_that_lost_its_crs_is_told_to_get_it_back(tmp_path: Path) -> None:
    """``predict scene.tif -o roads.gpkg`` on a GeoTIFF whose CRS was lost read it as a photo, and
    said only that photos write a folder; the fix (assigning the CRS) was nowhere. The same for
    ``suggest`` (it said to name the output .csv) and for scene options (to leave them out)."""
    import rasterio

    with rasterio.open(sample_scene()) as src:
        profile = src.profile | {"crs": None}
        with rasterio.open(tmp_path / "scene.tif", "w", **profile) as dst:
            dst.write(src.read())
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "scene.tif"), "-o", str(tmp_path / "roads.gpkg")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"geoccseg: error: {tmp_path / 'scene.tif'} has no CRS, so it is read as a photo, and photos write a folder, not one "
        f".gpkg file: give a folder name such as {tmp_path / 'roads'}, or, if it is a scene, assign its CRS first "
        f"(for UTM zone 11N: `rio edit-info --crs EPSG:32611 {tmp_path / 'scene.tif'}`)")
    hint = f"if it is a scene, assign its CRS first (for UTM zone 11N: `rio edit-info --crs EPSG:32611 {tmp_path / 'scene.tif'}`)"
    for command, told in (
        (["suggest", "-o", str(tmp_path / "areas.gpkg")],
         f"{tmp_path / 'scene.tif'} has no CRS, so it is read as a photo, and photos get a CSV ranking, not areas in areas.gpkg: "
         f"name the output .csv (e.g. {tmp_path / 'areas.csv'}), or, {hint}"),
        (["suggest", "-o", str(tmp_path / "areas.csv"), "--size-m", "100"],
         f"--size-m only applies to georeferenced scenes; leave it out for photos; {tmp_path / 'scene.tif'} has no CRS and is "
         f"read as a photo: {hint}"),
        (["predict", "-o", str(tmp_path / "out"), "--prob-out", str(tmp_path / "p.tif")],
         f"--prob-out only applies to georeferenced scenes; leave it out; {tmp_path / 'scene.tif'} has no CRS and is read as a "
         f"photo: {hint}"),
    ):
        result = CliRunner().invoke(cli, [command[0], str(tmp_path / "scene.tif"), *command[1:]])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [f"geoccseg: error: {told}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_several_scenes_are_refused_not_predicted_as_photos(data_dir: Path, tmp_path: Path) -> None:
    """One scene is predicted as a scene; several GeoTIFFs with a CRS used to fall through to the
    photo path and run the crack model on them in pixel coordinates."""
    for name in ("a.tif", "b.tif"):
        shutil.copy(sample_scene(), tmp_path / name)
    scene = "a.tif has a CRS: it is a georeferenced scene, not a photo"
    for command, told in ((["predict", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "out")], scene),
                          (["predict", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "out"), "--prob-out",
                            str(tmp_path / "p.tif")], scene),
                          (["predict", str(tmp_path / "*.tif"), "-o", str(tmp_path / "out")], scene),
                          (["suggest", str(tmp_path / "a.tif"), str(data_dir / "cfd" / "images" / "001.jpg"), "-o", str(tmp_path / "list.csv")],
                           f"001.jpg is not a georeferenced scene (a GeoTIFF or VRT with a CRS) while {tmp_path / 'a.tif'} is")):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and told in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


CHILD = """
import json, resource, sys
import numpy as np
from geoccseg.cli import cli
from geoccseg.inference.photos import predict_photo
from geoccseg.io.bundle import resolve_model
from geoccseg.io.probability import THRESHOLD_TAG
from geoccseg.models import load_bundle
bundle = load_bundle(resolve_model("crack"))
predict_photo(bundle, np.zeros((3, 640, 640), np.uint8), tile_px=256, overlap_px=64, device="cpu", batch_size=4)  # warm: 9 chips of 256 px
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    cli.main(sys.argv[1:], prog_name="geoccseg", standalone_mode=False)
finally:
    print(json.dumps({"before_kib": before, "after_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_a_3000x4000_photo_is_predicted_with_bounded_memory(data_dir: Path, tmp_path: Path) -> None:
    """Peak memory of a real process grows far less than the whole-photo float arrays would need."""
    tile = np.asarray(Image.open(data_dir / "cfd" / "images" / "004.jpg"))  # 480 x 320 with cracks
    height, width = 4000, 3000
    Image.fromarray(np.tile(tile, (13, 7, 1))[:height, :width]).save(tmp_path / "camera.jpg", quality=95)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["predict", str(tmp_path / "camera.jpg"), "--model", "crack", "-o", str(tmp_path / "out"), "--device", "cpu"]
    child = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=500)
    assert child.returncode == 0, child.stderr
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    grown = (rss["after_kib"] - rss["before_kib"]) * 1024
    whole_image_floats = 4 * height * width * (3 + 2)  # float32 photo (3 bands) + background/crack probabilities
    assert grown < whole_image_floats / 2, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    row = read_summary(tmp_path / "out")[0]
    assert (int(row["width"]), int(row["height"]), row["status"]) == (width, height, "ok") and int(row["crack_count"]) > 0
    assert Image.open(tmp_path / "out" / "probability" / "camera.png").size == (width, height)


def test_the_models_own_threshold_is_used_unless_one_is_given(data_dir: Path, tmp_path: Path) -> None:
    """A bundle that records its decision threshold (chosen on its select images) predicts with it;
    --threshold still overrides it; a threshold outside (0, 1) makes the bundle damaged."""
    model = tmp_path / "crack"
    shutil.copytree(resolve_model("crack"), model)
    meta = json.loads((model / "bundle.json").read_text())
    meta["threshold"] = 0.05
    (model / "bundle.json").write_text(json.dumps(meta))
    photo = data_dir / "cfd" / "images" / "004.jpg"

    def run(out: Path, *extra: str) -> dict:
        result = CliRunner().invoke(cli, ["predict", str(photo), "--model", str(model), "-o", str(out), "--no-overlay", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out / "summary.json").read_text())

    own, given = run(tmp_path / "own"), run(tmp_path / "given", "--threshold", "0.5")
    assert own["run"]["threshold"] == 0.05 and given["run"]["threshold"] == 0.5
    # through the API, settings without a threshold keep the model's (they drew at 0.5)
    from geoccseg.inference.photos import predict_photos
    from geoccseg.vectorize.measure import CrackParams

    predict_photos([photo], tmp_path / "api", model=model, params=CrackParams(min_length_px=10), overlay=False, progress=False)
    assert json.loads((tmp_path / "api" / "summary.json").read_text())["run"]["threshold"] == 0.05
    assert own["photos"][0]["cracked_area_share"] > given["photos"][0]["cracked_area_share"]
    meta["threshold"] = 1.5
    (model / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(GeoccsegError, match="damaged"):
        load_bundle(model)


def test_a_recursive_pattern_does_not_take_the_runs_own_overlays(data_dir: Path, tmp_path: Path) -> None:
    """'site/**/*.jpg' -o site/out matched site/out/overlay/*.jpg on the next run: refused as a name collision."""
    site = tmp_path / "site"
    (site / "day1").mkdir(parents=True)
    shutil.copy(data_dir / "cfd" / "images" / "002.jpg", site / "day1" / "002.jpg")
    args = ["predict", str(site / "**" / "*.jpg"), "-o", str(site / "out"), "--overlay", "--device", "cpu"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert (site / "out" / "overlay" / "002.jpg").is_file()
    again = CliRunner().invoke(cli, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "photos: 1 (0 predicted, 1 resumed, 0 skipped)" in again.stdout


def test_a_photo_run_clears_temporaries_of_dead_runs_once_and_keeps_live_ones(data_dir: Path, tmp_path: Path) -> None:
    """Stale temporaries are swept once per output folder (each file used to list its folder again)."""
    from geoccseg.io.atomic import host_identity

    out = tmp_path / "out"
    (out / "probability").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = out / "probability" / f".001.{host_identity()}-{dead}.abc123.part.png"
        running = out / "probability" / f".002.{host_identity()}-{live.pid}.abc123.part.png"
        stale.write_bytes(b"half")
        running.write_bytes(b"being written")
        result = CliRunner().invoke(cli, ["predict", str(data_dir / "cfd" / "images" / "004.jpg"), "-o", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert not stale.exists() and running.exists()
    finally:
        live.kill()
        live.wait()
