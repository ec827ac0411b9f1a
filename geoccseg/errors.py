"""The one exception type that reaches users as a one-line message.

Every check of user input (files, CRS, bands, classes, options) raises :class:`GeoccsegError`
with a message that says what is wrong and how to fix it. The CLI prints it on one line and exits
with status 2; Python callers catch it like any exception. Anything else that escapes is a bug and
keeps its traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    :class:`GeoccsegError` quotes of a library's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GeoccsegError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        text = str(message)
        if text.startswith(_WORKER_PREFIX) and _LAST_LINE in text:
            # PyTorch raises a DataLoader worker's error again in the training process with the
            # worker's whole traceback as its message: keep the worker's own message
            text = text.rsplit(_LAST_LINE, 1)[1]
        super().__init__(" ".join(text.split()))


_WORKER_PREFIX = "Caught GeoccsegError in DataLoader worker"
"""How ``torch.utils.data``'s ExceptionWrapper begins the message of an error raised in a worker."""

_LAST_LINE = f"{GeoccsegError.__module__}.GeoccsegError: "
"""How the worker's traceback, in that message, begins its last line: the original message."""
