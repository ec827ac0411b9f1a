"""Shared fixtures: the real data in ``../shared/data`` (or ``$GEOCCSEG_DATA``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from geoccseg.benchmark.design import DATA_ENV, data_root

DATA = data_root(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared real data; tests fail loudly (not skip) when it is missing."""
    assert DATA.is_dir(), f"shared data not found at {DATA}; set {DATA_ENV}"
    return DATA


@pytest.fixture(scope="session")
def vegas(data_dir: Path) -> Path:
    return data_dir / "spacenet-vegas"


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX export cache (``$GEOCCSEG_CACHE``) of the test session: a fresh temporary folder, so
    that tests never read or fill the user's cache (subprocesses and Dask workers inherit it)."""
    folder = tmp_path_factory.mktemp("geoccseg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEOCCSEG_CACHE", str(folder))
        yield folder
