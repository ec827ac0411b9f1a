"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (``kill``, job schedulers).

While the data is read, a signal stops the run at once: nothing has been trained. Once Lightning
trains, SIGTERM makes it finish the current step (and its validation) and raise
``SIGTERMException``; SIGINT is handed to the same handler, so both stop alike, on every DDP rank.
A second Ctrl-C stops at once. :func:`geoccseg.train.train` then saves the step reached, marks the
bundle as interrupted and raises :class:`TrainingStopped`, which the CLI prints on one line with
exit status 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading

from geoccseg.errors import GeoccsegError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(GeoccsegError):
    """A run stopped by a signal before its budget: where it stopped and how to continue it.

    Attributes:
        signum: the signal that stopped it.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by ``signum``: 128 + its number."""
        return 128 + self.signum


class StopSignals:
    """Context manager that catches SIGINT and SIGTERM for the duration of a training run.

    Handlers are installed in the main thread only (elsewhere Python does not allow it) and the
    previous ones are restored on exit.

    Attributes:
        signum: the first signal received, or None.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferred = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    def defer(self) -> None:
        """From now on a signal stops the run at the end of a step instead of at once."""
        self._deferred = True

    def raise_if_stopped(self) -> None:
        """Raises TrainingStopped if a signal came before training started."""
        if self.signum is not None:
            raise TrainingStopped(f"training stopped by {self.name} before its first step; nothing was trained", self.signum)

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if not self._deferred:
            self.raise_if_stopped()
        if signum == signal.SIGINT:
            if not first:
                raise KeyboardInterrupt  # a second Ctrl-C: stop at once
            # while Lightning trains, its SIGTERM handler (which calls this one too) stops the run
            # after the current step; before and after, this handler is the SIGTERM one
            term = signal.getsignal(signal.SIGTERM)
            if callable(term) and term != self._handle:
                term(signal.SIGTERM, frame)
