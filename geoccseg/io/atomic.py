"""Atomic output: write under a temporary name next to the target, then rename.

A crash, a Ctrl-C or an error while writing never leaves a half-written file under the name the
user asked for. All writers of the project (rasters, vectors, bundles, plots) go through here.

Temporary files and work folders are named ``.<stem>.<host>-<pid>.<random>`` beside the output.
A process killed outright (SIGKILL, out of memory) cannot remove its own; the next run writing the
same output removes those of dead processes of the same host (:func:`remove_stale`), and leaves
alone those of live processes and of other hosts (which may still be running on a shared folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
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


def _owner() -> str:
    """``<host>-<pid>`` of this process, as written into temporary names."""
    return f"{socket.gethostname()}-{os.getpid()}"


def temp_prefix(dest: Path) -> str:
    """Prefix of this process's temporary names for ``dest``."""
    return f".{dest.stem}.{_owner()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(dest: str | os.PathLike) -> list[Path]:
    """Remove temporary files and folders left beside ``dest`` by dead processes of this host.

    Returns:
        The removed paths.
    """
    dest = Path(dest)
    pattern = re.compile(rf"^\.{re.escape(dest.stem)}\.(?P<host>.+)-(?P<pid>\d+)\.[^.]+")
    host, removed = socket.gethostname(), []
    with contextlib.suppress(OSError):
        for entry in dest.parent.iterdir():
            match = pattern.match(entry.name)
            if not match or match["host"] != host or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def scratch_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary work folder beside ``dest`` (same file system, so results can be renamed into
    place), removed on exit; stale ones of dead processes are removed first."""
    dest = Path(dest)
    remove_stale(dest)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(dest), dir=dest.parent) as work:
        yield Path(work)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed to ``dest``.

    The temporary name keeps the extension of ``dest`` so that format drivers chosen by extension
    (GDAL, OGR) pick the right one. On any exception the temporary file is removed and ``dest`` is
    left as it was.
    """
    dest = check_writable(dest, overwrite)
    remove_stale(dest)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=f".part{dest.suffix}", dir=dest.parent or ".")
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
