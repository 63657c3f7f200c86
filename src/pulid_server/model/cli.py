"""`pulid weights ...`: fetch and check the official files of a model family (mounted by the main CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pulid_server.model.families import FAMILIES, Family

weights_app = typer.Typer(
    help=(
        "Official weight files of each model family (sdxl: fal-ai/pulid; flux: fal-ai/flux-pulid; safety-sd, "
        "safety-vit: the image safety checkers): download and check. FLUX.1-dev is a gated Hugging Face repo: "
        "accept its licence on the model page, then run `huggingface-cli login` or set HF_TOKEN before "
        "`download --family flux`."
    ),
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Weights folder (default: PULID_WEIGHTS_DIR, else the Hugging Face cache)."),
]
FamilyOption = Annotated[
    str,
    typer.Option("--family", help=f"Model family: {', '.join(FAMILIES)}, or 'all'.", show_default=True),
]


def _dir(value: Path | None) -> Path | None:
    if value is not None:
        return value
    from pulid_server.config import Settings

    return Settings().weights_dir


def _families(name: str) -> list[Family]:
    if name == "all":
        return list(FAMILIES.values())
    if name not in FAMILIES:
        raise typer.BadParameter(f"unknown family {name!r}; choose {', '.join(FAMILIES)} or 'all'")
    return [FAMILIES[name]]


@weights_app.command("download")
def download(family: FamilyOption = "sdxl", dir: DirOption = None) -> None:
    """Download every missing official file of the family (resumes partial downloads)."""
    from pulid_server.model.common.weights import download_all, verify

    target = _dir(dir)
    for fam in _families(family):
        try:
            download_all(fam.files(), target, log=typer.echo)
        except Exception as exc:  # network, auth, disk: say what failed, keep the partial files
            typer.echo(f"download failed: {type(exc).__name__}: {exc}", err=True)
            if fam.name == "flux":
                typer.echo(
                    "FLUX.1-dev is gated: accept its licence on huggingface.co/black-forest-labs/FLUX.1-dev, "
                    "then `huggingface-cli login` or set HF_TOKEN.",
                    err=True,
                )
            raise typer.Exit(1) from exc
        problems = verify(fam.files(), target)
        for p in problems:
            typer.echo(p, err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"{fam.name}: all official weight files present")


@weights_app.command("check")
def check(family: FamilyOption = "sdxl", dir: DirOption = None) -> None:
    """List missing or corrupt official files of the family; exit 1 if any."""
    from pulid_server.model.common.weights import download_hint, local_path, verify

    target = _dir(dir)
    failed = False
    for fam in _families(family):
        files = fam.files()
        if verify(files, target) and fam.alt_files() and not verify(fam.alt_files(), target):
            files = fam.alt_files()  # the other layout of the same weights is complete
            typer.echo(f"{fam.name}: using the alternative layout (single files)")
        for f in files:
            path = local_path(f, target)
            typer.echo(f"{'ok     ' if path else 'MISSING'} {f.display}" + (f"  {path}" if path else ""))
        problems = verify(files, target)
        if problems:
            failed = True
            typer.echo(f"{fam.name}: {len(problems)} problem(s); to fix, {download_hint(fam.name)}", err=True)
        else:
            typer.echo(f"{fam.name}: all official weight files present")
    if failed:
        raise typer.Exit(1)
