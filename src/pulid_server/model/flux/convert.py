"""FLUX transformer keys: BFL single-file layout (`flux1-dev.safetensors`) <-> diffusers layout.

diffusers' own converter (`convert_flux_transformer_checkpoint_to_diffusers`) hardcodes the width 3072
when it splits the single blocks' fused `linear1`, so it cannot convert a toy-size file. This one reads
every width from the transformer config, so the tiny preset's BFL file goes through exactly the code that
loads the real one; the tests check that both converters agree on the full-size layout.

Each rule maps one BFL tensor to one or more diffusers tensors: renamed, split along dim 0 (fused QKV,
fused QKV+MLP) or with its two halves swapped (BFL's final modulation is (shift, scale), diffusers'
AdaLayerNormContinuous expects (scale, shift)). `to_bfl` applies the rules backwards (the tiny preset
writes its file with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

COPY, SPLIT, SWAP = "copy", "split", "swap"


@dataclass(frozen=True)
class Rule:
    bfl: str  # without ".weight"/".bias"
    diffusers: tuple[str, ...]
    op: str = COPY
    sizes: tuple[int, ...] = ()  # SPLIT: rows of each part
    params: tuple[str, ...] = ("weight", "bias")


def rules(config: Mapping[str, Any]) -> list[Rule]:
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    mlp = 4 * inner  # mlp_ratio 4 in both implementations
    out: list[Rule] = [
        Rule("img_in", ("x_embedder",)),
        Rule("txt_in", ("context_embedder",)),
        Rule("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
        Rule("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
        Rule("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
        Rule("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
        Rule("final_layer.linear", ("proj_out",)),
        Rule("final_layer.adaLN_modulation.1", ("norm_out.linear",), SWAP),
    ]
    if config.get("guidance_embeds"):
        out += [
            Rule("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
            Rule("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
        ]
    qkv = (inner, inner, inner)
    for i in range(int(config["num_layers"])):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        out += [
            Rule(b + "img_mod.lin", (d + "norm1.linear",)),
            Rule(b + "txt_mod.lin", (d + "norm1_context.linear",)),
            Rule(b + "img_attn.qkv", tuple(d + f"attn.to_{x}" for x in "qkv"), SPLIT, qkv),
            Rule(b + "txt_attn.qkv", tuple(d + f"attn.add_{x}_proj" for x in "qkv"), SPLIT, qkv),
            Rule(b + "img_attn.norm.query_norm", (d + "attn.norm_q",), params=("scale",)),
            Rule(b + "img_attn.norm.key_norm", (d + "attn.norm_k",), params=("scale",)),
            Rule(b + "txt_attn.norm.query_norm", (d + "attn.norm_added_q",), params=("scale",)),
            Rule(b + "txt_attn.norm.key_norm", (d + "attn.norm_added_k",), params=("scale",)),
            Rule(b + "img_attn.proj", (d + "attn.to_out.0",)),
            Rule(b + "txt_attn.proj", (d + "attn.to_add_out",)),
            Rule(b + "img_mlp.0", (d + "ff.net.0.proj",)),
            Rule(b + "img_mlp.2", (d + "ff.net.2",)),
            Rule(b + "txt_mlp.0", (d + "ff_context.net.0.proj",)),
            Rule(b + "txt_mlp.2", (d + "ff_context.net.2",)),
        ]
    for i in range(int(config["num_single_layers"])):
        b, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        fused = (*(d + f"attn.to_{x}" for x in "qkv"), d + "proj_mlp")
        out += [
            Rule(b + "modulation.lin", (d + "norm.linear",)),
            Rule(b + "linear1", fused, SPLIT, (*qkv, mlp)),
            Rule(b + "norm.query_norm", (d + "attn.norm_q",), params=("scale",)),
            Rule(b + "norm.key_norm", (d + "attn.norm_k",), params=("scale",)),
            Rule(b + "linear2", (d + "proj_out",)),
        ]
    return out


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _param_name(rule: Rule, param: str) -> str:
    return "weight" if param == "scale" else param  # RMSNorm: BFL `scale`, torch `weight`


def to_diffusers(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """BFL keys -> diffusers keys. A `model.diffusion_model.` prefix (ComfyUI saves) is dropped; keys
    the rules do not name are kept as they are, so the strict check afterwards reports them."""
    src = {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for rule in rules(config):
        for param in rule.params:
            key = f"{rule.bfl}.{param}"
            if key not in src:
                continue  # reported as a missing diffusers key by the strict check
            t = src.pop(key)
            if rule.op == SPLIT:
                parts: tuple[torch.Tensor, ...] = torch.split(t, list(rule.sizes), dim=0)
            elif rule.op == SWAP:
                parts = (_swap_halves(t),)
            else:
                parts = (t,)
            for name, part in zip(rule.diffusers, parts, strict=True):
                out[f"{name}.{_param_name(rule, param)}"] = part
    out.update(src)
    return out


def to_bfl(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers keys -> BFL keys (the inverse of `to_diffusers`)."""
    src = dict(state)
    out: dict[str, torch.Tensor] = {}
    for rule in rules(config):
        for param in rule.params:
            parts = [src.pop(f"{name}.{_param_name(rule, param)}") for name in rule.diffusers]
            t = torch.cat(parts, dim=0) if rule.op == SPLIT else parts[0]
            out[f"{rule.bfl}.{param}"] = _swap_halves(t) if rule.op == SWAP else t
    if src:
        raise KeyError(f"diffusers keys without a BFL name: {sorted(src)[:5]}")
    return out
