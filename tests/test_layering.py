"""Each concept has one home, and the layers import downwards only (issue 17, item 12).

``io`` reads and writes files; the networks (``models``) and the method (``losses``) sit above it.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import geoccseg.io

BOTTOM = ("geoccseg.errors", "geoccseg.label_values")
"""Modules below every layer: the one error type and the values of label masks."""


def _modules_loaded_by(module: str) -> list[str]:
    """The ``geoccseg`` modules that importing ``module`` loads, in a fresh interpreter."""
    code = f"import sys, {module}\nprint('\\n'.join(sorted(m for m in sys.modules if m.startswith('geoccseg.'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_io_imports_nothing_above_it() -> None:
    io_modules = [f"geoccseg.io.{m.name}" for m in pkgutil.iter_modules(geoccseg.io.__path__)]
    assert "geoccseg.io.bundle" in io_modules
    loaded = _modules_loaded_by(", ".join(io_modules))
    above = [m for m in loaded if not m.startswith("geoccseg.io") and m not in BOTTOM]
    assert not above, f"geoccseg.io imports {above}"


def test_losses_take_the_ignore_index_from_the_bottom_not_from_io() -> None:
    loaded = _modules_loaded_by("geoccseg.losses")
    assert "geoccseg.label_values" in loaded
    other = [m for m in loaded if not m.startswith("geoccseg.losses") and m not in BOTTOM]
    assert not other, f"geoccseg.losses imports {other}"
