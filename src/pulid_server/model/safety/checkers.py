"""The checkers: a model folder as released (config, preprocessor config, weights) and its scoring.

Both run the model's own preprocessing (`preprocessor_config.json`, on PIL) and score a whole batch in one
forward pass, in fp16 on CUDA and fp32 on the CPU (scores are computed in fp32 either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pulid_server.model.common.device import place
from pulid_server.model.errors import WeightsMismatchError


def image_processor_class(name: str) -> Any:
    """transformers' PIL image processor `name` (e.g. "ViTImageProcessor"). transformers >= 5 calls it
    `{name}Pil` and gives the plain name to a torchvision backend, which we do not install."""
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def from_folder(cls: Any, folder: Path, device: torch.device) -> Any:
    """`cls.from_pretrained(folder)`, refusing files that leave weights of the model missing or misshapen."""
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    problems = [f"missing key {k!r}" for k in sorted(info["missing_keys"])]
    problems += [f"shape of {m[0]!r}" for m in info["mismatched_keys"]]
    if problems:
        raise WeightsMismatchError(f"{folder} does not match {cls.__name__}: {', '.join(problems[:8])}")
    return place(model, device, torch.float16 if device.type == "cuda" else torch.float32).eval()


def _pixels(processor: Any, images: Sequence[Image.Image], model: Any) -> torch.Tensor:
    batch = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    return batch.to(model.device, model.dtype)


@dataclass
class SdChecker:
    """diffusers' StableDiffusionSafetyChecker: a CLIP ViT-L/14 image embedding against 17 concept and 3
    "special care" embeddings, each with its own threshold.

    score = max over concepts of (cosine - concept threshold), + 0.01 when a special-care concept matched:
    diffusers' concept scores (`forward_onnx`) as one number, so `score > 0` is exactly its
    `has_nsfw_concepts`, and a threshold t is its `adjustment` of -t on the concept scores.
    """

    model: Any  # StableDiffusionSafetyChecker
    processor: Any
    name: str = "sd"
    default_threshold: float = 0.0

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> SdChecker:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        model = from_folder(StableDiffusionSafetyChecker, folder, device)
        return cls(model, image_processor_class("CLIPImageProcessor").from_pretrained(folder))

    @torch.no_grad()
    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        m = self.model
        pooled = m.vision_model(_pixels(self.processor, images, m)).pooler_output
        embeds = torch.nn.functional.normalize(m.visual_projection(pooled).float(), dim=-1)

        def cosine(concepts: torch.Tensor) -> torch.Tensor:
            return embeds @ torch.nn.functional.normalize(concepts.float(), dim=-1).T

        special = (cosine(m.special_care_embeds) - m.special_care_embeds_weights.float() > 0).any(dim=1)
        concepts = cosine(m.concept_embeds) - m.concept_embeds_weights.float()
        return (concepts.max(dim=1).values + 0.01 * special).tolist()


@dataclass
class ClassifierChecker:
    """A transformers ViT image classifier with an `nsfw` label (Falconsai/nsfw_image_detection: ViT-B/16,
    labels normal / nsfw); score = the softmax probability of that label."""

    model: Any  # an AutoModelForImageClassification
    processor: Any
    label_index: int
    name: str = "vit"
    default_threshold: float = 0.5

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> ClassifierChecker:
        from transformers import AutoModelForImageClassification

        model = from_folder(AutoModelForImageClassification, folder, device)
        labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        if "nsfw" not in labels:
            raise WeightsMismatchError(f"{folder}: the classifier has no 'nsfw' label ({sorted(labels)})")
        return cls(model, image_processor_class("ViTImageProcessor").from_pretrained(folder), labels["nsfw"])

    @torch.no_grad()
    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        logits = self.model(pixel_values=_pixels(self.processor, images, self.model)).logits.float()
        return logits.softmax(dim=-1)[:, self.label_index].tolist()
