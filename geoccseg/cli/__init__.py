"""The ``geoccseg`` command: a thin click layer over the Python API.

Each sub-command lives in its own module and only parses options, calls the API and prints.
User errors (:class:`geoccseg.errors.GeoccsegError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import click

from geoccseg.errors import GeoccsegError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: D102
        try:
            return super().invoke(ctx)
        except GeoccsegError as exc:
            click.echo(f"geoccseg: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="geoccseg")
def cli() -> None:
    """Extract roads and cracks from imagery with very few labels."""


def _register() -> None:
    import importlib

    for name in ("info", "train", "predict", "vectorize", "evaluate", "demo"):
        try:
            module = importlib.import_module(f"geoccseg.cli.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name != f"geoccseg.cli.{name}":
                raise
            continue
        cli.add_command(module.command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="geoccseg")
