"""``geoccseg cache``: where the exported networks of ``predict --engine onnx`` and ``openvino`` are kept, and emptying it."""

from __future__ import annotations

import click

from geoccseg.cli.verbosity import verbosity_options


@click.command("cache")
@click.option("--clear", is_flag=True, help="Remove the cached exports (they are made again when needed); nothing else.")
@verbosity_options
def command(clear: bool) -> None:
    """Show the cache of exported networks (folder, exports, size); --clear empties it."""
    from geoccseg.inference.export import CACHE_ENV, cache_dir, cache_usage, clear_cache  # PyTorch: not for --help

    folder = cache_dir() / "onnx"
    if clear:
        removed, freed = clear_cache()
        click.echo(f"removed {removed} export(s), {freed / 1e6:.1f} MB, from {folder}")  # the result: shown under -q too
        return
    exports, size = cache_usage()
    click.echo(f"{folder}: {exports} export(s), {size / 1e6:.1f} MB (set {CACHE_ENV} to move it; `geoccseg cache --clear` empties it)")
