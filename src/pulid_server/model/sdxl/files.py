"""The official files of PuLID v1 on SDXL-Lightning (`pulid weights download --family sdxl`)."""

from __future__ import annotations

from pulid_server.model.common.weights import FACE_FILES, WeightFile

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING = "ByteDance/SDXL-Lightning"
PULID = "guozinan/PuLID"


def _sdxl(key: str, filename: str, approx: str) -> WeightFile:
    return WeightFile(key, SDXL_BASE, filename, approx)


_TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")

SDXL_FILES: tuple[WeightFile, ...] = (
    WeightFile("unet", LIGHTNING, "sdxl_lightning_4step_unet.safetensors", "5.14 GB"),
    WeightFile("pulid", PULID, "pulid_v1.bin", "1.58 GB"),
    *FACE_FILES,
    _sdxl("unet_config", "unet/config.json", "2 kB"),
    _sdxl("scheduler_config", "scheduler/scheduler_config.json", "1 kB"),
    _sdxl("text_encoder_config", "text_encoder/config.json", "1 kB"),
    _sdxl("text_encoder", "text_encoder/model.fp16.safetensors", "246 MB"),
    _sdxl("text_encoder_2_config", "text_encoder_2/config.json", "1 kB"),
    _sdxl("text_encoder_2", "text_encoder_2/model.fp16.safetensors", "1.39 GB"),
    _sdxl("vae_config", "vae/config.json", "1 kB"),
    _sdxl("vae", "vae/diffusion_pytorch_model.fp16.safetensors", "167 MB"),
    *(_sdxl(f"tokenizer/{n}", f"tokenizer/{n}", "1 MB") for n in _TOKENIZER_FILES),
    *(_sdxl(f"tokenizer_2/{n}", f"tokenizer_2/{n}", "1 MB") for n in _TOKENIZER_FILES),
)
