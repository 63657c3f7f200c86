"""PuLID ID cross-attention (`pulid/attention_processor.py`, IDAttnProcessor2_0), mode passed per call.

The reference keeps the mode in module globals (NUM_ZERO, ORTHO, ORTHO_v2); here it travels with the
request inside `IDContext`, which also caches each layer's ID key/value for the whole request (they do not
depend on the step). The checkpoint index of a processor is its position in `unet.attn_processors`
(down -> up -> mid, attn1 before attn2), so the k-th cross-attention has index 2k+1 in SDXL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

from pulid_server.model.sdxl.request import Mode


@dataclass(frozen=True)
class ModeSpec:
    num_zero: int
    ortho: bool
    ortho_v2: bool


MODES: dict[str, ModeSpec] = {
    "fidelity": ModeSpec(num_zero=8, ortho=False, ortho_v2=True),
    "extreme style": ModeSpec(num_zero=16, ortho=True, ortho_v2=False),
    "extremely style": ModeSpec(num_zero=16, ortho=True, ortho_v2=False),  # official UI spelling
}


@dataclass
class IDContext:
    """Per-request ID conditioning, passed as `cross_attention_kwargs={"id": ctx}`.

    `embedding` is already tiled for the UNet batch: [uncond x N ; cond x N] under CFG; without CFG 2N rows
    [uncond, cond] x N, which `_add_id` views as N sequences of twice the length (the reference's reshape).
    """

    embedding: torch.Tensor
    scale: float
    mode: Mode = "fidelity"
    _kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> ModeSpec:
        return MODES[self.mode]


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _project(h: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    # Per-channel projection of i onto h over the spatial axis (dim -2), fp32 as in the reference.
    return torch.sum(h * i, dim=-2, keepdim=True) / torch.sum(h * h, dim=-2, keepdim=True) * h


class SelfAttnProcessor(AttnProcessor2_0):
    """attn1: diffusers' SDPA processor that accepts (and ignores) the ID kwarg."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        id: IDContext | None = None,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class IDAttnProcessor(nn.Module):
    """attn2 with the parallel ID attention. Parameters: `id_to_k`, `id_to_v` (no bias), fp32."""

    def __init__(self, hidden_size: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def _id_kv(self, ctx: IDContext, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cached = ctx._kv.get(id(self))
        if cached is None:
            emb = ctx.embedding.to(self.id_to_k.weight.dtype)
            zeros = emb.new_zeros((emb.size(0), ctx.spec.num_zero, emb.size(-1)))
            tokens = torch.cat((emb, zeros), dim=1)
            cached = (self.id_to_k(tokens).to(dtype), self.id_to_v(tokens).to(dtype))
            ctx._kv[id(self)] = cached
        return cached

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        id: IDContext | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size = context.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (
            t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value)
        )
        hidden_states = _merge_heads(
            F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        )
        hidden_states = hidden_states.to(query.dtype)

        if id is not None:
            hidden_states = self._add_id(hidden_states, query, id, batch_size, attn.heads, head_dim)

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _add_id(
        self, h: torch.Tensor, query: torch.Tensor, ctx: IDContext, batch: int, heads: int, head_dim: int
    ) -> torch.Tensor:
        id_key, id_value = self._id_kv(ctx, query.dtype)
        # [rows, T, C] -> [batch, rows / batch x T, ...]: rows == batch, or 2 x batch without CFG (see IDContext)
        id_key = id_key.view(batch, -1, heads, head_dim).transpose(1, 2)
        id_value = id_value.view(batch, -1, heads, head_dim).transpose(1, 2)
        i = _merge_heads(F.scaled_dot_product_attention(query, id_key, id_value)).to(query.dtype)
        spec, s = ctx.spec, ctx.scale
        if not spec.ortho and not spec.ortho_v2:
            return h + s * i
        orig = h.dtype
        h32, i32 = h.float(), i.float()
        if spec.ortho_v2:
            # Unscaled logits and the query dtype, exactly as the reference (fp16 on CUDA).
            attn_mean = (query @ id_key.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)
            attn_mean = attn_mean[:, :, :5].sum(dim=-1, keepdim=True)
            orthogonal = i32 + (attn_mean - 1) * _project(h32, i32)
        else:
            orthogonal = i32 - _project(h32, i32)
        return (h32 + s * orthogonal).to(orig)


def install_id_processors(unet: Any) -> nn.ModuleList:
    """Give every attn2 an IDAttnProcessor and every attn1 a SelfAttnProcessor.

    Returns the ModuleList whose state dict is `id_adapter_attn_layers.*` (attn1 slots are empty modules,
    so only odd indices carry keys, as in the checkpoint). The processors are created in fp32 on the
    UNet's device whatever the UNet dtype, as the reference does.
    """
    cross_dim = unet.config.cross_attention_dim
    device = next(unet.parameters()).device
    procs: dict[str, Any] = {}
    slots: list[nn.Module] = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            procs[name] = SelfAttnProcessor()
            slots.append(nn.Module())
            continue
        hidden = _hidden_size(unet, name)
        proc = IDAttnProcessor(hidden, cross_dim).to(device=device, dtype=torch.float32)
        procs[name] = proc
        slots.append(proc)
    unet.set_attn_processor(procs)
    return nn.ModuleList(slots)


def _hidden_size(unet: Any, name: str) -> int:
    channels = unet.config.block_out_channels
    if name.startswith("mid_block"):
        return int(channels[-1])
    if name.startswith("up_blocks"):
        return int(list(reversed(channels))[int(name[len("up_blocks.")])])
    return int(channels[int(name[len("down_blocks.")])])
