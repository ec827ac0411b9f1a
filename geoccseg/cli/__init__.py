"""The ``geoccseg`` command: a thin click layer over the Python API.

Each sub-command lives in its own module and only parses options, calls the API and prints.
User errors (:class:`geoccseg.errors.GeoccsegError`) become one line on stderr and exit status 2.

The sub-command modules (which import torch, TorchGeo, Lightning, rasterio, ...) are imported only
when their command runs or prints its own help (:data:`COMMANDS`, click's "lazy loading of
subcommands"), so ``geoccseg --help`` and ``--version`` start at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click
from click.utils import make_default_short_help

from geoccseg.errors import GeoccsegError


#: Sub-commands: name -> (module defining ``command``, the command's short help). The short help
#: is what ``geoccseg --help`` lists without importing the module; tests/test_cli_startup.py checks
#: that it is the command's own (the first sentence of its docstring).
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("geoccseg.cli.info",
             "Print size, bands, CRS, pixel size and nodata share of SCENE; with --labels, the chips it yields and the labeled pixels."),
    "models": ("geoccseg.cli.models",
               "List the shipped models with their classes, pixel size, encoder, training data, threshold, test scores and licence."),
    "train": ("geoccseg.cli.train", "Train a model with few labels (semi-supervised) and write a model bundle."),
    "predict": ("geoccseg.cli.predict", "Predict roads or cracks."),
    "suggest": ("geoccseg.cli.suggest", "Suggest where to label next."),
    "vectorize": ("geoccseg.cli.vectorize", "Turn the probability GeoTIFF PROB into polylines written to OUTPUT."),
    "evaluate": ("geoccseg.cli.evaluate", "Score PRED against TRUTH: files, or folders matched by file name."),
    "cache": ("geoccseg.cli.cache", "Show the cache of exported networks (folder, exports, size); --clear empties it."),
    "demo": ("geoccseg.cli.demo",
             "Map the sample scene's roads with the shipped model, then label its western 40 %, fine-tune on it and map "
             "the rest (1-2 minutes on 2 CPU cores); print both scores on the unlabeled 60 %."),
}


def _available(name: str) -> bool:
    """Whether the module of sub-command ``name`` exists (found without importing it)."""
    return name in COMMANDS and importlib.util.find_spec(COMMANDS[name][0]) is not None


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: D102
        return sorted(set(super().list_commands(ctx)) | {name for name in COMMANDS if _available(name)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: D102
        if cmd_name not in self.commands and _available(cmd_name):
            self.add_command(importlib.import_module(COMMANDS[cmd_name][0]).command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the sub-commands with their short help from :data:`COMMANDS`, importing none of them."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(COMMANDS[name][1], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


def _raise_open_file_limit() -> None:
    """Let this process open as many files as the system allows it (its hard limit, up to 65536):
    every thread that reads a scene holds its own handle, so a training on 100 tiles with 16 threads
    holds 1600 files, past Linux's usual soft limit of 1024 (macOS: 256)."""
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (65536, 10240, 4096):  # macOS refuses more than its per-process maximum (10240 on many Macs), even under an infinite hard limit
        wanted = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return
        except (OSError, ValueError):  # try a lower one; a sandbox that refuses them all: the error, if it comes, says what to do
            continue


def main() -> None:
    """Console-script entry point."""
    _raise_open_file_limit()
    cli(prog_name="geoccseg")
