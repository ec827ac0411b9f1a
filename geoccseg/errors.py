"""The one exception type that reaches users as a one-line message.

Every check of user input (files, CRS, bands, classes, options) raises :class:`GeoccsegError`
with a message that says what is wrong and how to fix it. The CLI prints it on one line and exits
with status 2; Python callers catch it like any exception. Anything else that escapes is a bug and
keeps its traceback.
"""

from __future__ import annotations


class GeoccsegError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
