"""The network exported to ONNX, once per set of weights, in a user cache folder.

:func:`exported_model` gives the ONNX model (as bytes) that the ``onnx`` engine
(:class:`geoccseg.inference.engine.OnnxEngine`) runs. It is read from the cache only, never from
anywhere else: ``<cache>/onnx/<key>.onnx`` with a sidecar ``<key>.json`` recording the key, the
SHA-256 of the ONNX file and the geoccseg version, where ``<cache>`` is :func:`cache_dir` and
``<key>`` (:func:`export_key`) is the SHA-256 of the export format (:data:`EXPORT_FORMAT`), the
ONNX opset (:data:`OPSET`), the precision, the input bands, the architecture and the SHA-256 of the weights
(:func:`~geoccseg.models.bundle.state_sha256`, of the network as it is in memory, so that a model changed after it was
loaded never meets the export of its former weights) and the geoccseg version (whose network code
the export traced).

A cached file is used only when it, its sidecar and the ``onnx`` folder belong to this user alone
(not links, owned by this user, writable by no one else: a record can be forged by anyone who can
write the files, so a cache in a shared folder is never trusted; :func:`untrusted`), when its
sidecar records the same key, and when it records the SHA-256 of the very bytes that were read (those bytes, not the file, go to ONNX Runtime, so nothing can
change in between). Otherwise (missing, stale, truncated or tampered) the network is exported
again and both files are replaced atomically (:func:`geoccseg.io.atomic.atomic_path`; concurrent
runs of the same bundle each write whole files, and a reader checks the bytes against the record).
Where the cache folder cannot be written, the export is kept in memory for this run only, with a
one-line warning.

Nothing removes old exports by itself (no command deletes what the user did not name): each new
export above :data:`CACHE_WARN_BYTES` in all adds a one-line warning, and ``geoccseg cache
--clear`` (:func:`clear_cache`) removes the exports, and only them.

The export: ``torch.onnx.export``'s TorchScript exporter (it needs the ``onnx`` package only, and
exports this network in about 3 s, ten times faster than the dynamo exporter), of the network
followed by its softmax over the foreground classes, with dynamic batch, height and width axes.
The network pads its input to a multiple of :data:`geoccseg.models.config.OUTPUT_STRIDE` with
shape-dependent branches that a trace cannot keep, so the exported graph takes inputs that are
already a multiple of it (the engine pads them the same way). Each export is checked against
PyTorch on chips of another batch and size before it is used or cached. While it runs, file
descriptors 1 and 2 are silenced (:func:`quiet_output`): where it fails, the exporter's C++ code
prints the whole TorchScript graph there, and the user needs only the one-line error.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from geoccseg import __version__
from geoccseg.errors import GeoccsegError, first_line
from geoccseg.quiet import ignored_warnings
from geoccseg.io.atomic import atomic_path
from geoccseg.models.bundle import state_sha256

log = logging.getLogger(__name__)

EXPORT_FORMAT = "geoccseg-onnx/1"
"""Version of the export (the wrapped graph, its inputs and outputs); part of the cache key."""

OPSET = 17
"""ONNX opset of the export; part of the cache key."""

INPUT = "chips"
"""Name of the graph's input: float32 (B, C, H, W) normalised chips, H and W multiples of 32."""

OUTPUT = "probabilities"
"""Name of the graph's output: float32 (B, K - 1, H, W) softmax probabilities of the foreground classes."""

EMBEDDING = "embedding"
"""Second output of the ``scoring`` graph: float32 (B, D, H / 4, W / 4) stride-4 embeddings of unit norm."""

GRAPHS = ("probabilities", "scoring")
"""Exported graphs: ``probabilities`` (prediction: :data:`OUTPUT`) and ``scoring`` (``geoccseg
suggest``: :data:`OUTPUT` and :data:`EMBEDDING`, for networks whose ``forward`` returns ``logits``
and ``embed``, :class:`geoccseg.models.FusionSegNet`)."""

CHECK_TOLERANCE = 1e-3
"""Largest difference of probabilities (0-1) between an fp32 export and PyTorch accepted by the check."""

CACHE_ENV = "GEOCCSEG_CACHE"
"""Environment variable naming the cache folder."""

CACHE_WARN_BYTES = 1 << 30
"""Size of the cached exports above which each new export warns (1 GiB: about 80 fp32 exports)."""

_EXPORT_NAME = re.compile(r"[0-9a-f]{64}\.(onnx|json)")
"""File names of the cache's exports and their sidecars (a key is a hex SHA-256)."""


def cache_dir() -> Path:
    """The user cache folder: ``$GEOCCSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/geoccseg``, else
    ``~/.cache/geoccseg``. Exported networks go to its ``onnx`` subfolder; deleting it is safe."""
    try:
        if os.environ.get(CACHE_ENV):
            return Path(os.environ[CACHE_ENV]).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base).expanduser() / "geoccseg"
    except RuntimeError:  # no HOME and no entry in the user database (some containers)
        raise GeoccsegError(f"no home folder to keep caches in; set {CACHE_ENV} to a folder of your own") from None


def export_key(model: torch.nn.Module, in_channels: int, precision: str = "fp32", calibration: dict | None = None,
               graph: str = "probabilities") -> str:
    """The cache key of a network's export: hex SHA-256 of :data:`EXPORT_FORMAT`, :data:`OPSET`,
    the geoccseg version, ``precision``, the input bands, the architecture (``model.config`` when the network has one,
    else its class), :func:`~geoccseg.models.bundle.state_sha256`, for a quantised model what it was calibrated on, and
    the graph unless it is ``probabilities`` (:data:`GRAPHS`)."""
    config = getattr(model, "config", None)
    record = {
        "format": EXPORT_FORMAT, "opset": OPSET, "geoccseg_version": __version__, "precision": precision, "in_channels": in_channels,
        "architecture": config.to_dict() if hasattr(config, "to_dict") else f"{type(model).__module__}.{type(model).__qualname__}",
        "weights_sha256": state_sha256(model),
        **({"calibration": calibration} if calibration is not None else {}),
        **({"graph": graph} if graph != "probabilities" else {}),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def exported_model(model: torch.nn.Module, in_channels: int, key: str | None = None, graph: str = "probabilities") -> bytes:
    """The ONNX model of ``model`` (fp32), from the cache when a valid export is there, else exported now and cached.

    Args:
        model: the network (on the CPU, eval mode), with ``forward_logits`` ((B, C, H, W) -> (B, K, H, W)).
        in_channels: C, the bands of the chips (the bundle's bands).
        key: :func:`export_key` of ``model`` and ``graph`` when the caller has it already.
        graph: one of :data:`GRAPHS`.

    Returns:
        The bytes of the ONNX model (input :data:`INPUT`, output :data:`OUTPUT`, and :data:`EMBEDDING` for ``scoring``).

    Raises:
        GeoccsegError: the network cannot be exported, or its export does not match PyTorch.
    """
    return cached(key or export_key(model, in_channels, graph=graph), lambda: export_onnx(model, in_channels, graph))


def cached(key: str, produce: Callable[[], bytes]) -> bytes:
    """The ONNX model cached under ``key`` when it matches its record, else ``produce()``, cached now.

    Raises:
        GeoccsegError: what ``produce`` raises.
    """
    try:
        folder = cache_dir() / "onnx"
    except GeoccsegError as exc:
        log.warning("geoccseg: warning: %s; the network is exported for this run only", exc)
        return produce()
    path, sidecar = folder / f"{key}.onnx", folder / f"{key}.json"
    why = untrusted(folder)
    if why is not None:
        log.warning("geoccseg: warning: the ONNX cache folder %s is %s, so it is neither read nor written; the network "
                    "is exported for this run only (make it yours alone with chmod 700, or set %s to a folder of your own)",
                    folder, why, CACHE_ENV)
        return produce()
    data = read_cached(path, sidecar, key)
    if data is not None:
        return data
    data = produce()
    try:
        write_cached(path, sidecar, key, data)
    except (OSError, GeoccsegError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(
            "geoccseg: warning: cannot write the ONNX cache in %s (%s); the network was exported for this run only "
            "(set %s to a writable folder to keep it)", folder, reason, CACHE_ENV,
        )
        return data
    exports, size = cache_usage()
    if size > CACHE_WARN_BYTES:
        log.warning("geoccseg: warning: the ONNX cache in %s holds %d exports, %.0f MB; `geoccseg cache --clear` empties it",
                    folder, exports, size / 1e6)
    return data


def cache_files() -> list[Path]:
    """The exports and sidecars in the cache's ``onnx`` folder, sorted: files of this user named by
    a key (a sidecar only when it records that key); other files are not listed."""
    folder = cache_dir() / "onnx"
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if _EXPORT_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    return sorted(p for p in files if untrusted(p) != "owned by another user" and (p.suffix == ".onnx" or _records(p, p.stem)))


def _records(sidecar: Path, key: str) -> bool:
    """The JSON file ``sidecar`` is a cache record of ``key``."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("key") == key


def cache_usage() -> tuple[int, int]:
    """(exports, bytes of the exports and their sidecars) in the cache (:func:`cache_files`)."""
    files = [(f, _size(f)) for f in cache_files()]
    files = [(f, size) for f, size in files if size is not None]  # removed meanwhile (another process clearing)
    return sum(f.suffix == ".onnx" for f, _ in files), sum(size for _, size in files)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def untrusted(path: Path) -> str | None:
    """Why a cache file or folder must not be trusted (``a symbolic link``, ``owned by another
    user``, ``writable by other users``), or None: it is this user's alone, or it does not exist.
    Where the system has no user ids (Windows) the user's profile folders are trusted."""
    if not hasattr(os, "geteuid"):
        return None
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent (a file where a folder above it should be)
        return None
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if info.st_uid != os.geteuid():
        return "owned by another user"
    if info.st_mode & 0o022:
        return "writable by other users"
    return None


def clear_cache() -> tuple[int, int]:
    """Remove the cached exports and their sidecars (:func:`cache_files`), nothing else.

    Returns:
        (exports removed, bytes freed).

    Raises:
        GeoccsegError: a file cannot be removed.
    """
    removed, freed = 0, 0
    for path in cache_files():
        size = _size(path)
        if size is None:
            continue  # removed meanwhile
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise GeoccsegError(f"cannot remove {path} ({exc.strerror}); check the permissions of {path.parent}") from None
        removed += path.suffix == ".onnx"
        freed += size
    return removed, freed


def read_cached(path: Path, sidecar: Path, key: str) -> bytes | None:
    """The bytes of a cached export when its sidecar records ``key`` and their SHA-256; None otherwise.

    A missing record is a first export (or one being written: the export goes into place before
    its record); an export that does not match its record (another key, a truncated or changed
    file) is reported with a warning and exported again by the caller.
    """
    if not sidecar.is_file():  # a first export, or one whose writer has not written its record yet
        return None
    why = untrusted(path) or untrusted(sidecar)
    if why is not None:
        log.warning("geoccseg: warning: the cached ONNX model %s or its record is %s; not used, exporting it again", path, why)
        return None
    try:
        record = json.loads(sidecar.read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        record, data = None, b""
    if isinstance(record, dict) and record.get("key") == key and record.get("onnx_sha256") == hashlib.sha256(data).hexdigest():
        return data
    log.warning("geoccseg: warning: the cached ONNX model %s does not match its record (stale or damaged); exporting it again", path)
    return None


def write_cached(path: Path, sidecar: Path, key: str, data: bytes) -> None:
    """Write an export and then its sidecar into the cache, each atomically (replacing what is there).

    Raises:
        OSError, GeoccsegError: the cache folder cannot be created or written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the folder only this user may write (:func:`untrusted`)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(data)
    os.chmod(path, 0o600)
    record = {"key": key, "onnx_sha256": hashlib.sha256(data).hexdigest(), "geoccseg_version": __version__,
              "format": EXPORT_FORMAT, "opset": OPSET, "torch_version": torch.__version__}
    with atomic_path(sidecar, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    os.chmod(sidecar, 0o600)


class _Probabilities(torch.nn.Module):
    """The ``probabilities`` graph: foreground softmax probabilities of a network's logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, chips: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.forward_logits(chips).softmax(dim=1)[:, 1:],)


class _Scoring(torch.nn.Module):
    """The ``scoring`` graph: foreground softmax probabilities and the stride-4 embeddings of one
    forward pass of a :class:`~geoccseg.models.FusionSegNet`: its ``forward`` without the crop of the
    embeddings to ``ceil(H / 4)``, which a trace would fix to the example's size (the graph's
    inputs are multiples of the stride, where the crop keeps everything)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, chips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.model._fused(chips)
        logits = self.model._logits(fused, *chips.shape[-2:])
        return logits.softmax(dim=1)[:, 1:], torch.nn.functional.normalize(self.model.proj_head(fused), dim=1)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Send the process's file descriptors 1 and 2 to the null device while the block runs, and
    restore them afterwards, also when it raises.

    This silences what C++ code prints (the exporter's "Torch IR graph at exception" dump), which
    ``sys.stdout`` redirections do not reach; Python's own streams are flushed before and after, so
    nothing written before the block is lost and nothing written in it leaks out. A descriptor
    that is not open is left alone. Other threads' output is silenced too while the block runs.
    """
    _flush_streams()
    saved: list[tuple[int, int]] = []
    try:
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # not open: nothing to silence
                    continue
                os.dup2(null.fileno(), fd)
            yield
    finally:
        _flush_streams()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _flush_streams() -> None:
    """Flush ``sys.stdout`` and ``sys.stderr`` where they exist and can be flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


def export_onnx(model: torch.nn.Module, in_channels: int, graph: str = "probabilities") -> bytes:
    """Export a network (followed by its foreground softmax) for chips of ``in_channels`` bands to
    ONNX as one of :data:`GRAPHS`, and check it against PyTorch.

    Raises:
        GeoccsegError: the ``onnx`` package is missing, the exporter fails (for ``scoring``: also a
            network without embeddings), or the export differs from PyTorch by more than
            :data:`CHECK_TOLERANCE` on a check batch.
    """
    from geoccseg.models.config import OUTPUT_STRIDE

    wrapped = (_Probabilities if graph == "probabilities" else _Scoring)(model).eval()
    outputs = [OUTPUT] if graph == "probabilities" else [OUTPUT, EMBEDDING]
    example = torch.zeros(2, in_channels, 2 * OUTPUT_STRIDE, 2 * OUTPUT_STRIDE)
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    # the TorchScript exporter: the default up to torch 2.8, ``dynamo=False`` from 2.9 on
    exporter = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    try:
        with ignored_warnings(), torch.no_grad(), quiet_output():  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                wrapped, (example,), buffer, opset_version=OPSET, input_names=[INPUT], output_names=outputs,
                dynamic_axes={name: axes for name in (INPUT, *outputs)}, **exporter,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one line
        raise GeoccsegError(f"cannot export the network to ONNX ({first_line(exc)}); use --engine torch") from None
    data = buffer.getvalue()
    check_export(data, wrapped, in_channels)
    return data


def check_export(data: bytes, wrapped: torch.nn.Module, in_channels: int) -> None:
    """Run an export on a check batch of another batch size and shape (3 chips of 96 x 64 px) and
    compare each of its outputs with PyTorch's.

    Raises:
        GeoccsegError: a difference above :data:`CHECK_TOLERANCE`.
    """
    from geoccseg.inference.engine import onnx_session

    generator = torch.Generator().manual_seed(0)
    chips = torch.rand(3, in_channels, 96, 64, generator=generator) - 0.5
    session = onnx_session(data, threads=1)
    try:
        got = session.run(None, {INPUT: chips.numpy()})
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, one line
        raise GeoccsegError(f"ONNX Runtime cannot run the network's export ({first_line(exc)}); use --engine torch") from None
    with torch.inference_mode():
        expected = [out.numpy() for out in wrapped(chips)]
    for name, a, b in zip([o.name for o in session.get_outputs()], got, expected):
        difference = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        if not difference <= CHECK_TOLERANCE:
            raise GeoccsegError(f"the network's ONNX export differs from PyTorch ({name} by up to {difference:.3g}); use --engine torch")
    if len(got) != len(expected):
        raise GeoccsegError(f"the network's ONNX export has {len(got)} outputs instead of {len(expected)}; use --engine torch")

