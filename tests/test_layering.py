"""Each concept has one home, and the layers import downwards only (issue 17, item 12).

``io`` reads and writes files; the networks (``models``) and the method (``losses``) sit above it.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import geoccseg.io


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
    above = [m for m in loaded if not m.startswith("geoccseg.io") and m != "geoccseg.errors"]
    assert not above, f"geoccseg.io imports {above}"
