"""Build the pipeline: `official` (released weights, unchanged) or `tiny` (same classes, toy sizes).

Tiny preset: every component is the production class at toy size with deterministic seeded random
weights, built in about a second with no network:
* tokenizers: a byte-level CLIP BPE vocabulary (256 bytes x {plain, end-of-word} + a few merges),
  written to a temporary folder and loaded with `CLIPTokenizer.from_pretrained`;
* text encoders, UNet (SDXL block layout), VAE (scale factor 8), EVA tower, IDEncoder, BiSeNet: seeded;
* face detection: scikit-image's LBP frontal-face cascade (`CascadeFaceDetector`), a real classical face
  detector, in both the insightface and the facexlib role; ArcFace: a seeded tiny ONNX model built with
  the `onnx` package (runtime dependency of the tiny preset) and run by onnxruntime like glintr100.
So `skimage.data.astronaut()` goes end to end and a faceless image raises NoFaceError. Images are noise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pulid_server.model.common.device import place
from pulid_server.model.common.eva_clip import EvaConfig
from pulid_server.model.common.face_stack import TINY_EVA, build_official_face, build_tiny_face
from pulid_server.model.common.tiny_text import tiny_tokenizer
from pulid_server.model.common.weights import (
    download_hint,
    load_strict,
    missing_files,
    read_checkpoint,
    resolve_all,
    sub_dict,
)
from pulid_server.model.families import Preset
from pulid_server.model.sdxl.attention import install_id_processors
from pulid_server.model.sdxl.files import SDXL_FILES
from pulid_server.model.sdxl.id_encoder import IDEncoder
from pulid_server.model.sdxl.pipeline import PulidPipeline

log = logging.getLogger("pulid_server.model.sdxl")

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (EulerDiscrete); PuLID builds
# its DPM-Solver++ from this config. The official preset reads the file itself.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def load(preset: Preset, device: torch.device, weights_dir: Path | None) -> PulidPipeline:
    """The pipeline for `preset`; `auto` is official when every file is present, else tiny (with a warning)."""
    if preset == "auto":
        missing = missing_files(SDXL_FILES, weights_dir)
        if missing:
            log.warning(
                "official PuLID (SDXL) weights not found (%d file(s) missing); using the tiny preset, whose "
                "images are noise. To serve real images, %s.",
                len(missing),
                download_hint("sdxl"),
            )
        preset = "tiny" if missing else "official"
    if preset == "tiny":
        return build_tiny(device)
    return build_official(weights_dir, device)


# ---------------------------------------------------------------- tiny


@dataclass(frozen=True)
class TinySizes:
    text_width: int = 32
    cross_dim: int = 64  # two text encoders concatenated
    eva: EvaConfig = TINY_EVA  # the shared tiny face stack's (common/face_stack.py)


def tiny_unet_config(cross_dim: int, pooled_dim: int) -> dict[str, Any]:
    """SDXL's block layout (down: plain, cross, cross; mid cross; up: cross, cross, plain) at toy width."""
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 2,
        "transformer_layers_per_block": (1, 1, 2),
        "attention_head_dim": (2, 4, 4),
        "cross_attention_dim": cross_dim,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + pooled_dim,
        "norm_num_groups": 32,
    }


def build_tiny(device: torch.device, seed: int = 0, sizes: TinySizes = TinySizes()) -> PulidPipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_cfg = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=sizes.text_width,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=sizes.cross_dim - sizes.text_width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_cfg).eval()
        text_encoder_2 = CLIPTextModelWithProjection(text_cfg).eval()
        pooled_dim = sizes.cross_dim - sizes.text_width
        unet = UNet2DConditionModel(**tiny_unet_config(sizes.cross_dim, pooled_dim)).eval()  # type: ignore[attr-defined]
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.13025,
            force_upcast=True,
        ).eval()  # type: ignore[attr-defined]
        id_encoder = IDEncoder(
            width=512 + sizes.eva.output_dim,
            context_dim=sizes.cross_dim,
            vit_width=sizes.eva.width,
            num_taps=sizes.eva.num_taps,
        ).eval()
        for module in (text_encoder, text_encoder_2, unet):
            place(module, device, dtype)
        id_layers = install_id_processors(unet)  # after the cast: fp32, as in the reference
    face, face_key = build_tiny_face(device, seed)
    return PulidPipeline(
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        unet=unet,
        vae=vae.to(device),
        scheduler_config=SDXL_SCHEDULER_CONFIG,
        id_encoder=id_encoder.to(device),
        id_layers=id_layers,
        face=face,
        face_key=face_key,
        device=device,
        dtype=dtype,
        preset="tiny",
    )


# ---------------------------------------------------------------- official


def build_official(weights_dir: Path | None, device: torch.device) -> PulidPipeline:
    """SDXL base text encoders/VAE + Lightning UNet + pulid_v1.bin + EVA02-CLIP-L-336 + face models."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    files = resolve_all(SDXL_FILES, weights_dir, "sdxl")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    folder = {k: files[f"{k}_config"].parent for k in ("unet", "text_encoder", "text_encoder_2", "vae")}
    tokenizer = CLIPTokenizer.from_pretrained(files["tokenizer/vocab.json"].parent)
    tokenizer_2 = CLIPTokenizer.from_pretrained(files["tokenizer_2/vocab.json"].parent)
    text_encoder = CLIPTextModel.from_pretrained(folder["text_encoder"], variant="fp16", torch_dtype=dtype)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
        folder["text_encoder_2"], variant="fp16", torch_dtype=dtype
    )
    # The reference upcasts the VAE to fp32 for every decode (force_upcast); we keep it in fp32.
    vae = AutoencoderKL.from_pretrained(folder["vae"], variant="fp16", torch_dtype=torch.float32)
    scheduler_config = json.loads(files["scheduler_config"].read_text(encoding="utf-8"))

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder["unet"]))
    load_strict(unet, read_checkpoint(files["unet"]), str(files["unet"]))
    place(unet, device, dtype).eval()
    id_layers = install_id_processors(unet)

    pulid_state = read_checkpoint(files["pulid"])
    id_encoder = IDEncoder()
    load_strict(id_encoder, sub_dict(pulid_state, "id_adapter."), f"{files['pulid']} (id_adapter.*)")
    load_strict(
        id_layers,
        sub_dict(pulid_state, "id_adapter_attn_layers."),
        f"{files['pulid']} (id_adapter_attn_layers.*)",
    )

    face, face_key = build_official_face(files, device)
    return PulidPipeline(
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        text_encoder=text_encoder.to(device).eval(),  # type: ignore[arg-type]
        text_encoder_2=text_encoder_2.to(device).eval(),  # type: ignore[arg-type]
        unet=unet,
        vae=vae.to(device).eval(),
        scheduler_config=scheduler_config,
        id_encoder=id_encoder.to(device, torch.float32).eval(),
        id_layers=id_layers,
        face=face,
        face_key=face_key,
        device=device,
        dtype=dtype,
        preset="official",
    )


__all__ = ["build_official", "build_tiny", "load"]
