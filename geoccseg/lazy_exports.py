"""A package's public names imported on first use (PEP 562 module ``__getattr__``).

A package's ``__init__`` that imports its heavy submodules makes every light one heavy too:
``geoccseg.train.config`` (a dataclass) loaded Lightning through ``geoccseg/train/__init__.py``,
so ``geoccseg train --help`` took 10 seconds. With :func:`lazy_exports` the ``__init__`` only names
where each public name lives; ``from geoccseg.train import train`` imports it then.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: each of ``names`` (name -> module
    defining it) is imported from its module when first asked for, then kept on the package;
    ``dir()`` (a notebook's tab completion) lists them before that."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
