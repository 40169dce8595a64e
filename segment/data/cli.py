"""``medaug data``: download public datasets into a local cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from .fetch import CACHE_VARIABLE, DECATHLON, default_cache, fetch_dataset

console = Console(stderr=True)

app = typer.Typer(help="Download public datasets.", no_args_is_help=True)


@app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help=f"Decathlon task: {', '.join(DECATHLON)}; or its TaskNN prefix or organ name.")],
    cache: Annotated[
        Optional[Path],
        typer.Option("--cache", help=f"Folder that receives the dataset folder; default: ${CACHE_VARIABLE}, else ~/.cache/medaug."),
    ] = None,
) -> None:
    """Download a dataset over HTTPS, verify its published MD5 sum and extract it safely."""
    cache = cache if cache is not None else default_cache()
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"downloading {name}", total=None)

        def report(received: int, total: int | None) -> None:
            progress.update(task, completed=received, total=total)

        folder = fetch_dataset(name, cache, progress=report)
    console.print(f"dataset ready: {folder}")
    console.print(f"use it with --data-root {folder.parent} or by setting {CACHE_VARIABLE}={folder.parent}", markup=False, highlight=False)
