"""How the network runs over the inputs (chips, batches, device, Dask blocks and workers): the
options of :class:`~geoccseg.inference.predict.PredictOptions`, defined once for ``geoccseg
predict`` and ``geoccseg suggest``."""

from __future__ import annotations

from collections.abc import Callable

import click

from geoccseg.inference.choices import DEFAULT_OVERLAP_PX


def run_options(scene: str, tile_floor: int) -> Callable[[Callable], Callable]:
    """Add ``--tile-px``, ``--overlap-px``, ``--block-px``, ``--batch-size``, ``--device``,
    ``--workers`` and ``--scheduler`` to a click command function, one keyword argument each.

    Args:
        scene: how the command's help names its georeferenced inputs (``Scene`` or ``Scenes``):
            the prefix of the options that apply to them only.
        tile_floor: the smallest default chip edge of the command, in pixels (the default is the
            bundle's training tile, raised to this).
    """
    options = (
        click.option("--tile-px", type=int, help=f"Chip edge in model pixels [the bundle's training tile, at least {tile_floor}]."),
        click.option("--overlap-px", type=int, default=DEFAULT_OVERLAP_PX, show_default=True,
                     help="Overlap of neighbouring chips in pixels."),
        click.option("--block-px", type=int, default=2048, show_default=True,
                     help=f"{scene}: block edge in pixels (one task each; memory; predict traces lines in blocks of twice it, 1024-4096 px)."),
        click.option("--batch-size", type=int,
                     help="Chips per forward pass [512² chip pixels on the CPU (4 chips of 256 px, 1 of 512 px or more), "
                          "8 x 512² on CUDA]."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="Where the model runs (mixed precision on CUDA)."),
        click.option("--workers", type=int, help=f"{scene}: run blocks on a local Dask cluster of N worker processes."),
        click.option("--scheduler", help=f"{scene}: run blocks on an existing Dask cluster (tcp://host:8786)."),
    )

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
