"""The one scene reader gives the same pixels whether a window crosses the scene's edge or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from geoccseg.io.scene import describe_scene, open_scene


def test_a_resampled_window_across_the_edge_reads_the_inner_pixels_unchanged(vegas):
    """Regression (rasterio 1.5 / GDAL 3.12, the Python 3.13 stack): a boundless read with
    ``fill_value=0`` made 0 the VRT's nodata, so the scene's real black pixels were left out of
    averaged pixels near them, and edge blocks of a prediction differed from inner ones."""
    scene = open_scene(vegas / "vegas_img0_rgb.tif", [1, 2, 3])
    image, _ = scene.read()
    assert (image == 0).any()  # black pixels, which a 0 nodata would drop
    scale = 3.7  # 0.3 m pixels read at about 1.1 m, as the road model runs
    inner, valid_inner = scene.read(Window(0, 0, 300 * scale, 300 * scale), out_shape=(300, 300), resampling=Resampling.average)
    edge, valid_edge = scene.read(Window(0, 0, 384 * scale, 384 * scale), out_shape=(384, 384), resampling=Resampling.average)
    assert valid_inner.all() and valid_edge[:300, :300].all() and not valid_edge[-1].any()
    np.testing.assert_array_equal(edge[:, :300, :300], inner)
    assert (edge[:, ~valid_edge] == 0).all()
    # a window reaching 32 cells above the scene and starting inside it on the left
    top, _ = scene.read(Window(100 * scale, -32 * scale, 200 * scale, 200 * scale), out_shape=(200, 200),
                        resampling=Resampling.average)
    plain, _ = scene.read(Window(100 * scale, 0, 200 * scale, 168 * scale), out_shape=(168, 200), resampling=Resampling.average)
    np.testing.assert_array_equal(top[:, 32:], plain)
    assert (top[:, :32] == 0).all()


def test_cells_across_the_edge_are_valid_when_their_centre_is(vegas):
    scene = open_scene(vegas / "vegas_img0_rgb.tif", [1, 2, 3])
    # cells of 4 scene pixels starting 1.5 pixels before the left edge: cell 0 has its centre
    # inside (0.5) and reads the scene's first 2.5 columns; 3 pixels before: centre outside
    for offset, first_valid in ((-1.5, True), (-3.0, False)):
        image, valid = scene.read(Window(offset, 0, 40, 40), out_shape=(10, 10), resampling=Resampling.average)
        assert valid[:, 0].all() == first_valid and valid[:, 1:].all()
        inside, _ = scene.read(Window(0, 0, offset + 4, 40), out_shape=(10, 1), resampling=Resampling.average)
        if first_valid:
            np.testing.assert_array_equal(image[:, :, 0], inside[:, :, 0])


def test_scenes_are_drawn_stretched_whatever_their_bands_and_type(data_dir: Path) -> None:
    """The benchmark plots drew a scene's raw values (a uint16 RGB scene clipped white), and the
    suggest plot read bands 1-3 of a one-band scene and crashed. read_display draws one band grey,
    every scene stretched to 0..1, square on the ground."""
    from geoccseg.io.catalog import sample_scene
    from geoccseg.io.display import read_display

    pan = read_display(data_dir / "spacenet-vegas" / "vegas_pan.tif", max_px=300)
    assert pan.image.ndim == 2 and pan.cmap == "gray" and max(pan.image.shape) <= 300
    low, high = np.percentile(pan.image, [5, 95])
    assert 0.0 <= pan.image.min() and pan.image.max() <= 1.0 and high - low > 0.3  # raw uint16 values: all 1 once clipped
    assert pan.crs.is_geographic and pan.aspect == pytest.approx(1 / np.cos(np.radians(36.17)), rel=0.01)  # Las Vegas
    rgb = read_display(sample_scene(), max_px=500)
    assert rgb.image.ndim == 3 and rgb.image.shape[2] == 3 and rgb.cmap is None and max(rgb.image.shape[:2]) <= 500


@pytest.mark.parametrize("nodata", [float("nan"), -9999.0])
def test_a_scene_with_nodata_is_stretched_over_its_valid_pixels(tmp_path: Path, nodata: float) -> None:
    """read_display took the percentiles over every value: a float scene with NaN nodata came out
    all NaN (a blank figure), and a -9999 collar set the low end, so the image itself was one grey."""
    import rasterio
    from affine import Affine

    from geoccseg.io.display import read_display

    values = np.tile(np.linspace(100.0, 200.0, 60, dtype=np.float32), (60, 1))
    values[:, :15] = nodata  # a quarter of the scene
    path = tmp_path / "collar.tif"
    with rasterio.open(path, "w", driver="GTiff", width=60, height=60, count=1, dtype="float32", nodata=nodata,
                       crs="EPSG:32611", transform=Affine(1, 0, 500_000, 0, -1, 4_000_000)) as dst:
        dst.write(values[None])
    shown = read_display(path).image
    assert np.isfinite(shown).all() and (shown[:, :15] == 0).all()
    inside = shown[:, 15:]
    assert inside.min() == pytest.approx(0.0, abs=0.03) and inside.max() == pytest.approx(1.0, abs=0.03)  # stretched over 100..200


def test_a_pixel_that_holds_the_nodata_value_in_one_band_only_is_a_real_pixel(tmp_path: Path) -> None:
    """An RGB scene with nodata 0 on every band (what ``gdalwarp -dstnodata 0`` writes): a pixel was
    read as nodata when any band held 0, so a deep shadow of (0, 14, 31) or yellow paint of (255,
    221, 0) was dropped from training and left without prediction, while ``geoccseg info`` counted
    it valid. A pixel is nodata where every band is, as GDAL's dataset mask and QGIS read it."""
    import rasterio

    from geoccseg.io.catalog import sample_scene

    with rasterio.open(sample_scene()) as src:
        rgb, profile = src.read([1, 2, 3]), src.profile
    rgb = np.maximum(rgb, 1)  # no stored 0 but those made below
    rgb[:, :, :100] = 0  # a collar of nodata
    rgb[0, 500:600, 500:600] = 0  # a shadow without red
    rgb[2, 700:720, 300:900] = 0  # yellow paint
    path = tmp_path / "nodata0.tif"
    profile.update(count=3, nodata=0, photometric="RGB")
    with rasterio.open(path, "w", **{k: v for k, v in profile.items() if k not in ("alpha",)}) as dst:
        dst.write(rgb)
    scene = open_scene(path)
    assert scene.mask_kind == "nodata"
    image, valid = scene.read()
    assert not valid[:, :100].any() and valid[:, 100:].all()
    np.testing.assert_array_equal(image[:, 500:600, 500:600], rgb[:, 500:600, 500:600])  # the shadow's pixels as stored
    facts = describe_scene(path)
    assert facts["nodata_share"] == pytest.approx(100 / rgb.shape[2], abs=1e-9)  # info counts what training and prediction read
    # bands with nodata values of their own (a VRT stack of bands of other footprints): each band's counts
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{i + 1}"><NoDataValue>{nodata}</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">nodata0.tif</SourceFilename><SourceBand>{source}</SourceBand></SimpleSource></VRTRasterBand>'
        for i, (source, nodata) in enumerate(((1, 0), (2, 0), (3, 0), (3, 7))))
    with rasterio.open(path) as src:
        (tmp_path / "stack.vrt").write_text(f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}"><SRS>{src.crs.to_wkt()}</SRS>'
                                            f'<GeoTransform>{", ".join(map(str, src.transform.to_gdal()))}</GeoTransform>{bands}</VRTDataset>')
    stack = open_scene(tmp_path / "stack.vrt")
    assert not stack.shared_nodata and scene.shared_nodata
    _, valid = stack.read()
    np.testing.assert_array_equal(valid, (rgb[0] != 0) & (rgb[1] != 0) & (rgb[2] != 0) & (rgb[2] != 7))  # each band's nodata counts
    assert not valid[500:600, 500:600].any()  # red 0 in the shadow: band 1 has no data there
    # one nodata value on every band of a stack of grey bands (gdalbuildvrt -separate -vrtnodata 0):
    # the bands may cover other footprints all the same, and `info` counts what training reads
    (tmp_path / "stack0.vrt").write_text((tmp_path / "stack.vrt").read_text().replace("<NoDataValue>7</NoDataValue>", "<NoDataValue>0</NoDataValue>"))
    with rasterio.open(tmp_path / "stack0.vrt") as src:
        assert set(src.nodatavals) == {0} and set(src.colorinterp) <= {ColorInterp.gray, ColorInterp.undefined}
    stack0 = open_scene(tmp_path / "stack0.vrt")
    _, valid = stack0.read()
    assert not stack0.shared_nodata and not valid[500:600, 500:600].any()
    assert describe_scene(tmp_path / "stack0.vrt")["nodata_share"] == pytest.approx(1 - valid.mean(), abs=1e-9)


def _run_limited(code: str, open_files: int) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose soft limit of open files is ``open_files``."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard)))


def test_a_process_at_its_open_file_limit_says_so_in_one_line(tmp_path: Path) -> None:
    """Each thread reading a scene holds its own handle: a training on 100 tiles with 16 threads
    holds 1600 files, past Linux's usual soft limit of 1024. The open failed with rasterio's
    traceback (a thread's first read opened outside the one-line wrapper); it says what to do now."""
    from geoccseg.io.catalog import sample_scene

    for i in range(120):
        (tmp_path / f"tile{i:03d}.tif").symlink_to(sample_scene())
    code = ("import glob\n"
            "from geoccseg.errors import GeoccsegError\n"
            "from geoccseg.io.scene import open_scene\n"
            f"scenes = []\n"
            "try:\n"
            f"    for path in sorted(glob.glob({str(tmp_path / 'tile*.tif')!r})):\n"
            "        scenes.append(open_scene(path))\n"
            "        scenes[-1].read()\n"
            "except GeoccsegError as exc:\n"
            "    print('ERROR', len(scenes), exc)\n")
    done = _run_limited(code, 64)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ERROR ") and 10 < int(done.stdout.split()[1]) < 64, done.stdout
    assert "this process has as many files open as its limit allows (ulimit -n, now 64; each reading thread holds each scene open)" in done.stdout
    # the command raises its own soft limit to what the system allows (here the hard limit, or 65536)
    code = ("import resource, sys\n"
            "from geoccseg.cli import main\n"
            "sys.argv = ['geoccseg', '--version']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "print(soft == (65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)))\n")
    done = _run_limited(code, 64)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), (done.stdout, done.stderr[-2000:])


def test_a_scene_georeferenced_by_control_points_is_told_to_warp(tmp_path: Path) -> None:
    """A scanned map or an unrectified image georeferenced by ground control points has no grid: it
    was told to assign a CRS (it has one, on its GCPs) and then to set corners with gdal_translate
    -a_ullr, which throws the control points away."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    from geoccseg.errors import GeoccsegError

    gcps = [GroundControlPoint(row=r, col=c, x=500_000 + c, y=4_000_000 - r) for r, c in ((0, 0), (0, 99), (99, 0), (99, 99))]
    path = tmp_path / "scanned.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint8", gcps=gcps,
                       crs=CRS.from_epsg(32611)) as dst:
        dst.write(np.full((3, 100, 100), 120, np.uint8))
    with rasterio.open(path) as ds:
        assert len(ds.gcps[0]) == 4 and ds.transform.is_identity
    with pytest.raises(GeoccsegError, match=rf"scene {path} is georeferenced by 4 ground control points, not by a grid; warp it "
                                            r"onto one first, e.g. gdalwarp -tps -t_srs EPSG:32611"):
        open_scene(path)


def test_training_chips_and_prediction_resample_a_scene_alike(vegas) -> None:
    """Training at a coarser pixel size than the scene's read its chips with a bilinear kernel (4 of
    the 11 x 11 pixels under a 1 m cell of a 0.3 m scene), prediction averaged them: the model was
    trained on aliased imagery and run on smooth. Both average now (shrinking), on the same cells."""
    from rasterio.windows import from_bounds

    from geoccseg.data.chips import SceneChips
    from geoccseg.inference.predict import read_model_window
    from geoccseg.io.normalize import NormStats

    scene = open_scene(vegas / "vegas_img0_rgb.tif", [1, 2, 3])
    scale = 1.0 / scene.pixel_size_m  # scene pixels per 1 m model pixel
    identity = NormStats(low=[0.0] * 3, high=[1000.0] * 3)  # apply(): x / 1000 - 0.5, unclipped for 8-bit values
    chips = SceneChips(scene, identity, res=(scene.res[0] * scale, scene.res[1] * scale))
    left, top = scene.transform * (0, 0)
    width, height = 128 * chips.res[0], 128 * chips.res[1]
    chip = chips.read((slice(left + 64 * chips.res[0], left + 64 * chips.res[0] + width),
                       slice(top - 64 * chips.res[1] - height, top - 64 * chips.res[1]), slice(None)), None)
    window = from_bounds(*chip["bounds"], transform=scene.transform)
    model = Window(window.col_off / scale, window.row_off / scale, window.width / scale, window.height / scale)
    image, valid = read_model_window(scene, model, scale)
    assert valid.all() and chip["valid"].all()
    np.testing.assert_allclose((chip["image"].numpy() + 0.5) * 1000, image, atol=1e-3)


def test_nan_of_a_float_scene_without_nodata_is_missing_data_in_chip_checks(vegas, tmp_path: Path) -> None:
    """A float scene marking missing data with NaN but declaring no nodata: training reads NaN
    pixels as invalid, but the cheap looks at a chip (its valid share, the labeled pixels per
    class) read the file's masks only, so an all-NaN chip passed the valid-share check and roads
    over NaN counted towards "this class has labeled pixels"."""
    import rasterio
    import shapely

    from geoccseg.data.chips import SceneChips
    from geoccseg.io.labels import VectorLabels
    from geoccseg.io.normalize import NormStats

    with rasterio.open(vegas / "vegas_img0_rgb.tif") as src:
        profile, pixels = src.profile, src.read([1, 2, 3]).astype(np.float32)
    pixels[:, :, : pixels.shape[2] // 2] = np.nan  # the western half is missing
    profile.update(count=3, dtype="float32", nodata=None, photometric="MINISBLACK")
    path = tmp_path / "float_nan.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    scene = open_scene(path)
    assert scene.nodata is None and scene.mask_kind == "none"
    half = pixels.shape[2] // 2
    expected = np.isfinite(pixels).all(axis=0)
    np.testing.assert_array_equal(scene.read_valid(), expected)
    np.testing.assert_array_equal(scene.read()[1], expected)  # as training reads it
    assert describe_scene(path)["nodata_share"] == pytest.approx(1 - expected.mean(), abs=1e-9)  # and `info` counts it
    left, bottom, right, top = scene.bounds
    west = shapely.LineString([scene.transform * (10, scene.height / 2), scene.transform * (half - 20, scene.height / 2)])
    east = shapely.LineString([scene.transform * (half + 20, scene.height / 2), scene.transform * (scene.width - 10, scene.height / 2)])
    counts = {}
    for name, line in (("west", west), ("east", east)):
        gpd.GeoDataFrame(geometry=[line], crs=scene.crs).to_file(tmp_path / f"{name}.gpkg")
        chips = SceneChips(scene, NormStats(low=[0.0] * 3, high=[255.0] * 3), VectorLabels.open(tmp_path / f"{name}.gpkg", scene.crs))
        counts[name] = chips.count_labels(shapely.box(*scene.bounds), 2)[1]
    assert counts["west"] == 0 and counts["east"] > 1000  # the western road lies on NaN only
    west_chip = (slice(left, left + 64 * scene.res[0]), slice(top - 64 * scene.res[1], top), slice(None))
    assert chips.valid_fraction(west_chip) == 0.0


def test_a_16_bit_rgb_scene_without_colour_tags_is_read_as_a_stack_and_says_how_to_tag_it(tmp_path: Path, caplog) -> None:
    """GDAL tags only 8-bit RGB as colour: a 16-bit RGB GeoTIFF with nodata 0 reads as grey bands,
    so its shadow pixels with 0 in one band were dropped silently. Now the run says so once, with the
    command that tags the bands, and a tagged scene keeps them; ``info`` says which rule it reads."""
    import logging

    import rasterio
    from click.testing import CliRunner

    from geoccseg.cli import cli

    rgb = np.full((3, 64, 64), 900, dtype="uint16")
    rgb[:, :, :8] = 0  # a collar of nodata
    rgb[0, 20:30, 20:30] = 0  # a shadow without red
    path = tmp_path / "rgb16.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16", nodata=0, crs="EPSG:32611",
                       transform=rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(rgb)
    with rasterio.open(path) as src:
        assert ColorInterp.red not in src.colorinterp  # as GDAL writes 16-bit RGB
    with caplog.at_level(logging.WARNING, logger="geoccseg"):
        for _ in range(3):  # training and prediction open a scene many times: one note
            scene = open_scene(path)
    notes = [r.getMessage() for r in caplog.records if "no colour tags" in r.getMessage()]
    assert notes == [f"geoccseg: note: the 3 bands read from {path} hold nodata 0 and no colour tags, so they are read as a stack of "
                     f"grey bands: a pixel is missing where any band holds 0; if they are one colour image, tag them (rio edit-info "
                     f"--colorinterp red,green,blue {path}) and a pixel is missing only where every band holds it"]
    _, valid = scene.read()
    assert not valid[20:30, 20:30].any() and not scene.shared_nodata
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0 and "valid mask:  nodata (a pixel is missing where any band holds the value)" in result.output, result.output
    # an RGBN file read by a 3-band model: one note, whose command tags all four bands (rasterio refuses fewer)
    rgbn = tmp_path / "rgbn16.tif"
    with rasterio.open(rgbn, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16", nodata=0, crs="EPSG:32611",
                       transform=rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(np.concatenate([rgb, rgb[:1]]))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoccseg"):
        open_scene(rgbn, bands=[1, 2, 3])
        open_scene(rgbn)
    (note,) = [r.getMessage() for r in caplog.records if "no colour tags" in r.getMessage()]
    assert f"--colorinterp red,green,blue,undefined {rgbn})" in note
    with rasterio.open(path, "r+") as dst:  # what the note's command does
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoccseg"):
        scene = open_scene(path)
    assert scene.shared_nodata and not [r for r in caplog.records if "no colour tags" in r.getMessage()]
    _, valid = scene.read()
    assert valid[:, 8:].all() and not valid[:, :8].any()  # the shadow is a pixel, the collar is not
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert "valid mask:  nodata (a pixel is missing where every band holds the value)" in result.output, result.output
