"""Shared fixtures: the real data in ``../shared/data`` (or ``$GEOCCSEG_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("GEOCCSEG_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared real data; tests fail loudly (not skip) when it is missing."""
    assert DATA.is_dir(), f"shared data not found at {DATA}; set GEOCCSEG_DATA"
    return DATA


@pytest.fixture(scope="session")
def vegas(data_dir: Path) -> Path:
    return data_dir / "spacenet-vegas"
