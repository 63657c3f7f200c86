"""IDEncoder (PuLID v1, `pulid/encoders.py`): (id_cond, 5 EVA taps) -> 10 ID tokens.

Key names match `pulid_v1.bin` under the `id_adapter.` prefix. Sizes are arguments so the tiny preset
runs the same class; the official sizes are the defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from pulid_server.model.common.layers import mapping_mlp


class IDEncoder(nn.Module):
    """`width` = 512 (ArcFace) + EVA output dim; `vit_width` = EVA width; `context_dim` = UNet cross dim."""

    def __init__(
        self,
        width: int = 1280,
        context_dim: int = 2048,
        num_token: int = 5,
        vit_width: int = 1024,
        num_taps: int = 5,
    ) -> None:
        super().__init__()
        self.num_token = num_token
        self.context_dim = context_dim
        self.num_taps = num_taps
        h1 = min((context_dim * num_token) // 4, 1024)
        h2 = min((context_dim * num_token) // 2, 1024)
        self.body = nn.Sequential(
            nn.Linear(width, h1),
            nn.LayerNorm(h1),
            nn.LeakyReLU(),
            nn.Linear(h1, h2),
            nn.LayerNorm(h2),
            nn.LeakyReLU(),
            nn.Linear(h2, context_dim * num_token),
        )
        for i in range(num_taps):
            setattr(self, f"mapping_{i}", mapping_mlp(vit_width, vit_width, context_dim))
            setattr(self, f"mapping_patch_{i}", mapping_mlp(vit_width, vit_width, context_dim))

    def forward(self, x: torch.Tensor, y: list[torch.Tensor]) -> torch.Tensor:
        """x: [B, width]; y: taps, each [B, 1 + patches, vit_width] -> [B, num_token + taps, context_dim]."""
        tokens = self.body(x).reshape(-1, self.num_token, self.context_dim)
        per_tap = [
            getattr(self, f"mapping_{i}")(emb[:, :1])
            + getattr(self, f"mapping_patch_{i}")(emb[:, 1:]).mean(dim=1, keepdim=True)
            for i, emb in enumerate(y)
        ]
        return torch.cat([tokens, torch.cat(per_tap, dim=1)], dim=1)
