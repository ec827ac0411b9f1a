"""Atomic output: write under a temporary name next to the target, then rename.

A crash, a Ctrl-C or an error while writing never leaves a half-written file under the name the
user asked for. All writers of the project (rasters, vectors, bundles, plots) go through here.

Temporary files and work folders are named ``.<stem>.<host>-<pid>.<random>`` beside the output,
``<host>`` being the host name and, on Linux, its machine id and PID namespace (:func:`host_identity`);
temporaries named by versions before the machine id are never taken for this host's. A process
killed outright (SIGKILL, out of memory) cannot remove its own; the next run writing the same
output removes those of dead processes of the same host (:func:`remove_stale`), and leaves alone
those of live processes and of other hosts or containers (which may still be running on a shared
folder).

Nothing else is ever removed: a folder, device or pipe where a file is expected is refused
(:func:`check_writable`), an existing file is replaced only with ``overwrite``, and without it
the final move cannot replace a file that appeared meanwhile (:func:`move_into_place`). Outputs
that are also inputs are refused by the commands with :func:`check_not_input`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import psutil

from geoccseg.errors import GeoccsegError

log = logging.getLogger(__name__)


def check_writable(dest: str | os.PathLike, overwrite: bool = False, *, example: str | None = None) -> Path:
    """Validate that the file ``dest`` can be written: it is not a folder (nor a device or pipe),
    it is new unless ``overwrite``, and its folder exists and accepts new files (tried for real,
    with a temporary file created and removed at once, so ``/proc``, read-only mounts and the like
    are caught before any work).

    Args:
        dest: the output file.
        overwrite: an existing file may be replaced.
        example: file name suggested when ``dest`` is a folder (default ``output`` + its extension).

    Returns:
        ``dest`` as a Path.

    Raises:
        GeoccsegError: a folder, device or pipe at ``dest``; an existing file without ``overwrite``;
            a folder that is missing or accepts no new file.
    """
    text = os.fspath(dest)
    dest = Path(dest)
    if dest.is_dir() or text.endswith(("/", os.sep)):
        what = "is a folder" if dest.is_dir() else "names a folder"
        raise GeoccsegError(f"{text} {what}; give a file name such as {dest / (example or f'output{dest.suffix}')}")
    if os.path.lexists(dest):
        if dest.exists() and not dest.is_file():
            raise GeoccsegError(f"{dest} exists and is not a regular file (a device, pipe or socket); give another file name")
        if not overwrite:
            raise GeoccsegError(f"{dest} already exists; pass --overwrite to replace it")
    parent = dest.parent
    if not parent.is_dir():
        if parent.exists():
            raise GeoccsegError(f"cannot write {dest}: {parent} is a file, not a folder; choose another output path")
        raise GeoccsegError(f"cannot write {dest}: folder {parent} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".probe", dir=parent)
    except OSError as exc:
        raise GeoccsegError(f"cannot write {dest}: no file can be created in folder {parent} ({exc.strerror}); choose another output path") from None
    os.close(fd)
    os.unlink(probe)
    return dest


def check_not_input(dest: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output that is one of the inputs: the same path once links are resolved, or the
    same file (device and inode, which also catches hard links).

    Raises:
        GeoccsegError: ``dest`` is one of ``inputs``.
    """
    dest = Path(dest)
    for src in inputs:
        same = dest.resolve() == Path(src).resolve()
        if not same:
            with contextlib.suppress(OSError):  # either file missing: not the same file
                same = os.path.samefile(dest, src)
        if same:
            raise GeoccsegError(f"{dest} is also an input ({src}); write the output to another path")


#: Files holding the machine's persistent id (systemd, then D-Bus), read by :func:`host_identity`.
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def host_identity() -> str:
    """This host as temporary names record it: its name, then on Linux ``~`` and the start of its
    machine id and ``~`` and its PID namespace.

    A pid is tested for life only on the machine and in the namespace that gave it. Containers that
    share the host's name (``docker run --network host``) number their processes apart: without the
    namespace, one container's run took another's temporaries, being written, for leftovers of dead
    processes and removed them. The initial namespace has the same number on every Linux machine,
    so two machines of one name (cloned VMs) writing to one shared folder are told apart by their
    machine ids (which, unlike the boot id, stay the same after a reboot: the leftovers of a power
    cut are still recognised as this machine's)."""
    name = socket.gethostname()
    for path in MACHINE_ID_FILES:
        try:
            machine = Path(path).read_text().strip()[:12]
        except OSError:
            continue
        if re.fullmatch(r"[0-9a-f]{12}", machine):
            name += f"~{machine}"
            break
    try:
        return f"{name}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (macOS, Windows): one namespace
        return name


def _owner() -> str:
    """``<host>-<pid>`` of this process, as written into temporary names."""
    return f"{host_identity()}-{os.getpid()}"


def temp_prefix(dest: Path) -> str:
    """Prefix of this process's temporary names for ``dest``."""
    return f".{dest.stem}.{_owner()}."


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (psutil: ``os.kill(pid, 0)``, the POSIX probe,
    terminates the process on Windows)."""
    return psutil.pid_exists(pid)


def remove_stale(dest: str | os.PathLike) -> list[Path]:
    """Remove temporary files and folders left beside ``dest`` by dead processes of this host.

    Returns:
        The removed paths.
    """
    dest = Path(dest)
    if dest.parent.resolve() in _swept:
        return []
    return _remove_stale_in(dest.parent, re.escape(dest.stem))


def _remove_stale_in(folder: Path, stem: str) -> list[Path]:
    """Remove the temporaries of dead processes of this host in ``folder`` whose output's stem matches the regex ``stem``."""
    pattern = re.compile(rf"^\.{stem}\.{re.escape(host_identity())}-(?P<pid>\d+)\.[^.]+")
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = pattern.match(entry.name)
            if not match or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


_swept: set[Path] = set()
"""Folders whose stale temporaries were removed on entering :func:`swept` (and not left yet)."""


@contextlib.contextmanager
def swept(folders: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Remove the stale temporaries of every output in ``folders`` once, then skip the search
    :func:`remove_stale` makes before each file while inside: a run writing n files into one
    folder lists it once, not n times as it grows to n files (50,000 photos: hours of listing)."""
    keys = [Path(folder).resolve() for folder in folders]
    for key in keys:
        _remove_stale_in(key, ".+")
    added = [key for key in keys if key not in _swept]
    _swept.update(added)
    try:
        yield
    finally:
        _swept.difference_update(added)


@contextlib.contextmanager
def scratch_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary work folder beside ``dest`` (same file system, so results can be renamed into
    place), removed on exit; stale ones of dead processes are removed first."""
    dest = Path(dest)
    remove_stale(dest)
    try:
        work = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), dir=dest.parent))
    except OSError as exc:
        raise GeoccsegError(f"cannot write {dest}: no work folder can be created in {dest.parent} ({exc.strerror}); choose another output path") from None
    try:
        with _full_disk_is_one_line(dest, work):  # checked before the work folder is removed
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def warn_if_short_of_space(dest: str | os.PathLike, need_bytes: float, what: str) -> None:
    """Warn when the file system of ``dest`` has less free space for this user than ``need_bytes``
    (an upper estimate of what ``what`` writes there): a full disk is otherwise found at the end,
    after the work that filled it. The folder named is the user's, not a work folder of ours."""
    folder = Path(dest).parent
    while f".{_owner()}." in folder.name:  # dest in one of this process's work folders (a temporary raster)
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need_bytes:
        log.warning("geoccseg: warning: %s needs up to %s of free space in %s, and %s are free there: it may stop with a full "
                    "disk at the end; free some space or write elsewhere", what, _size(need_bytes), folder, _size(free))


def _size(n: float) -> str:
    """A byte count for people: 1.2 GB, 350 MB, 64 KB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 1e3:.3g} KB"


def _sync(path: Path) -> None:
    """Flush ``path`` to disk: a file, or a folder of this run's with every file in it.

    Without it a power loss shortly after the rename can leave an empty or partial file under the
    final name on file systems that write data after metadata (ext4 without ``auto_da_alloc``, XFS).
    """
    paths = [p for p in path.rglob("*") if p.is_file()] + [path] if path.is_dir() else [path]
    for item in paths:
        _fsync(item)


def _fsync(path: Path) -> None:
    """Flush one file, or one folder's own entries (not the files in it), to disk.

    Where syncing is not supported (some mounts; folders on Windows) it is skipped; any other
    error (EIO, a full disk or quota that a network file system reports only now) is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _NO_SYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_SYNC:
            raise
    finally:
        os.close(fd)


_NO_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES, errno.EISDIR, errno.EBADF)
"""What opening or syncing raises where syncing is not supported."""


def move_into_place(tmp: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> None:
    """Move the finished temporary ``tmp`` to ``dest``, never over a folder, and over an existing
    file only with ``overwrite``.

    Without ``overwrite`` the move cannot replace anything: a hard link ``dest`` -> ``tmp`` fails
    when ``dest`` exists (a file another run wrote since this one started is kept), then ``tmp``
    is unlinked. Where the file system has no hard links (some network or FAT mounts), ``dest`` is
    checked just before a plain rename instead.

    Raises:
        GeoccsegError: a folder at ``dest``, a file without ``overwrite``, or a file the system
            refuses to replace (permissions: another user's file in a sticky folder, an immutable
            file); ``tmp`` stays for the caller to remove. A full disk stays an OSError for the
            callers' one-line message of it.
    """
    tmp, dest = Path(tmp), Path(dest)
    _sync(tmp)
    try:
        _move(tmp, dest, overwrite)
    except OSError as exc:
        if exc.errno in _FULL:
            raise
        advice = " (check its permissions, or choose another output name)" if exc.errno in (errno.EPERM, errno.EACCES) else ""
        raise GeoccsegError(f"cannot write {dest}: {exc.strerror or exc}; it was left as it is{advice}") from None
    finally:
        _fsync(dest.parent)  # the rename itself, not the other files of the folder (another run's may vanish meanwhile)


def move_all_into_place(moves: Sequence[tuple[Path, Path]], keep_dir: Path, overwrite: bool = False) -> None:
    """Move finished temporaries to their destinations as one set (:func:`move_into_place` each, in
    order): a failure or an interruption on the way (also one flushing a rename to disk, after it)
    puts every destination already moved back as it was, its old file (or symbolic link) restored
    from a second name kept in ``keep_dir`` (a hard link; a work folder), or beside the temporary
    where ``keep_dir`` is on another file system than the destination (:func:`_kept_path`), or
    removed where there was none. A destination whose move did not happen is left as it
    is. A destination that cannot be put back does not stop the others: its old file is set aside
    beside it as ``<name>.previous`` (``keep_dir`` is a work folder, removed with it) and the error
    says so.
    """
    done: list[tuple[Path, Path, Path]] = []
    try:
        for k, (tmp, dest) in enumerate(moves):
            kept = _kept_path(k, tmp, dest, keep_dir)
            if dest.is_symlink() or dest.is_file():
                _keep(dest, kept)
            done.append((tmp, dest, kept))
            move_into_place(tmp, dest, overwrite)
    except BaseException as exc:
        stuck = []
        for tmp, dest, kept in done:
            if tmp.exists() and not (dest.exists() and os.path.samefile(tmp, dest)):
                continue  # not moved: what is at dest is not this run's (linked, not yet unlinked: it is)
            try:
                if os.path.lexists(kept):
                    os.replace(kept, dest)
                else:
                    dest.unlink(missing_ok=True)
            except OSError as err:
                stuck.append(_set_aside(kept, dest, err))
        if stuck:
            told = f"{len(stuck)} output(s) could not be put back as they were: {'; '.join(stuck)}"
            if not isinstance(exc, Exception):  # an interrupt or exit stays one (exit status 130, 143)
                exc.add_note(told)
                log.error("geoccseg: %s", told)
                raise
            raise GeoccsegError(f"{exc}; then {told}") from exc
        raise


def _kept_path(k: int, tmp: Path, dest: Path, keep_dir: Path) -> Path:
    """Where the old file of ``dest`` is kept while a set moves: in ``keep_dir`` where that is on
    the destination's file system (a hard link, put back by a rename), else beside the temporary,
    which is (it is renamed to ``dest``): an old raster on another disk than the lines' work folder
    was copied whole into it, and could not be put back."""
    try:
        same = os.stat(keep_dir).st_dev == os.stat(dest.parent).st_dev
    except OSError:
        same = False
    return keep_dir / f"{k}-{dest.name}" if same else tmp.parent / f"{temp_prefix(dest)}kept-{k}-{dest.name}"


def _set_aside(kept: Path, dest: Path, err: OSError) -> str:
    """Keep the old file of a destination that could not be restored beside it, named
    ``<name>.previous`` (``.previous-2``, ... where taken; never over another file); what
    happened, for the error message."""
    why = err.strerror or str(err)
    if not os.path.lexists(kept):
        return f"{dest} is this run's new file and could not be removed ({why})"
    failure = None
    for k in range(1, 100):
        aside = dest.with_name(dest.name + (".previous" if k == 1 else f".previous-{k}"))
        try:
            os.link(kept, aside, follow_symlinks=False)
            return f"{dest} is this run's new file ({why}); its old one is {aside}"
        except FileExistsError:
            continue
        except OSError as exc:
            failure = exc
            break
    return (f"{dest} is this run's new file ({why}) and its old one could not be set aside beside it"
            f" ({failure.strerror or failure if failure else 'every .previous name is taken'})")


def _keep(path: Path, copy: Path) -> None:
    """A second name (a hard link, else a copy) for a file or a symbolic link (the link, not its target), to put it back."""
    try:
        os.link(path, copy, follow_symlinks=False)
    except OSError:
        shutil.copy2(path, copy, follow_symlinks=False)


def _move(tmp: Path, dest: Path, overwrite: bool) -> None:
    if dest.is_dir():
        raise GeoccsegError(f"{dest} is a folder (it appeared while this run was writing); it was left as it is; give a file name")
    appeared = GeoccsegError(f"{dest} appeared while this run was writing it (another run?); it was left as it is; pass --overwrite to replace it")
    if overwrite and not tmp.is_dir():
        os.replace(tmp, dest)  # a file never replaces a folder (EISDIR), whatever happened since the check
        return
    if tmp.is_dir():
        if os.path.lexists(dest):
            raise appeared
        os.rename(tmp, dest)
        return
    try:
        os.link(tmp, dest, follow_symlinks=False)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(dest):
            raise appeared from None
        os.rename(tmp, dest)
        return
    os.unlink(tmp)


_FULL = (errno.ENOSPC, errno.EDQUOT)
"""Errors of a file system that takes no more data."""

_GDAL_FULL = ("No space left on device", "Disk quota exceeded", "Free disk space available is", "database or disk is full",
              "File too large")
"""What GDAL's and SQLite's messages say when a disk takes no more data (their exceptions have no errno)."""

_SPACE_MARGIN = 1 << 20
"""Free bytes under which a folder's file system counts as full when a GDAL or SQLite write there has failed."""


@contextlib.contextmanager
def _full_disk_is_one_line(dest: Path, work: Path | None = None) -> Iterator[None]:
    """Turn an error raised inside into :func:`_full_disk`'s one-line error when the disk is full;
    a full disk met writing a file of the work folder ``work`` names ``dest``, the output it was for."""
    try:
        yield
    except DiskFullError as exc:
        if work is not None and work in exc.path.parents:
            raise DiskFullError(dest, exc.reason, exc.advice) from None
        raise
    except Exception as exc:
        full = _full_disk(dest, exc)
        if full is not None:
            raise full from None
        raise


class DiskFullError(GeoccsegError):
    """A write failed because its disk, a quota or a file size limit takes no more data.

    Attributes:
        path: the file that could not be written.
        reason: what is full, e.g. "the disk is full (0 KiB left)".
        advice: what to do about it.
    """

    def __init__(self, dest: str | os.PathLike, reason: str, advice: str = "free some space or choose another output folder") -> None:
        self.path, self.reason, self.advice = Path(dest), reason, advice
        super().__init__(f"cannot write {dest}: {reason}; {advice}")


def _full_disk(dest: Path, exc: BaseException) -> DiskFullError | None:
    """The one-line error for a write of ``dest`` that failed because its disk is full, or None.

    OS errors say so by their errno (ENOSPC, EDQUOT, EFBIG); any other errno is another failure.
    GDAL's, OGR's and SQLite's errors carry no OS errno: their message is read ("No space left on
    device", "database or disk is full", ...), and when it says nothing the file system is asked:
    under 1 MiB left for this user, or no inode left, is a full disk (a failed write leaves the disk
    that full). Called before the failed write's temporary files are removed.
    """
    if isinstance(exc, GeoccsegError):
        return None
    number = exc.errno if isinstance(exc, OSError) else None  # rasterio's CPLE errors have an errno of GDAL's own
    if number == errno.EFBIG:
        return DiskFullError(dest, "the file is larger than this file system or a limit allows", "choose another output folder")
    if number in _FULL:
        return DiskFullError(dest, os.strerror(number))
    if number is not None or not _is_writer_error(exc):
        return None
    if any(words in str(exc) for words in _GDAL_FULL):
        return DiskFullError(dest, " ".join(str(exc).split()))
    if not hasattr(os, "statvfs"):
        return None
    try:
        fs = os.statvfs(dest.parent)
    except OSError:
        return None
    if not fs.f_blocks:  # a file system that does not say its size (some network and FUSE mounts)
        return None
    free = fs.f_bavail * fs.f_frsize  # what this user may still write, as shutil.disk_usage says
    if free < _SPACE_MARGIN:
        return DiskFullError(dest, f"the disk is full ({free // 1024} KiB left)")
    if fs.f_files and fs.f_favail == 0:
        return DiskFullError(dest, "the file system has no free inode left", "remove some files or choose another output folder")
    return None


def _is_writer_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from GDAL (rasterio), OGR (pyogrio) or SQLite, whose errors carry no OS errno."""
    import sqlite3

    from pyogrio.errors import DataLayerError, DataSourceError  # feature, field and geometry errors are layer errors
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    return isinstance(exc, (CPLE_BaseError, RasterioError, DataSourceError, DataLayerError, sqlite3.Error))


def follow_umask(path: Path) -> None:
    """Give a new file the mode any file created under this process's umask gets: writers that make
    private (0600) files (mkstemp) or files of their own mode (SQLite's 0644, whatever the umask)."""
    umask = os.umask(0o077)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is moved to ``dest``.

    The temporary name keeps the extension of ``dest`` so that format drivers chosen by extension
    (GDAL, OGR) pick the right one. On any exception the temporary file is removed and ``dest`` is
    left as it was; a full disk or quota is one :class:`GeoccsegError` naming ``dest``. A folder at ``dest`` is never removed or replaced, and a file at ``dest`` is
    replaced only with ``overwrite``, also when it appeared while the caller was writing
    (:func:`move_into_place`).
    """
    dest = check_writable(dest, overwrite)
    remove_stale(dest)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=f".part{dest.suffix}", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)  # drivers want to create the file themselves
    tmp_path = Path(tmp)
    try:
        with _full_disk_is_one_line(dest):  # checked before the temporary file is removed
            yield tmp_path
            if tmp_path.is_file():
                follow_umask(tmp_path)
            move_into_place(tmp_path, dest, overwrite)  # flushes to disk: a full disk may show only now
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
