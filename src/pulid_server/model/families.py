"""Model families: each owns its weight-file table, its presets and a `load(preset, device, weights_dir)`.

A family is named here by import paths only, so listing families or their files never imports torch;
`Family.load` imports the family's code in the worker process that serves it, and nowhere else.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pulid_server.model.common.weights import WeightFile

# official: the released weights, unchanged (download them first); tiny: the same classes at toy size with
# seeded random weights (images are noise, runs anywhere in seconds); auto: official when every file is
# present, else tiny with a warning.
Preset = Literal["official", "tiny", "auto"]


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    files_ref: str  # "module:ATTR" of its tuple of WeightFile
    load_ref: str  # "module:function" taking (preset, device, weights_dir, **options)
    alt_files_ref: str = ""  # "module:ATTR" of another complete layout of the same weights, if any

    def files(self) -> tuple[WeightFile, ...]:
        files: tuple[WeightFile, ...] = _resolve(self.files_ref)
        return files

    def alt_files(self) -> tuple[WeightFile, ...]:
        files: tuple[WeightFile, ...] = _resolve(self.alt_files_ref) if self.alt_files_ref else ()
        return files

    def load(self, preset: Preset, device: str, weights_dir: Path | None, **options: Any) -> Any:
        """Build the family's pipeline for `preset` on `device` (`auto`, `cpu`, `cuda:N`), once per process.
        `options` are the family's own (flux: `offload`, `quantize`)."""
        from pulid_server.model.common.device import resolve_device

        return _resolve(self.load_ref)(preset, resolve_device(device), weights_dir, **options)


FAMILIES: dict[str, Family] = {
    "sdxl": Family(
        "sdxl",
        "PuLID v1 on SDXL-Lightning (fal-ai/pulid)",
        "pulid_server.model.sdxl.files:SDXL_FILES",
        "pulid_server.model.sdxl.presets:load",
    ),
    "flux": Family(
        "flux",
        "PuLID-FLUX v0.9.1 on FLUX.1-dev (fal-ai/flux-pulid)",
        "pulid_server.model.flux.files:FLUX_FILES",
        "pulid_server.model.flux.presets:load",
        alt_files_ref="pulid_server.model.flux.files:FLUX_SINGLE_FILES",
    ),
    # image safety checkers (Settings.safety_checker), see model/safety/
    "safety-sd": Family(
        "safety-sd",
        "Safety checker: diffusers' StableDiffusionSafetyChecker (CompVis weights)",
        "pulid_server.model.safety.files:SD_CHECKER_FILES",
        "pulid_server.model.safety.presets:load_sd",
    ),
    "safety-vit": Family(
        "safety-vit",
        "Safety checker: ViT NSFW image classifier (Falconsai/nsfw_image_detection)",
        "pulid_server.model.safety.files:VIT_NSFW_FILES",
        "pulid_server.model.safety.presets:load_vit",
    ),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def loaded_families() -> list[str]:
    """The families whose code this process has imported: a worker imports only those it serves."""
    return [f.name for f in FAMILIES.values() if f.load_ref.partition(":")[0] in sys.modules]
