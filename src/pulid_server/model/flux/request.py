"""What the service hands the FLUX pipeline, its memory options, and the counters it keeps. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pulid_server.model.common.run import PipelineStats

if TYPE_CHECKING:
    from PIL import Image

# Transformer weight-only quantization (torchao): int8 per-channel, or float8 e4m3 per-channel.
Quantize = Literal["none", "int8", "fp8"]


@dataclass
class FluxRequest:
    """One PuLID-FLUX job (fal `fal-ai/flux-pulid` inputs, already validated and resolved).

    `reference_image` is (raw bytes, decoded RGB image); the bytes key the ID caches. Defaults are fal's;
    `timestep_to_start_cfg` is the official code's (not a fal input).
    """

    reference_image: tuple[bytes, Image.Image]
    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 768
    num_inference_steps: int = 20
    seed: int = 0
    guidance_scale: float = 4.0
    start_step: int = 0
    true_cfg: float = 1.0
    id_weight: float = 1.0
    max_sequence_length: int = 128
    timestep_to_start_cfg: int = 1


@dataclass(frozen=True)
class MemoryOptions:
    """How the FLUX family holds its weights on a GPU (see docs/model.md, "FLUX memory").

    offload: keep every component on the CPU and move each one to the GPU only while it runs (as the
        official `--offload`): the peak is the largest component instead of their sum.
    quantize: store the transformer's linear weights as int8 or float8 (torchao, weight-only, per
        output channel); activations stay bf16. Halves the transformer (23.8 -> 11.9 GB).
    """

    offload: bool = False
    quantize: Quantize = "none"


@dataclass
class FluxStats(PipelineStats):
    """PipelineStats, and how many transformer passes ran (with and without the ID)."""

    transformer_calls: int = 0  # positive and negative passes
    id_calls: int = 0  # transformer calls that ran the ID cross-attention
