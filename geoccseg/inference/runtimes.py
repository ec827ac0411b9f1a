"""The inference runtimes, imported with their usage telemetry off.

Nothing of the user's may leave their machine, and both runtimes of the exported engines report
usage by default:

- **ONNX Runtime** (the ``onnx`` engine, the default on the CPU; 1.2x and later on Linux and macOS):
  a native telemetry client that, from the first session on, writes a device id and a queue of
  events (process, CPU, OS, container, error messages) under ``~/.cache/Microsoft/DeveloperTools``
  and uploads them to Microsoft. Its opt-out, the environment variable :data:`ORT_TELEMETRY_ENV`,
  is read once, when ONNX Runtime initialises, so :func:`import_onnxruntime` sets it (unless the
  user set it) before ``onnxruntime`` is imported; with it nothing is written or sent.
- **OpenVINO** (the optional ``openvino`` engine): ``import openvino`` imports its model converter,
  which sends an event to Google Analytics on every import (from a forked process) and writes a
  client id under ``~/intel``, unless the user opted out with OpenVINO's ``opt_in_out --opt_out``.
  :func:`import_openvino` hides the telemetry package while OpenVINO is imported: the converter
  then takes its built-in no-op stub, as where the package is not installed, for the whole process.

Every import of either runtime in geoccseg goes through these two functions. Where the user's own
code imported a runtime first, that import stands as it was (its telemetry is the user's choice).
"""

from __future__ import annotations

import os
import sys
import types

from geoccseg.errors import GeoccsegError, first_line

ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
"""ONNX Runtime's telemetry opt-out (``1``), read when it initialises."""

OPENVINO_TELEMETRY_PACKAGE = "openvino_telemetry"
"""OpenVINO's usage-telemetry package (a dependency of ``openvino``)."""


def import_onnxruntime() -> types.ModuleType:
    """The ``onnxruntime`` module, with :data:`ORT_TELEMETRY_ENV` set to ``1`` first unless the user
    set it (it is inherited by this process's children, Dask workers included)."""
    os.environ.setdefault(ORT_TELEMETRY_ENV, "1")
    try:
        import onnxruntime
    except (ImportError, OSError) as exc:
        raise _broken("ONNX Runtime", "onnxruntime", exc) from None
    return onnxruntime


def import_openvino() -> types.ModuleType:
    """The ``openvino`` module, imported with its usage telemetry replaced by OpenVINO's no-op stub
    (see the module's docstring); an ``openvino`` imported before is returned as it is."""
    if "openvino" in sys.modules or OPENVINO_TELEMETRY_PACKAGE in sys.modules:
        import openvino

        return openvino
    sys.modules[OPENVINO_TELEMETRY_PACKAGE] = None  # "not installed", to the import system
    try:
        import openvino
    except (ImportError, OSError) as exc:
        raise _broken("OpenVINO", "openvino", exc) from None
    finally:
        del sys.modules[OPENVINO_TELEMETRY_PACKAGE]
    return openvino


def _broken(runtime: str, package: str, exc: BaseException) -> GeoccsegError:
    """The one-line error of a runtime that is installed but fails to import (a wheel built for
    another NumPy, a missing system library); ``--engine auto`` falls back to torch on it."""
    return GeoccsegError(f"{runtime} is installed but cannot be imported ({first_line(exc)}; pip install --force-reinstall {package} "
                         "may mend it); use --engine torch")
