"""Warnings ignored in blocks that run in several threads at once (geoccseg.quiet)."""

from __future__ import annotations

import threading
import time
import warnings

from geoccseg.quiet import ignored_warnings


def test_blocks_of_two_threads_leave_the_process_filters_as_they_were() -> None:
    """A raster opened in Dask threads (open_raster) and the ONNX export ignored warnings with
    warnings.catch_warnings, which swaps the process-wide filter list: when a second thread entered
    before the first left, the first one's temporary filter stayed in force for good (after an
    export, every warning of the process was lost). The blocks now take turns."""
    before = list(warnings.filters)
    a_inside, b_tries, a_left = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with ignored_warnings(UserWarning):
            a_inside.set()
            b_tries.wait(10)
            time.sleep(0.2)  # B would be inside by now, were the blocks not taking turns
        a_left.set()

    def b() -> None:
        a_inside.wait(10)
        b_tries.set()
        with ignored_warnings(DeprecationWarning):
            a_left.wait(10)  # B leaves after A: it put back the list it found, A's

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("still heard", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["still heard"]
