"""The notebooks run top to bottom with their own small settings (the demo: tests/test_demo.py),
and those that GitHub shows with their plots are saved with the outputs of such a run."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SAVED_WITH_OUTPUTS = ("01_quickstart", "03_results", "04_active_labeling")
"""Notebooks kept with their outputs, so that their plots show without running them."""
PARAMETERS = {"03_results": {"RESULTS_DIR": str(ROOT / "pipelines" / "results")}}
"""Values given to a notebook's cell tagged ``parameters`` (papermill's convention) when the tests run
it outside the repository: notebook 03 finds the recorded results from its own folder otherwise."""


def with_parameters(nb: nbformat.NotebookNode, values: dict[str, str]) -> nbformat.NotebookNode:
    """``nb`` with a cell setting ``values`` after its cell tagged ``parameters`` (which must exist)."""
    if not values:
        return nb
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items())))
    return nb


def test_there_are_four_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_few_labels_training.ipynb", "03_results.ipynb",
                                           "04_active_labeling.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use its inline backend to show plots
    nb = with_parameters(nbformat.read(path, as_version=4), PARAMETERS.get(path.stem, {}))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "each notebook shows at least one plot"


@pytest.mark.parametrize("name", SAVED_WITH_OUTPUTS)
def test_notebook_is_saved_with_the_outputs_of_one_clean_run(name):
    """Every code cell ran once, in order, without an error or a warning; a plot shows; the file
    stays small and names no folder of the machine that ran it."""
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert path.stat().st_size < 500_000
    assert not re.search(r"/(work|tmp|root|home|Users)/", path.read_text())
