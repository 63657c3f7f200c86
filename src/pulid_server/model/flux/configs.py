"""Model configs (diffusers naming) for FLUX.1-dev and for the tiny preset. No torch here.

The FLUX.1-dev values are those of `black-forest-labs/FLUX.1-dev` `transformer/config.json` and
`vae/config.json` (the same numbers as the official `flux/util.py` `configs["flux-dev"]`); the official
preset reads the files themselves, these dicts serve the tiny preset, the meta-device tests and the
benchmarks, which have no gated files.
"""

from __future__ import annotations

from typing import Any

FLUX_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}

FLUX_DEV_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
    "force_upcast": True,
}

# PuLID-FLUX modules at full size (`pulid/encoders_transformer.py` defaults).
ID_FORMER: dict[str, int] = {
    "id_dim": 1280,  # 512 ArcFace + 768 EVA
    "vit_dim": 1024,
    "mapping_dim": 1024,
    "dim": 1024,
    "depth": 10,
    "dim_head": 64,
    "heads": 16,
    "num_id_token": 5,
    "num_queries": 32,
    "output_dim": 2048,
    "ff_mult": 4,
}
ID_ATTENTION: dict[str, int] = {"dim": 3072, "dim_head": 128, "heads": 16, "kv_dim": 2048}
DOUBLE_INTERVAL = 2  # an ID cross-attention after double blocks 0, 2, 4, ...
SINGLE_INTERVAL = 4  # ... and after single blocks 0, 4, 8, ...

# ---------------------------------------------------------------- tiny preset (toy sizes, same classes)

TINY_TRANSFORMER: dict[str, Any] = {
    **FLUX_DEV_TRANSFORMER,
    "num_layers": 4,  # ID after double blocks 0, 2
    "num_single_layers": 8,  # ID after single blocks 0, 4
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # tiny T5 width
    "pooled_projection_dim": 32,  # tiny CLIP width
    "axes_dims_rope": (4, 6, 6),
}
TINY_VAE: dict[str, Any] = {
    **FLUX_DEV_VAE,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
TINY_ID_FORMER: dict[str, int] = {
    "mapping_dim": 32,
    "dim": 32,
    "depth": 5,
    "dim_head": 8,
    "heads": 4,
    "num_id_token": 5,
    "num_queries": 8,
    "output_dim": 24,
    "ff_mult": 4,
}  # id_dim and vit_dim follow the tiny EVA
TINY_ID_ATTENTION: dict[str, int] = {"dim": 32, "dim_head": 8, "heads": 2, "kv_dim": 24}
