"""IDFormer (PuLID-FLUX, `pulid/encoders_transformer.py`): (id_cond, 5 EVA taps) -> 32 ID tokens.

A Perceiver resampler: 32 learned queries plus 5 tokens mapped from id_cond are the latents; for each
EVA tap (in order) the tap is mapped to the latent width and 2 attention + feed-forward layers let the
latents read `cat(id tokens, tap tokens)` (keys/values are `cat(norm1(context), norm2(latents))`).
The first 32 latents, times `proj_out`, are the ID tokens. `proj_out` and `latents` are raw parameters,
as in the checkpoint (`pulid_encoder.proj_out` is [1024, 2048] used as `latents @ proj_out`; an
nn.Linear would store it transposed under another name). Sizes are arguments so the tiny preset runs
this class; the defaults are the official ones.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from pulid_server.model.common.layers import mapping_mlp
from pulid_server.model.flux.id_attention import perceiver_attend


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context, latents = self.norm1(context), self.norm2(latents)
        k, v = self.to_kv(torch.cat((context, latents), dim=-2)).chunk(2, dim=-1)
        return self.to_out(perceiver_attend(self.to_q(latents), k, v, self.heads))


class IDFormer(nn.Module):
    def __init__(
        self,
        id_dim: int = 1280,
        vit_dim: int = 1024,
        mapping_dim: int = 1024,
        dim: int = 1024,
        depth: int = 10,
        dim_head: int = 64,
        heads: int = 16,
        num_id_token: int = 5,
        num_queries: int = 32,
        output_dim: int = 2048,
        ff_mult: int = 4,
        num_taps: int = 5,
    ) -> None:
        super().__init__()
        if depth % num_taps:
            raise ValueError(f"depth {depth} must be a multiple of the {num_taps} taps")
        self.dim, self.num_id_token, self.num_queries = dim, num_id_token, num_queries
        self.per_tap = depth // num_taps
        self.num_taps = num_taps
        scale = dim**-0.5
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) * scale)
        self.proj_out = nn.Parameter(scale * torch.randn(dim, output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        for i in range(num_taps):
            setattr(self, f"mapping_{i}", mapping_mlp(vit_dim, mapping_dim, dim))
        self.id_embedding_mapping = mapping_mlp(id_dim, mapping_dim, dim * num_id_token)

    def forward(self, id_cond: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """id_cond [B, id_dim]; taps: num_taps x [B, 1 + patches, vit_dim] -> [B, num_queries, output_dim]."""
        id_tokens = self.id_embedding_mapping(id_cond).reshape(id_cond.shape[0], -1, self.dim)
        latents = torch.cat((self.latents.expand(id_cond.shape[0], -1, -1), id_tokens), dim=1)
        for i, tap in enumerate(taps):
            context = torch.cat((id_tokens, getattr(self, f"mapping_{i}")(tap)), dim=1)
            for j in range(i * self.per_tap, (i + 1) * self.per_tap):
                attn, ff = cast(nn.ModuleList, self.layers[j])
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, : self.num_queries] @ self.proj_out
