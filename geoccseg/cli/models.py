"""``geoccseg models``: the shipped models, as their bundles describe them (no torch: starts at once)."""

from __future__ import annotations

import json

import click

from geoccseg.cli.verbosity import verbosity_options
from geoccseg.io.catalog import ModelCard, shipped_model_cards


_ORDER = {"labeled": 0, "train": 1, "select": 2, "test": 3}


def _scores(table: dict[str, dict[str, float]]) -> str:
    parts = []
    for name, scores in table.items():
        values = ", ".join(f"{key} {value:.3f}" for key, value in scores.items() if key != "n_test")
        parts.append(f"{name} ({scores['n_test']} images): {values}" if "n_test" in scores else f"{name}: {values}")
    return "; ".join(parts) or "none recorded"


def _data(card: ModelCard) -> str:
    parts = []
    for name, counts in card.training_data.items():
        keys = sorted((key for key in counts if key != "folder"), key=lambda key: (_ORDER.get(key, len(_ORDER)), key))
        sizes = ", ".join(f"{counts[key]} {key}" for key in keys if counts[key] is not None)
        parts.append(f"{name} ({counts['folder']}: {sizes})" if "folder" in counts else f"{name} ({sizes})")
    return "; ".join(parts) or "not recorded"


def _text(card: ModelCard) -> list[str]:
    scale = f"{card.pixel_size_m:g} m" if card.pixel_size_m is not None else "none (photos of any scale)"
    start = card.pretrained.get("data")
    return [
        f"{card.name}",
        f"  classes:        {', '.join(card.classes)}",
        f"  pixel size:     {scale}; chips of {card.tile_px} px; bands {', '.join(map(str, card.bands))}",
        f"  encoder:        {card.encoder}" + (f", started from its {start} weights" if start else ", trained from scratch"),
        f"  training data:  {_data(card)}" + (f"; {card.steps} steps" if card.steps else ""),
        f"  threshold:      {card.threshold if card.threshold is not None else 0.5}",
        f"  test scores:    {_scores(card.test_scores)}",
        f"  other data:     {_scores(card.transfer_scores)}",
        f"  licence:        {card.licence or 'not recorded'}",
        f"  bundle:         {card.path} (weights SHA-256 {card.weights_sha256})",
    ]


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the models as one JSON list on stdout.")
@verbosity_options
def command(as_json: bool) -> None:
    """List the shipped models with their classes, pixel size, encoder, training data, threshold, test scores and licence.

    Scores are on held-out test images of the training sources and, under "other data", on
    sources the model never saw (0-1). Use a model with `geoccseg predict --model NAME`.
    """
    cards = shipped_model_cards()
    if as_json:
        click.echo(json.dumps([card.to_dict() for card in cards], indent=2))
        return
    for index, card in enumerate(cards):
        if index:
            click.echo("")
        click.echo("\n".join(_text(card)))
