"""What the service hands the SDXL pipeline, and the counters it keeps. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pulid_server.model.common.run import PipelineStats

if TYPE_CHECKING:
    from PIL import Image

Mode = Literal["fidelity", "extreme style"]


@dataclass
class GenerationRequest:
    """One PuLID job. `reference_images` holds (raw bytes, decoded RGB image); the bytes key the ID cache."""

    reference_images: list[tuple[bytes, Image.Image]]
    prompt: str
    negative_prompt: str = ""
    num_images: int = 1
    guidance_scale: float = 1.2
    num_inference_steps: int = 4
    seed: int = 0
    width: int = 768
    height: int = 1024
    id_scale: float = 0.8
    mode: Mode = "fidelity"
    id_mix: bool = False


__all__ = ["GenerationRequest", "Mode", "PipelineStats"]
