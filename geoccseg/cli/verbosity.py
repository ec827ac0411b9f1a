"""``-v/--verbose`` and ``-q/--quiet``, shared by every command, and what they decide.

The level is the one setting behind everything a command prints besides its result:

- quiet (``-q``): no progress bars, no notes, no warnings or library log lines; only errors (on
  stderr) and the command's final result (its one-line summary, or the table or JSON it exists for);
- normal: progress bars where stderr is a terminal (never in a pipe, a file or a CI log), notes on
  stderr and the command's report on stdout;
- verbose (``-v``): as normal, plus the resolved value of every option and where it came from
  (command line, default, environment) and the details a command adds (:func:`detail`), on stderr.

The Python API takes the outcome as ``progress=`` (a bool); commands pass :func:`show_progress`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator

import click
from click.core import ParameterSource

from geoccseg.errors import GeoccsegError

QUIET, NORMAL, VERBOSE = -1, 0, 1
"""The levels, as :func:`level` returns them."""

_KEY = "geoccseg.verbosity"
_QUIETED_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "geoccseg", "distributed")
_SOURCES = {
    ParameterSource.COMMANDLINE: "command line", ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.DEFAULT: "default", ParameterSource.DEFAULT_MAP: "default map",
}


def level() -> int:
    """The running command's level (:data:`QUIET`, :data:`NORMAL` or :data:`VERBOSE`); normal outside a command."""
    ctx = click.get_current_context(silent=True)
    return NORMAL if ctx is None else ctx.meta.get(_KEY, NORMAL)


def show_progress() -> bool:
    """Whether to draw progress bars: not with ``-q``, and only where stderr is a terminal."""
    return level() > QUIET and sys.stderr.isatty()


def say(message: str, err: bool = False) -> None:
    """Print a line of the command's report (stdout) or a note (``err``: stderr), unless ``-q``."""
    if level() > QUIET:
        click.echo(message, err=err)


def detail(message: str) -> None:
    """Print a detail on stderr with ``-v`` only (resolved settings, timings)."""
    if level() >= VERBOSE:
        click.echo(message, err=True)


def _remember(flag: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def store(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        ctx.meta.setdefault("geoccseg.verbosity_flags", set())
        if value:
            ctx.meta["geoccseg.verbosity_flags"].add(flag)
    return store


def _describe_options(ctx: click.Context) -> None:
    """The resolved value of every option of the running command, one per line on stderr."""
    for param in ctx.command.params:
        if param.name not in ctx.params or not isinstance(param, click.Option):
            continue
        value = ctx.params[param.name]
        shown = "unset" if value is None or value == () else value if not isinstance(value, tuple) else ", ".join(map(str, value))
        source = _SOURCES.get(ctx.get_parameter_source(param.name), "default")
        click.echo(f"geoccseg {ctx.info_name}: {param.opts[-1]} = {shown} ({source})", err=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings ignored and library log lines below ERROR dropped, for the duration (restored after)."""
    loggers = [logging.getLogger(name) for name in _QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, previous in zip(loggers, levels):
                logger.setLevel(previous)


def verbosity_options(command: Callable) -> Callable:
    """Add ``-v/--verbose`` and ``-q/--quiet`` to a click command function (the decorator right above ``def``,
    so they are listed last).

    The options are not passed to the function: it reads the level through :func:`level`,
    :func:`show_progress`, :func:`say` and :func:`detail`.

    Raises:
        GeoccsegError: (when the command runs) both ``-v`` and ``-q`` were given.
    """

    @functools.wraps(command)
    def run(*args, **kwargs):
        ctx = click.get_current_context()
        flags = ctx.meta.pop("geoccseg.verbosity_flags", set())
        if len(flags) > 1:
            raise GeoccsegError("-v/--verbose and -q/--quiet exclude each other; give one of them")
        ctx.meta[_KEY] = QUIET if "quiet" in flags else VERBOSE if "verbose" in flags else NORMAL
        if ctx.meta[_KEY] == VERBOSE:
            _describe_options(ctx)
        with _quiet() if ctx.meta[_KEY] == QUIET else contextlib.nullcontext():
            return command(*args, **kwargs)

    run = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_remember("quiet"),
                       help="Print only errors and the final result: no progress bars, notes or warnings.")(run)
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_remember("verbose"),
                        help="Also print the resolved value of every option and further details, on stderr.")(run)
