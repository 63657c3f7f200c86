"""Weight files: where they live, how to fetch and check them, and strict loading. No torch at import.

Each model family owns a table of `WeightFile`s (`sdxl/files.py`, `flux/files.py`); the face and EVA-CLIP
files every family shares are `FACE_FILES` below. Hugging Face files go through huggingface_hub (progress
bars, resume, `HF_HUB_OFFLINE`); the two facexlib files are GitHub release assets fetched with httpx
(progress, resume with a Range request). With `weights_dir` set, files are laid out as
`{weights_dir}/{repo}/{filename}` (facexlib: `{weights_dir}/facexlib/{filename}`); without it, the Hugging
Face cache is used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulid_server.model.errors import WeightsMismatchError, WeightsMissingError

EVA_CLIP = "QuanSun/EVA-CLIP"
ANTELOPE = "DIAMONIK7777/antelopev2"
FACEXLIB = "facexlib"  # GitHub releases, not a Hugging Face repo


@dataclass(frozen=True)
class WeightFile:
    key: str  # how the code refers to it
    repo: str
    filename: str
    approx_size: str  # for humans; exact sizes/hashes are filled in where known
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None
    url: str | None = None  # non-Hugging Face source

    @property
    def display(self) -> str:
        return f"{self.repo}/{self.filename} ({self.approx_size})"


Files = Sequence[WeightFile]

# Face analysis and EVA02-CLIP-L-336: the same files for PuLID v1 and PuLID-FLUX.
FACE_FILES: tuple[WeightFile, ...] = (
    WeightFile("eva_clip", EVA_CLIP, "EVA02_CLIP_L_336_psz14_s6B.pt", "856 MB"),
    WeightFile("scrfd", ANTELOPE, "scrfd_10g_bnkps.onnx", "16.9 MB"),
    WeightFile("glintr100", ANTELOPE, "glintr100.onnx", "261 MB"),
    WeightFile(
        "retinaface",
        FACEXLIB,
        "detection_Resnet50_Final.pth",
        "109 MB",
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    ),
    WeightFile(
        "bisenet",
        FACEXLIB,
        "parsing_bisenet.pth",
        "53 MB",
        url="https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
    ),
)


def download_hint(family: str) -> str:
    return f"run `pulid weights download --family {family}` (add --dir DIR to match PULID_WEIGHTS_DIR)"


def facexlib_default_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "pulid-server" / "facexlib"


def local_path(f: WeightFile, weights_dir: Path | None) -> Path | None:
    """Where `f` is on disk, or None. Never touches the network."""
    if f.url is not None:
        base = weights_dir / FACEXLIB if weights_dir is not None else facexlib_default_dir()
        path = base / f.filename
        return path if path.is_file() else None
    if weights_dir is not None:
        path = weights_dir / f.repo / f.filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(f.repo, f.filename, revision=f.revision)
    return Path(found) if isinstance(found, str) else None


def missing_files(files: Files, weights_dir: Path | None) -> list[WeightFile]:
    return [f for f in files if local_path(f, weights_dir) is None]


def resolve_all(files: Files, weights_dir: Path | None, family: str) -> dict[str, Path]:
    """key -> local path for every file of the table; WeightsMissingError listing what is absent."""
    missing = missing_files(files, weights_dir)
    if missing:
        where = str(weights_dir) if weights_dir is not None else "the Hugging Face cache"
        lines = "\n".join(f"  - {f.display}" for f in missing)
        raise WeightsMissingError(
            f"{len(missing)} official weight file(s) missing from {where}:\n{lines}\n"
            f"To fetch them, {download_hint(family)}."
        )
    return {f.key: p for f in files if (p := local_path(f, weights_dir)) is not None}


def download_all(files: Files, weights_dir: Path | None, log: Any = print) -> None:
    """Fetch every missing file of the table (resumable)."""
    for f in files:
        if local_path(f, weights_dir) is not None:
            continue
        log(f"downloading {f.display}")
        if f.url is not None:
            base = weights_dir / FACEXLIB if weights_dir is not None else facexlib_default_dir()
            _download_url(f.url, base / f.filename)
        else:
            from huggingface_hub import hf_hub_download

            local_dir = str(weights_dir / f.repo) if weights_dir is not None else None
            hf_hub_download(f.repo, f.filename, revision=f.revision, local_dir=local_dir)


def _download_url(url: str, dest: Path) -> None:
    """Stream to `dest.part`, resuming with a Range request; rename when complete."""
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise WeightsMissingError(f"{dest.name} is missing and HF_HUB_OFFLINE is set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60.0) as resp:
        if resp.status_code == 416:  # already complete
            part.rename(dest)
            return
        resp.raise_for_status()
        if resp.status_code == 200:
            done = 0  # server ignored the Range: start over
        total = done + int(resp.headers.get("content-length", 0)) or None
        with (
            part.open("ab" if done else "wb") as out,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            ) as progress,
        ):
            task = progress.add_task(dest.name, total=total, completed=done)
            for chunk in resp.iter_bytes(1 << 20):
                out.write(chunk)
                progress.update(task, advance=len(chunk))
    part.rename(dest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def verify(files: Files, weights_dir: Path | None) -> list[str]:
    """Problems found (missing files, size or sha256 mismatches where the table knows them)."""
    problems = []
    for f in files:
        path = local_path(f, weights_dir)
        if path is None:
            problems.append(f"missing: {f.display}")
        elif f.size is not None and path.stat().st_size != f.size:
            problems.append(f"size mismatch: {path} ({path.stat().st_size} != {f.size})")
        elif f.sha256 is not None and sha256_file(path) != f.sha256:
            problems.append(f"sha256 mismatch: {path}")
    return problems


# ---------------------------------------------------------------- loading


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A flat tensor dict from .safetensors / .bin / .pt (unwraps `state_dict` / `module.` wrappers)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(data, dict) and wrapper in data and isinstance(data[wrapper], dict):
            data = data[wrapper]
    return {k.removeprefix("module."): v for k, v in data.items()}


def sub_dict(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def check_state_dict(module: Any, state: Mapping[str, Any], source: str, limit: int = 8) -> None:
    """Every key and shape must match (BatchNorm `num_batches_tracked` may be absent in old files)."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = []
    for key, shape in expected.items():
        if key not in state:
            if not key.endswith("num_batches_tracked"):
                problems.append(f"missing key {key!r} {shape}")
        elif tuple(state[key].shape) != shape:
            problems.append(f"shape of {key!r}: file {tuple(state[key].shape)}, model {shape}")
    problems += [f"unexpected key {k!r} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise WeightsMismatchError(f"{source} does not match {type(module).__name__}:\n{shown}{more}")


def load_strict(module: Any, state: Mapping[str, Any], source: str) -> None:
    """Check, then load; `assign=True` so a module built on the meta device takes the file's tensors."""
    import torch

    check_state_dict(module, state, source)
    full = dict(state)
    for key in module.state_dict():
        if key.endswith("num_batches_tracked") and key not in full:
            full[key] = torch.tensor(0, dtype=torch.long)
    module.load_state_dict(full, strict=True, assign=True)
