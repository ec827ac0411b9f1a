"""Each concept has one home, and the layers import downwards only (issue 17, item 12).

``io`` reads and writes files; the networks (``models``) and the method (``losses``) sit above it.
"""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.shutil
from click.testing import CliRunner
from PIL import Image

import geoccseg.io
from geoccseg.cli import cli
from geoccseg.inference.pipeline import is_scene

BOTTOM = ("geoccseg.cores", "geoccseg.errors", "geoccseg.label_values", "geoccseg.quiet")
"""Modules below every layer: the cores a process may use, the one error type, the values of label
masks, and warnings ignored in blocks that take turns across threads."""


def _modules_loaded_by(module: str) -> list[str]:
    """The ``geoccseg`` modules that importing ``module`` loads, in a fresh interpreter."""
    code = f"import sys, {module}\nprint('\\n'.join(sorted(m for m in sys.modules if m.startswith('geoccseg.'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_io_imports_nothing_above_it() -> None:
    io_modules = [f"geoccseg.io.{m.name}" for m in pkgutil.iter_modules(geoccseg.io.__path__)]
    assert "geoccseg.io.bundle" in io_modules
    loaded = _modules_loaded_by(", ".join(io_modules))
    above = [m for m in loaded if not m.startswith("geoccseg.io") and m not in BOTTOM]
    assert not above, f"geoccseg.io imports {above}"


def test_losses_take_the_ignore_index_from_the_bottom_not_from_io() -> None:
    loaded = _modules_loaded_by("geoccseg.losses")
    assert "geoccseg.label_values" in loaded
    other = [m for m in loaded if not m.startswith("geoccseg.losses") and m not in BOTTOM]
    assert not other, f"geoccseg.losses imports {other}"


def _scores(pred: Path, truth: Path) -> dict:
    """The scores of class 1 that ``geoccseg evaluate PRED TRUTH --json`` writes."""
    result = CliRunner().invoke(cli, ["evaluate", str(pred), str(truth), "--json", str(truth.parent / "scores.json"), "--no-graph-metrics"])
    assert result.exit_code == 0, result.output
    (scores,) = json.loads((truth.parent / "scores.json").read_text())["classes"]
    return scores


def test_evaluate_reads_the_vectors_the_labels_read(vegas: Path, tmp_path: Path) -> None:
    """``.json`` GeoJSON is read as labels and as an AOI, and so as evaluation truth (it was refused)."""
    truth = shutil.copy(vegas / "vegas_img0_roads.geojson", tmp_path / "roads.json")
    scores = _scores(vegas / "vegas_img0_roads.geojson", Path(truth))
    assert scores["completeness"] == 1.0 and scores["correctness"] == 1.0, scores


def test_evaluate_reads_the_masks_photos_train_on(data_dir: Path, tmp_path: Path) -> None:
    """A BMP mask is a photo mask for training, and so a truth for evaluation (it was refused)."""
    mask = next(iter(sorted((data_dir / "cfd" / "masks").iterdir())))
    Image.open(mask).save(tmp_path / "truth.bmp")
    scores = _scores(mask, tmp_path / "truth.bmp")
    assert scores["f1"] == 1.0 and scores["recall"] == 1.0, scores


def test_predict_takes_a_vrt_scene_as_info_and_the_labels_do(vegas: Path, tmp_path: Path) -> None:
    """A VRT of a GeoTIFF is a scene, not a photo (predict refused it as "not a photo")."""
    scene = tmp_path / "scene.vrt"
    rasterio.shutil.copy(vegas / "vegas_img0_rgb.tif", scene, driver="VRT")
    assert is_scene(scene)
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "roads.gpkg")])
    assert result.exit_code == 0, result.output
    lines = gpd.read_file(tmp_path / "roads.gpkg")
    assert len(lines) > 0 and lines.crs.to_epsg() == 4326 and np.isfinite(lines["length_m"]).all()
