"""Image safety checkers, run by the worker on every image a job produces before it is stored.

Two checkers, each a model family of its own (weight table, `official` / `tiny` / `auto` presets, loaded
with `get_family(CHECKER_FAMILIES[name]).load(preset, device, weights_dir)`):

* `sd`: diffusers' `StableDiffusionSafetyChecker` with the CompVis/stable-diffusion-safety-checker weights
  (family `safety-sd`);
* `vit`: a transformers image classifier with an `nsfw` label, Falconsai/nsfw_image_detection (family
  `safety-vit`).

Importing this package is cheap (no torch); the policy around a checker (when it runs, what happens to a
flagged image) is `pulid_server.policy` and `pulid_server.worker.safety`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image

# Settings.safety_checker -> the model family that implements it
CHECKER_FAMILIES = {"sd": "safety-sd", "vit": "safety-vit"}


class SafetyChecker(Protocol):
    """Scores a batch of images; an image is flagged when its score is above the threshold."""

    name: str
    default_threshold: float  # used when Settings.safety_threshold is unset

    def scores(self, images: Sequence[Image.Image]) -> list[float]: ...


__all__ = ["CHECKER_FAMILIES", "SafetyChecker"]
