"""``geoccseg evaluate PRED TRUTH``: score predictions against truth and print a table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate.report import DEFAULT_LINE_WIDTH_M, evaluate
from geoccseg.evaluate.files import match_files
from geoccseg.io.atomic import atomic_path, check_not_input, check_writable


def _parse_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GeoccsegError(f"--classes {text!r} must be comma-separated integers, e.g. 1,2") from None


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Probability threshold (positive when >=).")
@click.option("--tolerance-px", type=float, default=3, show_default=True, help="Relaxed precision/recall tolerance, pixels.")
@click.option("--buffer-m", type=float, default=5.0, show_default=True, help="Centreline buffer, metres.")
@click.option(
    "--line-width-m", type=float, default=DEFAULT_LINE_WIDTH_M, show_default=True,
    help="Width of vector lines burnt onto a raster for pixel metrics, metres.",
)
@click.option("--classes", default=None, help="Class values to score in class maps, e.g. 1,2 (default: binary masks).")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Also write the metrics as JSON to this file (a file there is replaced; never a folder or an input).")
def command(
    pred: Path,
    truth: Path,
    threshold: float,
    tolerance_px: float,
    buffer_m: float,
    line_width_m: float,
    classes: str | None,
    json_path: str | None,  # as typed: a trailing / names a folder
) -> None:
    """Score PRED against TRUTH: files, or folders matched by file name.

    Rasters (GeoTIFF, PNG, JPEG: probabilities, masks or class maps) and vector lines (GeoPackage,
    GeoJSON, FlatGeobuf, Shapefile) can be mixed.
    """
    if json_path is not None:
        check_writable(json_path, overwrite=True, example="scores.json")
        check_not_input(json_path, [path for pair in match_files(pred, truth) for path in pair])
    result = evaluate(
        pred, truth, threshold=threshold, tolerance_px=tolerance_px, buffer_m=buffer_m,
        classes=_parse_classes(classes), line_width_m=line_width_m,
    )
    click.echo(result.format_table())
    if json_path is not None:
        with atomic_path(json_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_path}")
