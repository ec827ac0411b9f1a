"""The notebooks run top to bottom with their own small settings, and the demo works out of the box."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from geoccseg.cli import cli

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_few_labels_training.ipynb", "03_results.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use its inline backend to show plots
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "each notebook shows at least one plot"


@pytest.mark.slow
def test_demo_writes_roads_over_the_sample(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "road lines" in result.output and " km in total" in result.output and "--aoi STRIP" in result.output
    roads = gpd.read_file(out / "roads.gpkg", layer="road")
    assert roads.crs.to_epsg() == 4326
    assert {"class", "length_m", "width_m", "probability"} <= set(roads.columns)
    xmin, ymin, xmax, ymax = -115.1706276, 36.2371077, -115.1671176, 36.2406177  # the sample's bounds
    assert roads.empty or (roads.total_bounds[0] >= xmin and roads.total_bounds[2] <= xmax
                           and roads.total_bounds[1] >= ymin and roads.total_bounds[3] <= ymax)
    assert (out / "preview.png").stat().st_size > 50_000
    assert (out / "road_probability.tif").exists()
