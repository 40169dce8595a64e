"""``medaug augment``: look at what a strategy does before training with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .strategies import StrategyError, build_strategy

app = typer.Typer(help="Inspect augmentation strategies.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("preview")
def preview_command(
    strategy: Annotated[str, typer.Argument(help="Preset name (none, rigid, nonrigid, intensity, nnunet, all, ...) or strategy YAML file.")],
    dataset: Annotated[Path, typer.Argument(help="Decathlon dataset folder (with dataset.json).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("preview.png"),
    cases: Annotated[int, typer.Option(help="Number of cases, one row each.")] = 4,
    draws: Annotated[int, typer.Option(help="Augmented versions per case, one column each.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the augmentation parameters.")] = 0,
) -> None:
    """Write a PNG grid of real cases and augmented draws with their labels as contours."""
    from .preview import load_pairs, preview_grid

    if cases < 1 or draws < 1:
        raise StrategyError(f"--cases and --draws must be at least 1, got {cases} and {draws}")
    pipeline = build_strategy(strategy)
    try:
        pairs = load_pairs(dataset, cases)
    except (FileNotFoundError, ValueError) as error:
        raise StrategyError(str(error)) from error
    path = preview_grid(pipeline, pairs, output, draws=draws, seed=seed)
    console.print(f"wrote {path}")
