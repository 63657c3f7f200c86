"""Build the PuLID-FLUX pipeline: `official` (released weights, unchanged) or `tiny` (same classes, toy sizes).

Official: FLUX.1-dev in the diffusers layout, or BFL's single files through diffusers' `from_single_file`
with the repo's own local configs (never the hub); T5-XXL and CLIP-L from the diffusers layout; the
`pulid_flux_v0.9.1.safetensors` modules loaded strictly (`pulid_encoder.*` -> IDFormer, `pulid_ca.*` ->
20 ID cross-attentions); the face stack shared with the SDXL family. Compute dtype bf16 on GPU (as the
official code), fp32 on CPU; the AE and the face stack stay fp32 (the AE decodes under bf16 autocast).

Tiny: every component is the production class at toy size with seeded weights, built on CPU in about a
second: byte-level CLIP BPE and a Unigram T5 tokenizer built locally, 2-layer CLIP and T5 encoders, a
FLUX transformer with 4 double and 8 single blocks (ID attention after doubles 0, 2 and singles 0, 4),
a 4-level AE, IDFormer and ID attention at toy widths, and the shared tiny face stack. The transformer is
written as a BFL-format single file and loaded back through the same conversion and `from_single_file`
path as `flux1-dev.safetensors`. Its images are noise.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pulid_server.model.common.face import FaceFeatures
from pulid_server.model.common.face_stack import (
    TINY_EVA,
    build_official_face,
    build_tiny_face,
    face_modules,
)
from pulid_server.model.common.tiny_text import tiny_t5_tokenizer, tiny_tokenizer
from pulid_server.model.common.weights import (
    check_state_dict,
    download_hint,
    load_strict,
    missing_files,
    read_checkpoint,
    resolve_all,
    sub_dict,
)
from pulid_server.model.errors import WeightsMismatchError
from pulid_server.model.families import Preset
from pulid_server.model.flux import configs
from pulid_server.model.flux.convert import to_bfl, to_diffusers
from pulid_server.model.flux.files import FLUX_FILES, FLUX_SINGLE_FILES
from pulid_server.model.flux.id_attention import PerceiverAttentionCA, ca_positions
from pulid_server.model.flux.id_former import IDFormer
from pulid_server.model.flux.memory import Residency, quantize_blocks
from pulid_server.model.flux.pipeline import PulidFluxPipeline
from pulid_server.model.flux.request import MemoryOptions, Quantize

log = logging.getLogger("pulid_server.model.flux")


def load(
    preset: Preset,
    device: torch.device,
    weights_dir: Path | None,
    *,
    offload: bool = False,
    quantize: Quantize = "none",
) -> PulidFluxPipeline:
    """The pipeline for `preset`; `auto` is official when either FLUX layout is complete, else tiny."""
    memory = MemoryOptions(offload=offload, quantize=quantize)
    if preset == "auto":
        complete = official_layout(weights_dir) is not None
        if not complete:
            log.warning(
                "official PuLID-FLUX weights not found (%d file(s) missing); using the tiny preset, whose "
                "images are noise. FLUX.1-dev is gated: accept its licence on Hugging Face and log in "
                "(huggingface-cli login or HF_TOKEN), then %s.",
                len(missing_files(FLUX_FILES, weights_dir)),
                download_hint("flux"),
            )
        preset = "official" if complete else "tiny"
    if preset == "tiny":
        return build_tiny(device, memory=memory)
    return build_official(weights_dir, device, memory)


def official_layout(weights_dir: Path | None) -> str | None:
    """`diffusers` or `single_file` when every file of that layout is present, else None."""
    if not missing_files(FLUX_FILES, weights_dir):
        return "diffusers"
    if not missing_files(FLUX_SINGLE_FILES, weights_dir):
        return "single_file"
    return None


# ---------------------------------------------------------------- loading the transformer and AE


def _meta_shapes(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Key -> meta tensor of the stored shape, read from safetensors headers (no tensor data)."""
    from safetensors import safe_open

    shapes: dict[str, torch.Tensor] = {}
    for path in paths:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                shapes[key] = torch.empty(f.get_slice(key).get_shape(), device="meta")
    return shapes


def _meta_model(cls: Any, config: Mapping[str, Any]) -> Any:
    with torch.device("meta"):
        return cls.from_config(dict(config))


def transformer_from_single_file(path: Path, config_dir: Path, dtype: torch.dtype) -> Any:
    """BFL single file -> diffusers FluxTransformer2DModel: our converter (widths from the config),
    a strict key/shape check, then diffusers' `from_single_file` with the local config folder."""
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(str(config_dir), local_files_only=True)
    state = to_diffusers(read_checkpoint(path), config)
    check_state_dict(_meta_model(FluxTransformer2DModel, config), state, str(path))
    # fp32 is the default: passing it would only make diffusers warn about casting with `.to()`.
    torch_dtype = None if dtype == torch.float32 else dtype
    return FluxTransformer2DModel.from_single_file(
        state, config=str(config_dir), torch_dtype=torch_dtype, local_files_only=True
    )


def transformer_from_folder(folder: Path, dtype: torch.dtype) -> Any:
    """diffusers layout (`transformer/`): strict key/shape check from the shard headers, then
    `from_pretrained` on the local folder."""
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(str(folder), local_files_only=True)
    shards = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    check_state_dict(_meta_model(FluxTransformer2DModel, config), _meta_shapes(shards), str(folder))
    return FluxTransformer2DModel.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)


def vae_from_single_file(path: Path, config_dir: Path) -> Any:
    """BFL `ae.safetensors` -> AutoencoderKL (fp32): diffusers' LDM VAE converter, strict check, load."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = AutoencoderKL.load_config(str(config_dir), local_files_only=True)
    state = convert_ldm_vae_checkpoint(read_checkpoint(path), config)
    check_state_dict(_meta_model(AutoencoderKL, config), state, str(path))
    return AutoencoderKL.from_single_file(
        state, config=str(config_dir), torch_dtype=torch.float32, local_files_only=True
    )


def load_pulid(path: Path, id_former: IDFormer, id_attention: torch.nn.ModuleList) -> None:
    """`pulid_flux_v0.9.*.safetensors`: exactly `pulid_encoder.*` and `pulid_ca.*`, each strict."""
    state = read_checkpoint(path)
    other = sorted({k.split(".")[0] for k in state} - {"pulid_encoder", "pulid_ca"})
    if other:
        raise WeightsMismatchError(f"{path}: unexpected modules {other} (a PuLID-FLUX file has 2)")
    load_strict(id_former, sub_dict(state, "pulid_encoder."), f"{path} (pulid_encoder.*)")
    load_strict(id_attention, sub_dict(state, "pulid_ca."), f"{path} (pulid_ca.*)")


def id_attention_modules(
    transformer_config: Mapping[str, Any], sizes: Mapping[str, int]
) -> torch.nn.ModuleList:
    positions = ca_positions(
        int(transformer_config["num_layers"]),
        int(transformer_config["num_single_layers"]),
        configs.DOUBLE_INTERVAL,
        configs.SINGLE_INTERVAL,
    )
    return torch.nn.ModuleList(PerceiverAttentionCA(**sizes) for _ in positions)


# ---------------------------------------------------------------- assembling


@dataclass
class Components:
    tokenizer: Any
    text_encoder: Any
    tokenizer_2: Any
    text_encoder_2: Any
    transformer: Any
    vae: Any
    id_former: IDFormer
    id_attention: torch.nn.ModuleList
    face: FaceFeatures
    face_key: str


def _cast(module: Any, dtype: torch.dtype) -> Any:
    """Cast without `.to(dtype)`, which diffusers models answer with a warning on every call."""
    return module.bfloat16() if dtype == torch.bfloat16 else module.float()


def assemble(c: Components, device: torch.device, memory: MemoryOptions, preset: str) -> PulidFluxPipeline:
    """Cast and place every component (offload: on the CPU until used), quantize the transformer."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    residency = Residency(device, memory.offload)
    storage = residency.storage
    for module in (c.text_encoder, c.text_encoder_2, c.id_former, c.id_attention, c.transformer):
        _cast(module, dtype).eval()
    quantize_blocks(c.transformer, memory.quantize, device, storage)
    for module in (c.text_encoder, c.text_encoder_2, c.id_former, c.id_attention, c.transformer):
        module.to(storage)
    _cast(c.vae, torch.float32).to(storage).eval()
    for module in face_modules(c.face):
        module.to(storage)
    return PulidFluxPipeline(
        tokenizer=c.tokenizer,
        text_encoder=c.text_encoder,
        tokenizer_2=c.tokenizer_2,
        text_encoder_2=c.text_encoder_2,
        transformer=c.transformer,
        vae=c.vae,
        id_former=c.id_former,
        id_attention=c.id_attention,
        face=c.face,
        face_key=c.face_key,
        device=device,
        dtype=dtype,
        residency=residency,
        preset=preset,
    )


# ---------------------------------------------------------------- tiny


def tiny_text_encoders(tokenizer: Any, tokenizer_2: Any) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=configs.TINY_TRANSFORMER["pooled_projection_dim"],
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=configs.TINY_TRANSFORMER["joint_attention_dim"],
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
        )
    )
    return clip, t5


def write_single_file(transformer: Any, folder: Path) -> Path:
    """Save a diffusers FLUX transformer as a BFL-format single file plus its config.json in `folder`."""
    from safetensors.torch import save_file

    path = folder / "flux1-tiny.safetensors"
    bfl = to_bfl(transformer.state_dict(), transformer.config)
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(path))
    transformer.save_config(str(folder))
    return path


def build_tiny(
    device: torch.device, seed: int = 0, memory: MemoryOptions = MemoryOptions()
) -> PulidFluxPipeline:
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder, text_encoder_2 = tiny_text_encoders(tokenizer, tokenizer_2)
        seeded = FluxTransformer2DModel(**configs.TINY_TRANSFORMER)
        vae = AutoencoderKL(**configs.TINY_VAE)
        id_former = IDFormer(
            id_dim=512 + TINY_EVA.output_dim, vit_dim=TINY_EVA.width, **configs.TINY_ID_FORMER
        )
        id_attention = id_attention_modules(configs.TINY_TRANSFORMER, configs.TINY_ID_ATTENTION)
    with tempfile.TemporaryDirectory(prefix="pulid-flux-tiny-") as tmp:
        path = write_single_file(seeded, Path(tmp))
        transformer = transformer_from_single_file(path, Path(tmp), torch.float32)
    face, face_key = build_tiny_face(device, seed)
    parts = Components(
        tokenizer,
        text_encoder,
        tokenizer_2,
        text_encoder_2,
        transformer,
        vae,
        id_former,
        id_attention,
        face,
        face_key,
    )
    return assemble(parts, device, memory, "tiny")


# ---------------------------------------------------------------- official


def build_official(
    weights_dir: Path | None, device: torch.device, memory: MemoryOptions
) -> PulidFluxPipeline:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

    layout = official_layout(weights_dir) or "diffusers"  # incomplete: resolve_all lists what is missing
    files = resolve_all(FLUX_FILES if layout == "diffusers" else FLUX_SINGLE_FILES, weights_dir, "flux")
    log.info("loading FLUX.1-dev (%s layout), memory options %s", layout, memory)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = {
        k: files[f"{k}_config"].parent for k in ("text_encoder", "text_encoder_2", "transformer", "vae")
    }
    tokenizer = CLIPTokenizer.from_pretrained(files["tokenizer/vocab.json"].parent)
    tokenizer_2 = T5Tokenizer.from_pretrained(files["tokenizer_2/tokenizer.json"].parent)
    text_encoder = CLIPTextModel.from_pretrained(folder["text_encoder"], dtype=dtype)
    text_encoder_2 = T5EncoderModel.from_pretrained(folder["text_encoder_2"], dtype=dtype)
    if layout == "diffusers":
        transformer = transformer_from_folder(folder["transformer"], dtype)
        vae = AutoencoderKL.from_pretrained(folder["vae"], torch_dtype=torch.float32, local_files_only=True)
    else:
        transformer = transformer_from_single_file(files["flux1_dev"], folder["transformer"], dtype)
        vae = vae_from_single_file(files["ae"], folder["vae"])

    with torch.device("meta"):
        id_former = IDFormer(**configs.ID_FORMER)
        id_attention = id_attention_modules(transformer.config, configs.ID_ATTENTION)
    load_pulid(files["pulid_flux"], id_former, id_attention)
    face, face_key = build_official_face(files, device)
    parts = Components(
        tokenizer,
        text_encoder,
        tokenizer_2,
        text_encoder_2,
        transformer,
        vae,
        id_former,
        id_attention,
        face,
        face_key,
    )
    return assemble(parts, device, memory, "official")


__all__ = ["build_official", "build_tiny", "load"]
