"""Outputs never destroy what they should not, on real files through the real commands.

Every writer refuses a folder (or a device, a pipe) where a file is expected and never removes it;
an output that is also an input is refused; an unwritable location is a one-line error before any
work; a file that appears at the destination while a run writes is kept unless ``--overwrite``;
``vectorize`` reads only probability rasters; the probability type asked for is the type written.
Predictions use the shipped road model on a 300 px crop of the SpaceNet Las Vegas chip (fast).
"""

from __future__ import annotations

import json
import os
import shutil
from shlex import quote as shlex_quote
import subprocess
import tempfile
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window
from shapely.geometry import LineString

from geoccseg.cli import cli
from geoccseg.demo import render_preview, run_demo
from geoccseg.errors import GeoccsegError
from geoccseg.inference.predict import PredictOptions, predict_scene
from geoccseg.io.atomic import atomic_path, scratch_dir
from geoccseg.io.bundle import resolve_model
from geoccseg.io.catalog import sample_scene
from geoccseg.io.vector_write import write_vectors

UTM = "EPSG:32611"


def one_line_error(result) -> str:
    """The CLI's one-line message of a refused run (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoccseg: error: "), result.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` with its bytes (None for folders and other non-files)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(folder.rglob("*"))}


def victim(folder: Path) -> Path:
    """A folder holding one precious file."""
    folder.mkdir()
    (folder / "keep.txt").write_text("precious\n")
    return folder


def assert_untouched(folder: Path) -> None:
    assert folder.is_dir() and (folder / "keep.txt").read_text() == "precious\n"


def lines(n: int = 2) -> gpd.GeoDataFrame:
    geoms = [LineString([(500_000 + 10 * i, 3_999_900), (500_000 + 10 * i, 3_999_950)]) for i in range(n)]
    data = {"class": ["road"] * n, "length_m": [50.0] * n, "width_m": [5.0] * n, "probability": [0.9] * n}
    return gpd.GeoDataFrame(data, geometry=geoms, crs=UTM)


@pytest.fixture(scope="module")
def crop(vegas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 x 300 pixels of the Las Vegas chip (RGB + alpha, EPSG:4326, ~0.3 m)."""
    path = tmp_path_factory.mktemp("scene") / "crop.tif"
    with rasterio.open(vegas / "vegas_img0_rgb.tif") as src:
        window = Window(0, 0, 300, 300)
        profile = src.profile | {"width": 300, "height": 300, "transform": src.window_transform(window)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


@pytest.fixture(scope="module")
def predicted(crop: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``geoccseg predict`` on the crop: (probability COG, lines)."""
    folder = tmp_path_factory.mktemp("predicted")
    prob, out = folder / "prob.tif", folder / "roads.gpkg"
    result = CliRunner().invoke(cli, ["predict", str(crop), "-o", str(out), "--prob-out", str(prob), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return prob, out


# -- a folder where a file is expected --------------------------------------------------------
@pytest.mark.parametrize("target", ["victim", ".", "victim/", "new/"])
def test_evaluate_json_naming_a_folder_is_refused_and_the_folder_kept(target: str, vegas: Path, tmp_path: Path, monkeypatch) -> None:
    """Issue 11: ``--json FOLDER`` used to remove the folder and write a file in its place;
    ``--json .`` emptied the current folder."""
    work = victim(tmp_path / "work")
    monkeypatch.chdir(work)
    if target.startswith("victim"):
        victim(work / "victim")
    before = tree(tmp_path)
    truth = vegas / "vegas_img0_roads.geojson"
    result = CliRunner().invoke(cli, ["evaluate", str(truth), str(truth), "--json", target])
    message = one_line_error(result)
    assert "is a folder" in message or "names a folder" in message
    assert "scores.json" in message  # says what to give instead
    assert tree(tmp_path) == before
    assert_untouched(work)


def test_evaluate_json_onto_a_pipe_is_refused(vegas: Path, tmp_path: Path) -> None:
    """A device or a pipe is not a file to replace (as root, ``--json /dev/null`` replaced the device)."""
    pipe = tmp_path / "scores.json"
    os.mkfifo(pipe)
    truth = vegas / "vegas_img0_roads.geojson"
    message = one_line_error(CliRunner().invoke(cli, ["evaluate", str(truth), str(truth), "--json", str(pipe)]))
    assert "not a regular file" in message
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def _atomic(dest: Path) -> None:
    with atomic_path(dest, overwrite=True) as tmp:
        tmp.write_text("new")


def _gpkg(dest: Path) -> None:
    write_vectors({"road": lines()}, dest, overwrite=True)


def _shapefile_sidecar(dest: Path) -> None:
    write_vectors({"road": lines()}, dest.with_suffix(".shp"), overwrite=True)


def _probability(dest: Path, crop: Path) -> None:
    predict_scene(crop, resolve_model("road"), dest, PredictOptions(device="cpu"), overwrite=True, progress=False)


def _preview(dest: Path, crop: Path, predicted: tuple[Path, Path]) -> None:
    render_preview(crop, predicted[0], predicted[1], dest)


@pytest.mark.parametrize(("writer", "name"), [
    (_atomic, "scores.json"), (_gpkg, "roads.gpkg"), (_shapefile_sidecar, "roads.dbf"),
    (_probability, "prob.tif"), (_preview, "preview.png"),
])
def test_no_writer_replaces_a_folder_even_with_overwrite(writer, name: str, crop: Path, predicted, tmp_path: Path) -> None:
    folder = victim(tmp_path / name)
    before = tree(tmp_path)
    args = {_probability: (crop,), _preview: (crop, predicted)}.get(writer, ())
    with pytest.raises(GeoccsegError, match="is a folder"):
        writer(folder, *args)
    assert tree(tmp_path) == before
    assert_untouched(folder)


def test_demo_refuses_a_folder_in_place_of_its_outputs_before_predicting(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    folder = victim(out / "roads.gpkg")
    before = tree(tmp_path)
    with pytest.raises(GeoccsegError, match="is a folder"):
        run_demo(out, progress=False)
    assert tree(tmp_path) == before
    assert_untouched(folder)


def test_demo_refuses_a_file_as_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.write_text("precious\n")
    with pytest.raises(GeoccsegError, match="not a folder"):
        run_demo(out, progress=False)
    assert out.read_text() == "precious\n"


# -- impossible locations: one line, before any work ------------------------------------------
@pytest.mark.parametrize("case", ["predict -o /proc", "predict --prob-out /proc", "vectorize -o /proc", "evaluate --json /proc", "parent is a file"])
def test_unwritable_output_is_a_one_line_error_before_any_work(case: str, crop: Path, predicted, vegas: Path, tmp_path: Path) -> None:
    """Issue 11: ``predict SCENE -o /proc/x.gpkg`` gave a FileNotFoundError from mkdtemp."""
    (tmp_path / "afile.txt").write_text("x")
    out, prob = str(tmp_path / "roads.gpkg"), str(tmp_path / "prob.tif")
    truth = str(vegas / "vegas_img0_roads.geojson")
    args = {
        "predict -o /proc": ["predict", str(crop), "-o", "/proc/geoccseg-test.gpkg", "--device", "cpu"],
        "predict --prob-out /proc": ["predict", str(crop), "-o", out, "--prob-out", "/proc/geoccseg-test.tif", "--device", "cpu"],
        "vectorize -o /proc": ["vectorize", str(predicted[0]), "-o", "/proc/geoccseg-test.gpkg"],
        "evaluate --json /proc": ["evaluate", truth, truth, "--json", "/proc/geoccseg-test.json"],
        "parent is a file": ["predict", str(crop), "-o", str(tmp_path / "afile.txt" / "roads.gpkg"), "--prob-out", prob, "--device", "cpu"],
    }[case]
    before = tree(tmp_path)
    message = one_line_error(CliRunner().invoke(cli, args))
    assert "cannot write" in message
    assert ("is a file, not a folder" in message) == (case == "parent is a file")
    assert tree(tmp_path) == before
    assert not Path("/proc/geoccseg-test.gpkg").exists()


# -- an output that is an input ----------------------------------------------------------------
@pytest.mark.parametrize("case", ["prob-out is the scene", "prob-out links to the scene", "json is the truth", "vectorize onto its input"])
def test_an_output_that_is_an_input_is_refused(case: str, crop: Path, predicted, vegas: Path, tmp_path: Path) -> None:
    """Issue 11: ``--prob-out SCENE --overwrite`` replaced the input scene."""
    scene = shutil.copy(crop, tmp_path / "scene.tif")
    truth = shutil.copy(vegas / "vegas_img0_roads.geojson", tmp_path / "truth.geojson")
    prob = shutil.copy(predicted[0], tmp_path / "prob.fgb")  # a GeoTIFF under a vector name
    (tmp_path / "link.tif").symlink_to(scene)
    out = str(tmp_path / "roads.gpkg")
    args = {
        "prob-out is the scene": ["predict", str(scene), "-o", out, "--prob-out", str(scene), "--overwrite", "--device", "cpu"],
        "prob-out links to the scene": ["predict", str(scene), "-o", out, "--prob-out", str(tmp_path / "link.tif"), "--overwrite", "--device", "cpu"],
        "json is the truth": ["evaluate", str(truth), str(truth), "--json", str(truth)],
        "vectorize onto its input": ["vectorize", str(prob), "-o", str(prob), "--overwrite"],
    }[case]
    before = tree(tmp_path)
    message = one_line_error(CliRunner().invoke(cli, args))
    assert "is also an input" in message
    assert tree(tmp_path) == before
    assert (tmp_path / "link.tif").is_symlink()


@pytest.mark.parametrize("name", ["prob.png", "prob.gpkg", "prob"])
def test_prob_out_must_be_a_geotiff(name: str, crop: Path, tmp_path: Path) -> None:
    before = tree(tmp_path)
    args = ["predict", str(crop), "-o", str(tmp_path / "roads.gpkg"), "--prob-out", str(tmp_path / name), "--device", "cpu"]
    message = one_line_error(CliRunner().invoke(cli, args))
    assert ".tif" in message
    assert tree(tmp_path) == before


# -- vectorize reads probabilities only -------------------------------------------------------
def _float_copy(src: Path, dest: Path, scale: float) -> Path:
    with rasterio.open(src) as ds:
        profile = ds.profile | {"dtype": "float32", "count": 1}
        data = ds.read(1).astype(np.float32) * scale
    with rasterio.open(dest, "w", **profile) as out:
        out.write(data, 1)
    return dest


@pytest.mark.parametrize(("case", "found"), [
    ("rgb scene", "red, green, blue, alpha"),
    ("float out of range", "[0, 1]"),
    ("uint16 image", "uint16"),
])
def test_vectorize_refuses_a_raster_that_is_not_probabilities(case: str, found: str, vegas: Path, tmp_path: Path) -> None:
    """Issue 11: ``vectorize`` took an RGB scene for four probability bands."""
    prob = {
        "rgb scene": vegas / "vegas_img0_rgb.tif",
        "float out of range": _float_copy(vegas / "vegas_pan.tif", tmp_path / "pan.tif", 1.0),
        "uint16 image": vegas / "vegas_pan.tif",
    }[case]
    out = tmp_path / "roads.gpkg"
    message = one_line_error(CliRunner().invoke(cli, ["vectorize", str(prob), "-o", str(out)]))
    assert found in message and "not probabilities" in message and "expected" in message
    assert not out.exists()


def test_vectorize_reads_what_predict_writes_and_single_band_probabilities(vegas: Path, tmp_path: Path) -> None:
    # the sample scene, where the road model draws lines (the crop of the other tests has none)
    prob, lines = tmp_path / "prob.tif", tmp_path / "roads.gpkg"
    result = CliRunner().invoke(cli, ["predict", str(sample_scene()), "-o", str(lines), "--prob-out", str(prob), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with rasterio.open(prob) as ds:
        assert ds.tags().get("GEOCCSEG_PROBABILITY") == "uint8"  # the mark vectorize trusts
    result = CliRunner().invoke(cli, ["vectorize", str(prob), "-o", str(tmp_path / "a.gpkg")])
    assert result.exit_code == 0, result.output
    # the lines predict drew from the same probabilities, at the threshold the COG records
    again, first = gpd.read_file(tmp_path / "a.gpkg", layer="road"), gpd.read_file(lines, layer="road")
    assert len(again) == len(first) > 0 and again["length_m"].sum() == pytest.approx(first["length_m"].sum(), rel=1e-6)
    scaled = _float_copy(vegas / "vegas_pan_roadmask.tif", tmp_path / "mask.tif", 1 / 255)  # foreign float 0-1
    result = CliRunner().invoke(cli, ["vectorize", str(scaled), "-o", str(tmp_path / "b.gpkg")])
    assert result.exit_code == 0, result.output
    assert len(gpd.read_file(tmp_path / "b.gpkg")) > 0


# -- the probability type ---------------------------------------------------------------------
@pytest.mark.parametrize("asked", ["float32", "float16"])
def test_prob_dtype_is_the_type_written(asked: str, crop: Path, tmp_path: Path) -> None:
    """Issue 11: ``--prob-dtype float16`` wrote a raster that every reader sees as Float32.
    This GDAL has no GeoTIFF Float16: the option is ``float32`` and ``float16`` an alias of it."""
    prob = tmp_path / "prob.tif"
    args = ["predict", str(crop), "-o", str(tmp_path / "roads.gpkg"), "--prob-out", str(prob), "--prob-dtype", asked, "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert ("float16 is written as float32" in result.stderr) == (asked == "float16")
    with rasterio.open(prob) as ds:
        assert ds.dtypes == ("float32",)
        assert "NBITS" not in ds.tags(1, ns="IMAGE_STRUCTURE")  # 32 bits stored, not half floats read back as float32
        assert ds.tags()["GEOCCSEG_PROBABILITY"] == "float32"
        p = ds.read(1)
    assert np.nanmin(p) >= 0 and np.nanmax(p) <= 1


# -- a file that appears while a run writes ---------------------------------------------------
def test_a_file_that_appears_while_writing_is_kept_without_overwrite(tmp_path: Path) -> None:
    """Issue 11: of two runs on one output, the second replaced the first's file at the end."""
    dest = tmp_path / "scores.json"
    with pytest.raises(GeoccsegError, match="appeared"):
        with atomic_path(dest) as tmp:
            tmp.write_text("mine")
            dest.write_text("theirs")  # another run finishes first
    assert dest.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]  # no temporary left
    with atomic_path(dest, overwrite=True) as tmp:
        tmp.write_text("mine")
    assert dest.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_set_of_outputs_moves_into_place_whole_or_not_at_all(tmp_path: Path) -> None:
    """The demo moved its five outputs into place one by one: a failure at the third (a folder
    that appeared there) left new roads.gpkg and road_probability.tif beside an old preview."""
    from geoccseg.io.atomic import move_all_into_place

    out, work = tmp_path / "out", tmp_path / "out" / ".work"
    (work / "kept").mkdir(parents=True)
    (out / "roads.gpkg").write_text("old roads")
    (out / "preview.png").mkdir()  # appeared while the demo ran
    names = ("roads.gpkg", "road_probability.tif", "preview.png")
    for name in names:
        (work / name).write_text(f"new {name}")
    with pytest.raises(GeoccsegError, match="preview.png is a folder"):
        move_all_into_place([(work / name, out / name) for name in names], work / "kept", overwrite=True)
    assert (out / "roads.gpkg").read_text() == "old roads" and not (out / "road_probability.tif").exists()
    assert (out / "preview.png").is_dir() and (work / "preview.png").read_text() == "new preview.png"
    (out / "preview.png").rmdir()
    for name in names:
        (work / name).write_text(f"new {name}")
    move_all_into_place([(work / name, out / name) for name in names], work / "kept", overwrite=True)
    assert [(out / name).read_text() for name in names] == [f"new {name}" for name in names]


def test_a_set_interrupted_between_link_and_unlink_is_rolled_back_whole(tmp_path: Path, monkeypatch) -> None:
    """Without --overwrite a move links the temporary to its name, then unlinks the temporary: an
    interruption between the two left both names, and the rollback took the destination for
    another run's file and kept it."""
    import os

    import geoccseg.io.atomic as atomic

    out, work = tmp_path / "out", tmp_path / ".work"
    (work / "kept").mkdir(parents=True)
    out.mkdir()
    for name in ("a.txt", "b.txt"):
        (work / name).write_text(f"new {name}")

    def interrupted(tmp, dest, overwrite):
        os.link(tmp, dest)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_move", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.move_all_into_place([(work / "a.txt", out / "a.txt"), (work / "b.txt", out / "b.txt")], work / "kept")
    assert list(out.iterdir()) == []


def test_a_set_rollback_restores_symbolic_links_and_goes_on_past_a_failed_restore(tmp_path: Path, monkeypatch) -> None:
    """A destination that was a symbolic link came back as a regular file (a hard link of its
    target), and one restore that failed left the later ones unrestored (review S8)."""
    import os

    import geoccseg.io.atomic as atomic

    out, work, elsewhere = tmp_path / "out", tmp_path / ".work", tmp_path / "elsewhere"
    for folder in (out, work / "kept", elsewhere):
        folder.mkdir(parents=True)
    (elsewhere / "roads.gpkg").write_text("old roads")
    (out / "roads.gpkg").symlink_to(elsewhere / "roads.gpkg")
    (out / "preview.png").mkdir()  # appeared while the run wrote: the third move fails
    (out / "a.txt").write_text("old a")
    names = ("roads.gpkg", "a.txt", "preview.png")
    for name in names:
        (work / name).write_text(f"new {name}")
    with pytest.raises(GeoccsegError, match="preview.png is a folder"):
        atomic.move_all_into_place([(work / name, out / name) for name in names], work / "kept", overwrite=True)
    assert (out / "roads.gpkg").is_symlink() and os.readlink(out / "roads.gpkg") == str(elsewhere / "roads.gpkg")
    assert (elsewhere / "roads.gpkg").read_text() == "old roads" and (out / "a.txt").read_text() == "old a"

    # the restore of roads.gpkg fails: a.txt is put back all the same, the old roads set aside beside it
    for name in names:
        (work / name).write_text(f"new {name}")
    replace = os.replace

    def failing_restore(src, dst):
        if Path(src).parent.name.startswith("kept") and Path(dst).name == "roads.gpkg":
            raise PermissionError(13, "Permission denied")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_restore)
    with pytest.raises(GeoccsegError, match=r"preview.png is a folder.*; then 1 output\(s\) could not be put back as they were: "
                                            r".*roads.gpkg is this run's new file \(Permission denied\); its old one is .*roads.gpkg.previous$"):
        atomic.move_all_into_place([(work / name, out / name) for name in names], work / "kept", overwrite=True)
    assert (out / "a.txt").read_text() == "old a" and (out / "roads.gpkg").read_text() == "new roads.gpkg"
    assert (out / "roads.gpkg.previous").is_symlink() and (out / "roads.gpkg.previous").read_text() == "old roads"

    # the same again: the old file goes to a free name (.previous is taken), and an interrupt stays an
    # interrupt (exit status 130), the restore that failed told in a note and in the log
    (out / "roads.gpkg").unlink()
    (out / "roads.gpkg").symlink_to(elsewhere / "roads.gpkg")
    for name in names:
        (work / name).write_text(f"new {name}")
    move = atomic._move

    def interrupted_at_the_folder(tmp, dest, overwrite):
        if dest.name == "preview.png":
            raise KeyboardInterrupt
        return move(tmp, dest, overwrite)

    monkeypatch.setattr(atomic, "_move", interrupted_at_the_folder)
    (work / "kept-again").mkdir()  # each run keeps in its own work folder
    with pytest.raises(KeyboardInterrupt) as caught:
        atomic.move_all_into_place([(work / name, out / name) for name in names], work / "kept-again", overwrite=True)
    assert any("roads.gpkg.previous-2" in note for note in caught.value.__notes__)
    assert (out / "roads.gpkg.previous-2").read_text() == "old roads" and (out / "a.txt").read_text() == "old a"


def test_a_folder_that_appears_while_writing_is_kept_even_with_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "roads.gpkg"
    with pytest.raises(GeoccsegError, match="is a folder"):
        with atomic_path(dest, overwrite=True) as tmp:
            tmp.write_text("mine")
            victim(dest)
    assert_untouched(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roads.gpkg"]


def test_a_lines_file_that_appears_while_write_vectors_writes_is_kept(tmp_path: Path, monkeypatch) -> None:
    """The same through a real writer: another run's GeoPackage lands while ours is being written."""
    dest = tmp_path / "roads.gpkg"
    theirs = write_vectors({"road": lines(1)}, tmp_path / "theirs.gpkg")
    real_write = pyogrio.write_dataframe

    def write_while_another_run_finishes(df, path, **kwargs):
        real_write(df, path, **kwargs)
        shutil.copy(theirs, dest)

    monkeypatch.setattr(pyogrio, "write_dataframe", write_while_another_run_finishes)
    with pytest.raises(GeoccsegError, match="appeared"):
        write_vectors({"road": lines(3)}, dest)
    monkeypatch.undo()
    assert len(gpd.read_file(dest, layer="road")) == 1  # theirs, not ours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roads.gpkg", "theirs.gpkg"]


def test_a_write_flushes_its_file_and_folder_not_the_other_files_there(tmp_path: Path, monkeypatch) -> None:
    """Moving a file into place flushes that file and the folder's entries only: the other files
    of the folder are left alone (another run's temporaries vanish meanwhile, which raised; and a
    folder of 50,000 photo outputs was flushed whole after each of them)."""
    for i in range(3):
        (tmp_path / f"other{i}.png").write_bytes(b"x")
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"png")
    monkeypatch.undo()
    assert len(synced) == 2 and Path(synced[0]).name.endswith(".part.png") and synced[1] == str(tmp_path)


# -- what a kill leaves ------------------------------------------------------------------------
def test_a_writer_killed_inside_atomic_path_leaves_a_hidden_temporary_the_next_run_removes(tmp_path: Path) -> None:
    dest = tmp_path / "scores.json"
    code = (
        "import os, signal, sys\n"
        "from geoccseg.io.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(dest)], check=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].startswith(".scores.") and not dest.exists()
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps({"ok": True}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_temporary_of_another_machine_of_the_same_name_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloned VMs share their host name, and the initial PID namespace has the same number on every
    Linux machine: a sweep on one read the other's live writer, in a folder both write to, as a
    dead process of its own and removed the temporary it was writing. A writer that died here
    leaves a temporary; seen from a machine with another machine id it is not this host's."""
    from geoccseg.io import atomic
    from geoccseg.io.atomic import remove_stale

    if not any(Path(f).is_file() for f in atomic.MACHINE_ID_FILES):
        pytest.skip("this system keeps no machine id (systemd or D-Bus)")
    dest = tmp_path / "scores.json"
    code = ("import os, signal, sys\nfrom geoccseg.io.atomic import atomic_path\nwith atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(dest)], check=False)
    (left,) = [p for p in tmp_path.iterdir()]
    other = tmp_path / "machine-id"
    other.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.setattr(atomic, "MACHINE_ID_FILES", (str(other),))
    assert remove_stale(dest) == [] and left.read_text() == "half"  # another machine's: kept
    monkeypatch.undo()
    assert remove_stale(dest) == [left] and not left.exists()  # this machine's dead writer: removed


def test_a_writer_in_another_pid_namespace_keeps_its_temporary(tmp_path: Path) -> None:
    """Containers sharing the host's name (docker --network host) number their processes apart: the
    sweep read another container's writer's pid as a dead process of this host and removed the
    temporary it was writing. The writer here runs in a PID namespace of its own (unshare), under
    the number of a process that has ended here."""
    import re

    from geoccseg.io.atomic import remove_stale

    namespaces = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]  # no privilege needed
    try:
        probe = subprocess.run([*namespaces, "true"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.skip("no unshare here (util-linux): PID namespaces are Linux's")
    if probe.returncode:
        pytest.skip(f"this system allows no new user and PID namespace: {probe.stderr.strip()[-300:]}")
    dest = tmp_path / "scores.json"
    writer = ("import sys, time\nfrom geoccseg.io.atomic import atomic_path\nwith atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('half')\n    print(tmp.name, flush=True)\n    time.sleep(120)\n")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    # sh is process 1 of the new namespace; the next number it gives is the one set here
    script = f"echo {int(ended) - 1} > /proc/sys/kernel/ns_last_pid && " + " ".join(map(shlex_quote, [sys.executable, "-c", writer, str(dest)]))
    proc = subprocess.Popen([*namespaces, "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        name = proc.stdout.readline().strip()
        assert name, proc.stderr.read()[-2000:]  # the writer ran and holds its temporary
        inner = int(re.search(r"-(\d+)\.[^.]+\.part", name)[1])
        assert inner == int(ended) and not psutil.pid_exists(inner)  # the writer's number is nobody's in this namespace
        assert remove_stale(dest) == [] and (tmp_path / name).read_text() == "half"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real file system of 64 KiB (tmpfs), unmounted after the test; skipped where mounting is not allowed."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, check=False).returncode:
        pytest.skip("mounting a small tmpfs needs root and mount rights")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_in_gdal_or_sqlite_writers_is_one_line_naming_the_output(vegas: Path, small_disk: Path) -> None:
    """GDAL's and SQLite's errors carry no errno: a full disk while predict staged the probability
    raster in its work folder, or while OGR wrote the GeoPackage, was a traceback."""
    out = small_disk / "roads.gpkg"
    done = subprocess.run([sys.executable, "-c", "from geoccseg.cli import cli; cli()", "predict", str(vegas / "vegas_img0_rgb.tif"),
                           "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"geoccseg: error: cannot write {out}: the disk is full (0 KiB left); "
                                                    "free some space or choose another output folder")
    assert list(small_disk.iterdir()) == []  # no temporary file or work folder left
    # said before the prediction, not only after it: the blend sums, the staged raster and the COG need more than is free
    assert "vegas_img0_rgb.tif needs up to " in done.stderr and f"of free space in {small_disk}, and " in done.stderr, done.stderr
    assert "it may stop with a full disk at the end" in done.stderr, done.stderr
    big = b"x" * (128 * 1024)
    with pytest.raises(GeoccsegError, match=rf"^cannot write {out}: No space left"):  # a work file: named after its output
        with scratch_dir(out) as work, atomic_path(work / "staging.tif") as tmp:
            tmp.write_bytes(big)
    with pytest.raises(GeoccsegError, match=rf"^cannot write {small_disk / 'p.tif'}: No space left"):  # another output: its own name
        with scratch_dir(out), atomic_path(small_disk / "p.tif") as tmp:
            tmp.write_bytes(big)
    (small_disk / "filler").write_bytes(b"x" * (shutil.disk_usage(small_disk).free - 16 * 1024))  # 16 KiB short of full
    with pytest.raises(GeoccsegError, match=rf"^cannot write {small_disk / 'many.gpkg'}: (the disk is full|.*database or disk is full)"):
        write_vectors({"road": lines(2000)}, small_disk / "many.gpkg")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    # other failures on a nearly full disk stay what they are
    for error in (FileNotFoundError, ValueError):
        with pytest.raises(error), atomic_path(small_disk / "other.json"):
            raise error("not about space")


def test_a_full_disk_is_a_one_line_error_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    """A write refused for size (here a file size limit, EFBIG; a full disk is ENOSPC) was a traceback."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", "from geoccseg.cli import cli; cli()", "predict", str(data_dir / "cfd" / "images" / "001.jpg"),
         "-o", str(out), "--engine", "torch", "--device", "cpu", "--no-overlay"],
        capture_output=True, text=True, preexec_fn=limit, check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == (f"geoccseg: error: cannot write {out / 'probability' / '001.png'}: the file is larger than this file system or "
                        "a limit allows; choose another output folder")
    assert not (out / "probability" / "001.png").exists()


def test_a_raster_cut_short_is_a_one_line_error_and_leaves_nothing(vegas: Path, predicted, tmp_path: Path) -> None:
    """A scene or probability raster whose copy stopped part way (its header whole, as a COG's is)
    opens, then failed on the first block past the cut with rasterio's traceback."""
    from rasterio.shutil import copy as copy_raster

    copy_raster(vegas / "vegas_img0_rgb.tif", tmp_path / "whole.tif", driver="COG")
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    args = ["predict", str(tmp_path / "cut.tif"), "-o", str(tmp_path / "roads.gpkg"), "--device", "cpu"]
    message = one_line_error(CliRunner().invoke(cli, args))
    assert "cannot read the pixels of" in message and "cut.tif" in message and "truncated" in message
    prob, _ = predicted
    data = Path(prob).read_bytes()
    (tmp_path / "prob_cut.tif").write_bytes(data[: len(data) * 2 // 3])
    message = one_line_error(CliRunner().invoke(cli, ["vectorize", str(tmp_path / "prob_cut.tif"), "-o", str(tmp_path / "lines.gpkg")]))
    assert "cannot read the pixels of" in message and "truncated" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "prob_cut.tif", "whole.tif"]


def test_an_output_the_system_will_not_replace_is_a_one_line_error(predicted, tmp_path: Path) -> None:
    """--overwrite onto a file the system refuses to replace (another user's in a sticky folder,
    here an immutable one: root too is refused) was a PermissionError traceback after all the work."""
    prob, _ = predicted
    out = tmp_path / "lines.gpkg"
    out.write_bytes(b"old lines")
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root and a file system that keeps the flag)")
    try:
        message = one_line_error(CliRunner().invoke(cli, ["vectorize", str(prob), "-o", str(out), "--overwrite"]))
        assert f"cannot write {out}: Operation not permitted; it was left as it is" in message
        assert out.read_bytes() == b"old lines" and sorted(p.name for p in tmp_path.iterdir()) == ["lines.gpkg"]
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


def test_a_leftover_shapefile_part_is_refused_before_any_work(crop: Path, tmp_path: Path) -> None:
    """Only the .shp was checked up front: a leftover roads.dbf let the whole prediction run (its
    probabilities written), then refused the lines."""
    (tmp_path / "roads.dbf").write_bytes(b"an older table")
    args = ["predict", str(crop), "-o", str(tmp_path / "roads.shp"), "--prob-out", str(tmp_path / "p.tif"), "--device", "cpu"]
    message = one_line_error(CliRunner().invoke(cli, args))
    assert "roads.dbf already exists" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roads.dbf"]  # no probability raster: refused before the work


@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_stopped_while_tracing_lines_leaves_its_outputs_as_they_were(overwrite: bool, vegas: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """Review E2: the probability and confidence rasters were moved into place before the lines
    were traced; a Ctrl-C while tracing left them under the requested names (a rerun was refused
    for them) or, with --overwrite, beside the old lines of another run. Now the three move into
    place as one set, or nothing (here the stop comes once every line is traced)."""
    from geoccseg.inference import pipeline

    scene = vegas / "vegas_img0_rgb.tif"

    outputs = {name: tmp_path / name for name in ("roads.gpkg", "prob.tif", "confidence.tif")}
    if overwrite:
        for name, path in outputs.items():
            path.write_bytes(f"the older {name}".encode())
    before = tree(tmp_path)
    traced, real = [], pipeline.vectorize_raster

    def stopped_after_tracing(*args, **kwargs):
        traced.append(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "vectorize_raster", stopped_after_tracing)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_predict(scene, outputs["roads.gpkg"], model="road", prob_out=outputs["prob.tif"],
                             confidence_out=outputs["confidence.tif"], options=PredictOptions(device="cpu"), overwrite=overwrite,
                             progress=False)
    assert traced and tree(tmp_path) == before  # every line traced, then nothing written: no work folder left either
    monkeypatch.undo()
    pipeline.run_predict(scene, outputs["roads.gpkg"], model="road", prob_out=outputs["prob.tif"], confidence_out=outputs["confidence.tif"],
                         options=PredictOptions(device="cpu"), overwrite=overwrite, progress=False)  # the same run, not refused
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(outputs)
    assert len(gpd.read_file(outputs["roads.gpkg"], layer="road")) == len(traced[0]["road"]) > 0
    with rasterio.open(outputs["prob.tif"]) as prob, rasterio.open(outputs["confidence.tif"]) as conf:
        assert prob.shape == conf.shape == (1300, 1300)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".fgb", ".shp"])
def test_lines_files_follow_the_umask(suffix: str, tmp_path: Path) -> None:
    """Review S4: staged in a work folder, a GeoPackage kept SQLite's own mode (0644 whatever the
    umask: a group could no longer --overwrite it under umask 002); atomic_path had set it."""
    lines = gpd.GeoDataFrame({"class": ["road"]}, geometry=[LineString([(0, 0), (10, 10)])], crs=32611)
    old = os.umask(0o002)
    try:
        out = write_vectors({"road": lines}, tmp_path / f"roads{suffix}")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o664


def test_a_set_keeps_an_old_file_of_another_disk_on_its_own_disk(vegas: Path, tmp_path: Path, monkeypatch) -> None:
    """Review S3: the old --prob-out on another file system than the lines was copied whole into the
    lines' work folder (a full home disk failed the run at its end) and, when the lines could not
    be moved, could not be put back: the only copy went with the work folder. Kept on its own
    disk, it is put back by a rename."""
    from geoccseg.inference import pipeline
    from geoccseg.io import atomic

    other = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    if other is None or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    try:
        prob, lines = other / "prob.tif", tmp_path / "roads.gpkg"
        prob.write_bytes(b"the older probabilities")
        lines.write_bytes(b"the older lines")
        real = atomic._move

        def refused_for_the_lines(tmp: Path, dest: Path, overwrite: bool) -> None:
            if dest == lines:
                raise PermissionError(13, "Permission denied")
            real(tmp, dest, overwrite)

        monkeypatch.setattr(atomic, "_move", refused_for_the_lines)
        with pytest.raises(GeoccsegError, match="cannot write .*roads.gpkg: Permission denied"):
            pipeline.run_predict(vegas / "vegas_img0_rgb.tif", lines, model="road", prob_out=prob, options=PredictOptions(device="cpu"),
                                 overwrite=True, progress=False)
        assert prob.read_bytes() == b"the older probabilities" and lines.read_bytes() == b"the older lines"
        assert sorted(p.name for p in other.iterdir()) == ["prob.tif"] and sorted(p.name for p in tmp_path.iterdir()) == ["roads.gpkg"]
    finally:
        shutil.rmtree(other, ignore_errors=True)
