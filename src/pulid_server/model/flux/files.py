"""The official files of PuLID-FLUX (`pulid weights download --family flux`).

FLUX.1-dev is a **gated** Hugging Face repository: accept its licence on the model page, then log in
(`huggingface-cli login`) or set `HF_TOKEN` before downloading. Two layouts of the same weights load:
* `FLUX_FILES` (what `download` fetches): the diffusers folders of `black-forest-labs/FLUX.1-dev`;
* `FLUX_SINGLE_FILES`: BFL's single files `flux1-dev.safetensors` + `ae.safetensors` (what the official
  code and ComfyUI use), with the repo's small transformer/vae configs and the same text encoders.
The official preset takes the diffusers layout when it is complete, else the single-file one.
"""

from __future__ import annotations

from pulid_server.model.common.weights import FACE_FILES, WeightFile

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
PULID = "guozinan/PuLID"
PULID_FLUX = "pulid_flux_v0.9.1.safetensors"  # v0.9.0 has the same layout


def _dev(key: str, filename: str, approx: str) -> WeightFile:
    return WeightFile(key, FLUX_DEV, filename, approx)


_TEXT: tuple[WeightFile, ...] = (
    _dev("text_encoder_config", "text_encoder/config.json", "1 kB"),
    _dev("text_encoder", "text_encoder/model.safetensors", "246 MB"),
    _dev("text_encoder_2_config", "text_encoder_2/config.json", "1 kB"),
    _dev("text_encoder_2_index", "text_encoder_2/model.safetensors.index.json", "20 kB"),
    _dev("text_encoder_2_1", "text_encoder_2/model-00001-of-00002.safetensors", "4.99 GB"),
    _dev("text_encoder_2_2", "text_encoder_2/model-00002-of-00002.safetensors", "4.53 GB"),
    *(
        _dev(f"tokenizer/{n}", f"tokenizer/{n}", "1 MB")
        for n in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")
    ),
    *(
        _dev(f"tokenizer_2/{n}", f"tokenizer_2/{n}", "2 MB")
        for n in ("spiece.model", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json")
    ),
    _dev("transformer_config", "transformer/config.json", "1 kB"),
    _dev("vae_config", "vae/config.json", "1 kB"),
    WeightFile("pulid_flux", PULID, PULID_FLUX, "1.14 GB"),
    *FACE_FILES,
)

FLUX_FILES: tuple[WeightFile, ...] = (
    *_TEXT,
    _dev("transformer_index", "transformer/diffusion_pytorch_model.safetensors.index.json", "120 kB"),
    _dev("transformer_1", "transformer/diffusion_pytorch_model-00001-of-00003.safetensors", "9.98 GB"),
    _dev("transformer_2", "transformer/diffusion_pytorch_model-00002-of-00003.safetensors", "9.95 GB"),
    _dev("transformer_3", "transformer/diffusion_pytorch_model-00003-of-00003.safetensors", "3.87 GB"),
    _dev("vae", "vae/diffusion_pytorch_model.safetensors", "168 MB"),
)

FLUX_SINGLE_FILES: tuple[WeightFile, ...] = (
    *_TEXT,
    _dev("flux1_dev", "flux1-dev.safetensors", "23.8 GB"),
    _dev("ae", "ae.safetensors", "335 MB"),
)
