"""Atomic output: write under a temporary name next to the target, then rename.

A crash, a Ctrl-C or an error while writing never leaves a half-written file under the name the
user asked for. All writers of the project (rasters, vectors, bundles, plots) go through here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from geoccseg.errors import GeoccsegError


def check_writable(dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate that ``dest`` can be written: its folder exists and is writable, and it is new.

    Raises:
        GeoccsegError: if the output exists without ``overwrite`` or its folder is not writable.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise GeoccsegError(f"{dest} already exists; pass --overwrite to replace it")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise GeoccsegError(f"cannot write {dest}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise GeoccsegError(f"cannot write {dest}: folder {parent} is not writable; choose another output path")
    return dest


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed to ``dest``.

    The temporary name keeps the extension of ``dest`` so that format drivers chosen by extension
    (GDAL, OGR) pick the right one. On any exception the temporary file is removed and ``dest`` is
    left as it was.
    """
    dest = check_writable(dest, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=dest.parent or ".")
    os.close(fd)
    os.unlink(tmp)  # drivers want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
