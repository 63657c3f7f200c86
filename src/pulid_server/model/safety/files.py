"""The official files of the two image safety checkers (`pulid weights download --family safety-sd|safety-vit`).

Each checker is loaded from its Hugging Face repository folder as released (config, preprocessor config,
weights), so the table lists exactly those three files.
"""

from __future__ import annotations

from pulid_server.model.common.weights import WeightFile

SD_CHECKER = "CompVis/stable-diffusion-safety-checker"  # diffusers' StableDiffusionSafetyChecker
VIT_NSFW = "Falconsai/nsfw_image_detection"  # a ViT-B/16 image classifier: labels normal / nsfw

SD_CHECKER_FILES: tuple[WeightFile, ...] = (
    WeightFile("config", SD_CHECKER, "config.json", "5 kB"),
    WeightFile("preprocessor", SD_CHECKER, "preprocessor_config.json", "1 kB"),
    WeightFile("weights", SD_CHECKER, "pytorch_model.bin", "1.22 GB"),
)

VIT_NSFW_FILES: tuple[WeightFile, ...] = (
    WeightFile("config", VIT_NSFW, "config.json", "1 kB"),
    WeightFile("preprocessor", VIT_NSFW, "preprocessor_config.json", "1 kB"),
    WeightFile("weights", VIT_NSFW, "model.safetensors", "343 MB"),
)
