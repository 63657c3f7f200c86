"""Build a checker for a preset: `official` (the released folder), `tiny` (same classes at toy size with
seeded weights, written to a temporary folder in the released layout and loaded from it by the same code),
`auto` (official when its files are present, else tiny with a warning).

Tiny checkers score real images deterministically (a given image always gets the same score), so a test
can pick a threshold that flags one known image and not another; what they flag means nothing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from pulid_server.model.common.weights import Files, download_hint, missing_files, resolve_all
from pulid_server.model.families import Preset
from pulid_server.model.safety.checkers import ClassifierChecker, SdChecker, image_processor_class
from pulid_server.model.safety.files import SD_CHECKER_FILES, VIT_NSFW_FILES

log = logging.getLogger("pulid_server.model.safety")
C = TypeVar("C")
TINY_SEED = 0
TINY_SIZE = 32  # input side of the tiny models


def load_sd(preset: Preset, device: torch.device, weights_dir: Path | None) -> SdChecker:
    return _load(preset, SD_CHECKER_FILES, weights_dir, "safety-sd", write_tiny_sd, SdChecker.load, device)


def load_vit(preset: Preset, device: torch.device, weights_dir: Path | None) -> ClassifierChecker:
    return _load(
        preset, VIT_NSFW_FILES, weights_dir, "safety-vit", write_tiny_vit, ClassifierChecker.load, device
    )


def _load(
    preset: Preset,
    files: Files,
    weights_dir: Path | None,
    family: str,
    write_tiny: Callable[[Path], None],
    load: Callable[[Path, torch.device], C],
    device: torch.device,
) -> C:
    if preset == "auto":
        missing = missing_files(files, weights_dir)
        if missing:
            log.warning(
                "%s weights not found (%d file(s) missing); using the tiny checker, whose flags mean "
                "nothing. To check images for real, %s.",
                family,
                len(missing),
                download_hint(family),
            )
        preset = "tiny" if missing else "official"
    if preset == "official":
        return load(resolve_all(files, weights_dir, family)["config"].parent, device)
    with tempfile.TemporaryDirectory(prefix=f"pulid-{family}-") as folder:
        write_tiny(Path(folder))
        return load(Path(folder), device)


def write_tiny_sd(folder: Path) -> None:
    """A StableDiffusionSafetyChecker with a 2-layer CLIP vision tower: config, preprocessor config and
    weights, as in the CompVis folder (safetensors weights where CompVis has a .bin; both load alike)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    config = CLIPConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = StableDiffusionSafetyChecker(config).eval()
        for embeds in (model.concept_embeds, model.special_care_embeds):
            torch.nn.init.normal_(embeds)
        # thresholds (cosine in 16-d between random directions is mostly below 0.5)
        torch.nn.init.constant_(model.concept_embeds_weights, 0.4)
        torch.nn.init.constant_(model.special_care_embeds_weights, 0.5)
    model.save_pretrained(folder)
    processor = image_processor_class("CLIPImageProcessor")
    processor(
        size={"shortest_edge": TINY_SIZE}, crop_size={"height": TINY_SIZE, "width": TINY_SIZE}
    ).save_pretrained(folder)


def write_tiny_vit(folder: Path) -> None:
    """A 2-layer ViT classifier with labels normal / nsfw: config, preprocessor config and weights, as in the
    Falconsai folder."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=TINY_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
        initializer_range=0.2,  # wider than the default 0.02, so that scores of different images differ
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    processor = image_processor_class("ViTImageProcessor")
    processor(
        size={"height": TINY_SIZE, "width": TINY_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
