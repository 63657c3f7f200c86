"""`pulid weights ...`: fetch and check the official files (mounted by the main CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

weights_app = typer.Typer(help="Official PuLID weight files: download and check.", no_args_is_help=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Weights folder (default: PULID_WEIGHTS_DIR, else the Hugging Face cache)."),
]


def _dir(value: Path | None) -> Path | None:
    if value is not None:
        return value
    from pulid_server.config import Settings

    return Settings().weights_dir


@weights_app.command("download")
def download(dir: DirOption = None) -> None:
    """Download every missing official file (resumes partial downloads)."""
    from pulid_server.model.weights import download_all, verify

    target = _dir(dir)
    try:
        download_all(target, log=typer.echo)
    except Exception as exc:  # network, auth, disk: say what failed, keep the partial files
        typer.echo(f"download failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    problems = verify(target)
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("all official weight files present")


@weights_app.command("check")
def check(dir: DirOption = None) -> None:
    """List missing or corrupt official files; exit 1 if any."""
    from pulid_server.model.weights import DOWNLOAD_HINT, OFFICIAL_FILES, local_path, verify

    target = _dir(dir)
    for f in OFFICIAL_FILES:
        path = local_path(f, target)
        typer.echo(f"{'ok     ' if path else 'MISSING'} {f.display}" + (f"  {path}" if path else ""))
    problems = verify(target)
    if problems:
        typer.echo(f"{len(problems)} problem(s); to fix, {DOWNLOAD_HINT}", err=True)
        raise typer.Exit(1)
    typer.echo("all official weight files present")
