"""Warnings ignored for the length of a block, safely from several threads.

``warnings.catch_warnings`` saves the process-wide filter list on entry and puts it back on exit
(Python 3.11-3.13): two threads inside such blocks at once could leave one block's temporary
filter in force for good (after an export that ignores every warning, all warnings of the process
would be lost). The blocks of :func:`ignored_warnings` take turns under one lock. Keep them short,
and never compute a Dask graph inside one: its threads may open rasters, which waits for the lock.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

_LOCK = threading.Lock()


@contextlib.contextmanager
def ignored_warnings(category: type[Warning] = Warning) -> Iterator[None]:
    """Ignore warnings of ``category`` while the block runs (in every thread, as the filters are the process's)."""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield
