"""Shared fixtures: the real data in ``../shared/data`` (or ``$GEOCCSEG_DATA``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


def _pin_worker_to_its_cores() -> None:
    """Under pytest-xdist (the README's ``-n 2``), worker k keeps every n-th core from the k-th: on
    2 cores, one core each. Done before anything imports PyTorch, OpenMP or Dask, which size their
    thread pools from this set: two workers sharing all cores would each run two threads on two
    cores and spin against each other (several times slower); pinned, each is a one-core machine
    for everything it starts, subprocesses and Dask workers included."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.sched_setaffinity(0, cores[int(worker[2:]) % len(cores)::max(count, 1)])


_pin_worker_to_its_cores()

import pytest  # noqa: E402

from geoccseg.benchmark.design import DATA_ENV, data_root  # noqa: E402

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


@pytest.fixture
def torch_threads() -> Iterator[Callable[[int], None]]:
    """``torch.set_num_threads`` for one test: the count it found is put back after the test."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
