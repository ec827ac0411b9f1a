"""Options that apply to one kind of input only (georeferenced scenes or photos), shared by the commands that take both."""

from __future__ import annotations

import click
from click.core import ParameterSource

from geoccseg.errors import GeoccsegError


def refuse_options(ctx: click.Context, names: tuple[str, ...], kind: str, hint: str = "") -> None:
    """Refuse, in one line, options given on the command line that only apply to ``kind`` of input.

    Args:
        ctx: the running command's context.
        names: parameter names of the options that apply to ``kind`` only.
        kind: the inputs they apply to, e.g. ``georeferenced scenes``.
        hint: appended to "leave it out", e.g. `` for photos``.

    Raises:
        GeoccsegError: one of ``names`` was given on the command line.
    """
    given = [f"--{name.replace('_', '-')}" for name in names if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given:
        raise GeoccsegError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to {kind}; "
                            f"leave {'it' if len(given) == 1 else 'them'} out{hint}")
