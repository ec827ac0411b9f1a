"""Where the blocks of a run on an existing Dask cluster (``--scheduler``) can run.

The client that submits the blocks is often another machine than the workers that run them (a
laptop and GPU nodes; a GPU workstation and CPU nodes). What the run computes on (the device) and
with what (the engine and its packages) is therefore settled against the workers, probed once with
``client.run``: ``--device auto`` predicts on CUDA when every worker has a GPU, a device or an engine
that a worker cannot run is refused before any block, naming the worker, and an engine that
``auto`` chose falls back to ``torch`` where a worker lacks its packages. The client exports the
network first (a failing export is told before any block), so an exported engine needs its
packages on the client too; each worker exports it again into its own user cache. Workers that join after the probe are not asked: give a run workers
of one kind. (A local cluster, ``--workers N``, runs this machine's installation.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from geoccseg.errors import GeoccsegError

if TYPE_CHECKING:  # pragma: no cover
    import distributed

log = logging.getLogger(__name__)

ENGINE_PACKAGES = {"onnx": "ONNX Runtime and onnx", "openvino": "OpenVINO, ONNX Runtime and onnx"}
"""What an exported engine needs installed (:data:`~geoccseg.inference.engine.ONNX_PACKAGES`,
:data:`~geoccseg.inference.engine.OPENVINO_PACKAGES`), as the messages name it."""


def worker_capabilities(bf16: bool = False) -> dict:
    """What this process can run (called on each worker by :func:`probe_workers`): its CUDA GPUs,
    whether the packages of the ``onnx`` and ``openvino`` engines are installed, and, asked with
    ``bf16`` (OpenVINO is then imported), whether OpenVINO runs bfloat16 on its CPU."""
    from geoccseg.inference.engine import cpu_has_bf16, onnx_available, openvino_available

    openvino = openvino_available()
    runs_bf16 = False
    if bf16 and openvino:
        try:
            runs_bf16 = cpu_has_bf16()
        except GeoccsegError:  # installed but cannot be imported
            openvino = False
    return {"cuda_gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "onnx": onnx_available(), "openvino": openvino, "openvino_bf16": runs_bf16}


def probe_workers(client: distributed.Client, precision: str = "fp32") -> dict[str, dict]:
    """:func:`worker_capabilities` of every worker of ``client``'s cluster, by worker address
    (bfloat16 asked only at ``precision`` bf16).

    Raises:
        GeoccsegError: a worker cannot import geoccseg (not installed there, or another version).
    """
    try:
        return client.run(worker_capabilities, bf16=precision == "bf16")
    except ImportError as exc:
        raise GeoccsegError(f"a worker of the Dask cluster cannot run geoccseg ({exc}); install the same geoccseg on every "
                            "worker as on this machine") from None


def parse_device(device: str) -> torch.device:
    """A device named by the user (not ``auto``) as torch reads it: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        GeoccsegError: a name torch does not know, or a device geoccseg does not run on.
    """
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise GeoccsegError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if parsed.type not in ("cpu", "cuda"):
        raise GeoccsegError(f"device {device!r} is not supported; use auto, cpu or cuda")
    return parsed


def cluster_device(requested: str, workers: dict[str, dict]) -> str:
    """The device the blocks run on, for the ``workers``' capabilities (:func:`probe_workers`):
    ``auto`` is ``cuda`` when every worker has a CUDA GPU, else ``cpu``; ``cuda`` (``cuda:N``) is
    refused when a worker has none (or fewer than N + 1).

    Raises:
        GeoccsegError: an unknown device, or a CUDA device a worker does not have.
    """
    if requested == "auto":
        return "cuda" if workers and all(w["cuda_gpus"] > 0 for w in workers.values()) else "cpu"
    parsed = parse_device(requested)
    if parsed.type == "cuda":
        needed = (parsed.index or 0) + 1
        short = sorted(address for address, w in workers.items() if w["cuda_gpus"] < needed)
        if short:
            has = workers[short[0]]["cuda_gpus"]
            raise GeoccsegError(f"--device {requested}: {_named(short)} "
                                f"{'has no CUDA GPU' if not has else f'has {has} CUDA GPU(s)'}; use --device auto (CUDA only where every "
                                "worker has a GPU) or cpu, or workers with GPUs")
    return requested


def cluster_engine(engine: str, requested: str, precision: str, workers: dict[str, dict]) -> str:
    """``engine``, settled on the client, if every worker can run it; else ``torch`` when the user
    asked for ``auto`` (with a warning), and a refusal for an engine asked by name.

    Raises:
        GeoccsegError: a worker lacks the packages of the engine asked for (or, at bf16, a CPU that
            OpenVINO runs it on).
    """
    if engine not in ENGINE_PACKAGES:
        return engine
    key = "openvino_bf16" if engine == "openvino" and precision == "bf16" else engine
    lacking = sorted(address for address, w in workers.items() if not w[key])
    if not lacking:
        return engine
    which = _named(lacking)
    if key == "openvino_bf16":
        problem, remedy = f"{which} has no CPU with bfloat16 instructions for OpenVINO", "use --precision fp32 or --engine torch"
    else:
        instead = "--precision fp32" if precision == "int8" else "--engine torch"  # int8 runs on onnx only
        problem, remedy = f"{which} has no {ENGINE_PACKAGES[engine]}", f"install them on every worker, or use {instead}"
    if requested == "auto" and precision != "int8":
        log.warning("geoccseg: warning: %s; running the torch engine there", problem)
        return "torch"
    asked = f"--engine {engine}" if requested != "auto" else f"--precision {precision} (the {engine} engine)"
    raise GeoccsegError(f"{asked}: {problem}; {remedy}")


def _named(addresses: list[str]) -> str:
    """The first of some workers by address, and how many more: what the messages name."""
    return f"the Dask worker {addresses[0]}{f' and {len(addresses) - 1} more' if len(addresses) > 1 else ''}"


def settle_on_workers(client: distributed.Client, device: str, engine: str, precision: str,
                      settle: Callable[[str], str]) -> tuple[str, str]:
    """The device and engine of a run on ``client``'s cluster: the device the workers have
    (:func:`cluster_device`), and the engine ``settle(device)`` settles on the client (exporting
    the network once) if every worker can run it (:func:`cluster_engine`).

    Args:
        client: a client of an existing Dask cluster.
        device, engine, precision: as the user gave them (``--device``, ``--engine``, ``--precision``).
        settle: the engine name for a resolved device (prediction's or scoring's settle function).

    Raises:
        GeoccsegError: a device or engine a worker cannot run.
    """
    workers = probe_workers(client, precision)
    resolved = cluster_device(device, workers)
    return resolved, cluster_engine(settle(resolved), engine, precision, workers)
