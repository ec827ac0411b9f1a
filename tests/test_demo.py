"""``geoccseg demo``: the shipped road model on the sample (``--quick``), and "label a strip, map the rest".

The quick part runs in the default suite (seconds). The full demo fine-tunes for minutes: it is
marked ``slow`` and runs only when slow tests are asked for (``python -m pytest -m slow tests/test_demo.py``).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner
from PIL import Image

from geoccseg.cli import cli
from geoccseg.cli.train import command as train_command
from geoccseg.io.bundle import resolve_model
from geoccseg.demo import FINE_TUNE, STEPS, run_demo, strip_config, write_strip
from geoccseg.io.catalog import sample_roads, sample_scene
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import score_rest, strips
from geoccseg.evaluate.files import read_lines
from geoccseg.train import TrainConfig

BOUNDS = (-115.1706276, 36.2371077, -115.1671176, 36.2406177)  # the sample's, EPSG:4326
QUICK_OUTPUTS = {"roads.gpkg", "road_probability.tif", "preview.png"}
FULL_OUTPUTS = QUICK_OUTPUTS | {"labeled_strip.gpkg", "roads_fine_tuned.gpkg"}
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG", the first of the two PRAGMAs that identify a GeoPackage


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, str]:
    """``geoccseg demo --quick`` run once, in a folder that already holds a file of the user's."""
    out = tmp_path_factory.mktemp("demo")
    (out / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(cli, ["demo", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def _figures(output: str, row: str) -> tuple[float, float]:
    match = re.search(rf"{re.escape(row)}\s+([0-9.]+)\s+([0-9.]+)", output)
    assert match, output
    return float(match[1]), float(match[2])


def test_quick_demo_writes_the_shipped_models_roads_and_nothing_else(quick) -> None:
    out, _ = quick
    assert {p.name for p in out.iterdir()} == QUICK_OUTPUTS | {"notes.txt"}  # no temporaries, no part (b)
    assert (out / "notes.txt").read_text() == "mine\n"
    roads = gpd.read_file(out / "roads.gpkg", layer="road")
    assert roads.crs.to_epsg() == 4326
    assert {"class", "length_m", "width_m", "probability"} <= set(roads.columns)
    assert len(roads) > 0
    xmin, ymin, xmax, ymax = roads.total_bounds
    assert BOUNDS[0] <= xmin and xmax <= BOUNDS[2] and BOUNDS[1] <= ymin and ymax <= BOUNDS[3]
    assert (out / "preview.png").stat().st_size > 50_000


def test_the_preview_is_a_palette_png_of_a_reasonable_size(quick) -> None:
    """Matplotlib's RGBA PNG of aerial imagery was 1 MB for the full demo (issue 17)."""
    out, _ = quick
    with Image.open(out / "preview.png") as png:
        assert png.mode == "P" and len(png.getcolors(256)) > 128  # 256 colours, dithered, not a few flat ones
        assert png.size == (1350, 486)  # 15 x 5.4 inches at 90 dpi: the drawing is unchanged
    assert (out / "preview.png").stat().st_size < 300_000


def test_quick_demo_prints_the_shipped_models_scores_on_the_unlabeled_rest(quick) -> None:
    out, output = quick
    completeness, correctness = _figures(output, "(a) shipped road model")
    split = strips(sample_scene(), 0.4)
    scores = score_rest(read_lines(out / "roads.gpkg", "PRED"), read_lines(sample_roads()), split, 5.0)
    assert (completeness, correctness) == (round(scores.completeness, 2), round(scores.correctness, 2))
    assert "(b) label a strip" not in output
    assert f"found {scores.completeness:.0%} of the roads in the unlabeled 60%" in output
    assert "without --quick" in output


def test_printed_train_command_is_the_demos_fine_tuning(quick) -> None:
    """The commands a user copies train exactly as part (b) does (data, start, every training option)."""
    out, output = quick
    values = dict(re.findall(r"(SCENE|ROADS|STRIP)=(\S+)", output))
    assert set(values) == {"SCENE", "ROADS", "STRIP"}
    (line,) = [line for line in output.splitlines() if line.strip().startswith("geoccseg train ")]
    args = [re.sub(r"\$(SCENE|ROADS|STRIP)", lambda m: values[m[1]], a) for a in shlex.split(line)[2:]]
    given = {k: v for k, v in train_command.make_context("train", args).params.items() if v not in (None, ())}
    demo = strip_config(given["out"], values["STRIP"])
    assert given.pop("scenes") == (str(sample_scene()),) and given.pop("labels") == str(sample_roads())
    assert Path(values["STRIP"]) == out / "labeled_strip.gpkg"
    for key, value in given.items():
        assert getattr(demo, key) == value, key
    # ... and nothing the demo sets is missing from the command (bookkeeping aside)
    bookkeeping = {"out", "scenes", "labels", "progress", "val_every", "checkpoint_every", "checkpoint_minutes"}
    changed = {f.name for f in dataclasses.fields(TrainConfig) if getattr(demo, f.name) != getattr(TrainConfig(), f.name)}
    assert changed - bookkeeping <= set(given), changed - bookkeeping - set(given)
    assert given["max_steps"] == STEPS and given["init_from"] == "road" and set(FINE_TUNE) <= set(given)


def test_a_short_fine_tuning_starts_the_unlabeled_terms_within_its_steps(tmp_path: Path) -> None:
    """--steps below the unlabeled terms' start (50) fine-tuned without the method: the schedule now scales with the run."""
    from geoccseg.demo import fine_tune_options

    short = strip_config(tmp_path / "model", tmp_path / "strip.gpkg", steps=40)
    assert (short.unlabeled_start_steps, short.rampup_steps) == (10, 40)
    assert fine_tune_options(STEPS) == FINE_TUNE and fine_tune_options(1000) == FINE_TUNE


def test_demo_refuses_a_folder_in_place_of_the_fine_tuned_lines_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "roads_fine_tuned.gpkg").mkdir(parents=True)
    with pytest.raises(GeoccsegError, match="is a folder"):
        run_demo(out, progress=False)
    assert [p.name for p in out.iterdir()] == ["roads_fine_tuned.gpkg"]


def test_demo_replaces_files_of_an_earlier_demo_only_with_overwrite(quick, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "roads.gpkg").write_text("the user's own labels\n")  # the README calls label files roads.gpkg too
    result = CliRunner().invoke(cli, ["demo", "--quick", "-o", str(out)])
    assert result.exit_code == 2 and "roads.gpkg already exists; pass --overwrite to replace it" in result.output
    assert (out / "roads.gpkg").read_text() == "the user's own labels\n" and [p.name for p in out.iterdir()] == ["roads.gpkg"]
    earlier, _ = quick
    before = {p.name: p.stat().st_mtime_ns for p in earlier.iterdir()}
    result = CliRunner().invoke(cli, ["demo", "--quick", "--overwrite", "-o", str(earlier)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in earlier.iterdir()} == set(before) and (earlier / "notes.txt").read_text() == "mine\n"
    assert all((earlier / name).stat().st_mtime_ns > before[name] for name in QUICK_OUTPUTS)


def test_demo_refuses_a_model_that_does_not_predict_roads(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--quick", "--model", "crack", "-o", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "geoccseg: error: the demo maps the sample's roads, but model crack predicts crack; "
        "give a road model (road, or a bundle folder trained on roads)"
    ]
    assert not (tmp_path / "demo").exists()


def test_the_labeled_strip_is_a_geopackage_1_2_like_every_other_output(tmp_path: Path) -> None:
    """Issue 17: the demo wrote ``labeled_strip.gpkg`` itself, as GDAL's default GeoPackage 1.4."""
    split = strips(sample_scene(), 0.4)
    (tmp_path / "labeled_strip.gpkg").write_text("an older strip\n")  # replaced, as the demo replaces its outputs
    path = write_strip(split, tmp_path / "labeled_strip.gpkg")
    assert path == tmp_path / "labeled_strip.gpkg" and [p.name for p in tmp_path.iterdir()] == [path.name]
    with sqlite3.connect(path) as db:
        pragmas = db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]
    assert pragmas == (GPKG_APPLICATION_ID, 10200)
    strip = gpd.read_file(path, layer="labeled_strip")
    assert len(strip) == 1 and strip.geometry[0].equals(split.labeled) and strip.crs == split.crs


@pytest.mark.slow
def test_full_demo_labels_a_strip_and_maps_the_rest(tmp_path: Path, request) -> None:
    """The whole demo as a user runs it: the fine-tuned model finds most roads the shipped one misses."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(f"the full demo fine-tunes {STEPS} steps (1-2 minutes); run it with -m slow")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    result = run_demo(out, progress=False)
    assert {p.name for p in out.iterdir()} == FULL_OUTPUTS | {"notes.txt"}  # the work folder is gone
    b = result.fine_tuned
    assert b is not None and b.steps == STEPS
    # measured (README quick start): shipped 0.37 / 0.99, it misses the car-park aisles; fine-tuned 0.94 / 0.94
    assert result.shipped.completeness < 0.5
    assert b.scores.completeness >= 0.75 and b.scores.correctness >= 0.75
    assert b.scores.completeness > result.shipped.completeness + 0.3
    split = strips(sample_scene(), 0.4)
    again = score_rest(read_lines(out / "roads_fine_tuned.gpkg", "PRED"), read_lines(sample_roads()), split, 5.0)
    assert again.completeness == b.scores.completeness
    strip = gpd.read_file(out / "labeled_strip.gpkg")
    assert len(strip) == 1 and strip.geometry[0].equals(split.labeled)
    summary = result.summary()
    assert _figures(summary, "(b) label a strip") == (round(b.scores.completeness, 2), round(b.scores.correctness, 2))
    assert f"raised it to {b.scores.completeness:.0%}" in summary
    assert (out / "preview.png").stat().st_size > 100_000


def test_importing_the_demo_and_training_leaves_a_notebooks_plot_backend_alone() -> None:
    """They drew through pyplot after matplotlib.use('Agg') at import: in Jupyter, after
    %matplotlib inline, importing them switched plt.show() to a backend that shows nothing."""
    code = ("import matplotlib; matplotlib.use('svg'); import geoccseg.demo.run, geoccseg.train.callbacks; "
            "print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"


def test_the_model_may_be_given_as_a_path(tmp_path: Path) -> None:
    """A Path crashed in shlex.quote of the printed commands (and in the training config's YAML)."""
    result = run_demo(tmp_path / "demo", quick=True, model=resolve_model("road"), progress=False)
    assert str(resolve_model("road")) in result.summary()


def test_a_demo_failing_among_its_moves_puts_the_earlier_demos_files_back(quick, tmp_path: Path, monkeypatch) -> None:
    """The demo moved its outputs one by one: a failure at the third (an I/O error, a folder that
    appeared) left the new lines and probabilities beside the earlier demo's preview."""
    import errno

    import geoccseg.io.atomic as atomic
    from geoccseg.demo import run_demo

    earlier, _ = quick
    out = tmp_path / "demo"
    out.mkdir()
    for name in QUICK_OUTPUTS:
        (out / name).write_bytes((earlier / name).read_bytes() + b"earlier")  # an earlier demo's files, told apart
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_move = atomic.move_into_place

    def failing(tmp, dest, overwrite=False):
        if Path(dest) == out / "preview.png":  # the third output moved into the folder (not its writing in the work folder)
            raise OSError(errno.EIO, "Input/output error")
        real_move(tmp, dest, overwrite)

    monkeypatch.setattr(atomic, "move_into_place", failing)
    monkeypatch.setattr("geoccseg.demo.run.move_into_place", failing, raising=False)  # where a demo moves by itself
    with pytest.raises(OSError, match="Input/output error"):
        run_demo(out, quick=True, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_demo_stopped_halfway_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """Ctrl-C during the fine-tuning left part (a)'s files beside an earlier demo's preview and lines."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "demo"
    out.mkdir()
    (out / "preview.png").write_bytes(b"an earlier demo's")
    child = subprocess.Popen([sys.executable, "-m", "geoccseg.cli", "demo", "-o", str(out), "--overwrite", "--steps", "2000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".roads.*/.roads_fine_tuned.*/model")):  # part (b) trains into the hidden work folder
            assert child.poll() is None and time.monotonic() < deadline, "the demo never started fine-tuning"
            time.sleep(0.2)
        time.sleep(3)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=120)
    finally:
        child.kill()
        child.wait()
    assert child.returncode != 0
    assert [p.name for p in out.iterdir()] == ["preview.png"] and (out / "preview.png").read_bytes() == b"an earlier demo's"
