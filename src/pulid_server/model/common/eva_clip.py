"""EVA02-CLIP-L-14-336 visual tower (port of EVA-CLIP `eva_vit_model.py`, MIT), with PuLID's 5 taps.

Key names match the `visual.*` part of `EVA02_CLIP_L_336_psz14_s6B.pt`. Plain attention replaces xformers
(same maths). Sizes are arguments so the tiny preset runs the same class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EvaConfig:
    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 2730  # int(1024 * 2.6667)
    output_dim: int = 768
    pt_grid: int = 16  # RoPE trained on a 16x16 grid, interpolated to image_size // patch_size
    tap_every: int = 4  # taps = residual stream entering blocks tap_every, 2*tap_every, ... (0 excluded)
    num_taps: int = 5

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tap_blocks(self) -> list[int]:
        return [self.tap_every * (k + 1) for k in range(self.num_taps)]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class VisionRotaryEmbeddingFast(nn.Module):
    """2D RoPE over the patch grid; `freqs_cos/sin` are buffers stored in the checkpoint."""

    def __init__(self, dim: int, pt_seq_len: int, ft_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        t = torch.arange(ft_seq_len) / ft_seq_len * pt_seq_len
        freqs = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # (n, dim)
        n = ft_seq_len
        grid = torch.cat([freqs[:, None, :].expand(n, n, -1), freqs[None, :, :].expand(n, n, -1)], dim=-1)
        self.register_buffer("freqs_cos", grid.cos().reshape(n * n, -1))
        self.register_buffer("freqs_sin", grid.sin().reshape(n * n, -1))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.freqs_cos + _rotate_half(t) * self.freqs_sin  # type: ignore[operator]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: VisionRotaryEmbeddingFast) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.inner_attn_ln = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope  # shared with the tower: the checkpoint stores it under both names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _c = x.shape
        q = F.linear(x, self.q_proj.weight, self.q_bias)
        k = F.linear(x, self.k_proj.weight)
        v = F.linear(x, self.v_proj.weight, self.v_bias)
        q, k, v = (t.reshape(b, n, self.heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
        # RoPE on patch tokens only; CLS stays as is.
        q = torch.cat((q[:, :, :1], self.rope(q[:, :, 1:])), dim=-2).type_as(v)
        k = torch.cat((k[:, :, :1], self.rope(k[:, :, 1:])), dim=-2).type_as(v)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(self.inner_attn_ln(x))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.ffn_ln = nn.LayerNorm(hidden, eps=1e-6)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(self.act(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, cfg: EvaConfig, rope: VisionRotaryEmbeddingFast) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = Attention(cfg.width, cfg.heads, rope)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = SwiGLU(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EVAVisionTransformer(nn.Module):
    def __init__(self, cfg: EvaConfig = EvaConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid + 1, cfg.width))
        self.rope = VisionRotaryEmbeddingFast(cfg.width // cfg.heads // 2, cfg.pt_grid, cfg.grid)
        self.blocks = nn.ModuleList([Block(cfg, self.rope) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, cfg.output_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised pixels [B,3,S,S] -> (head(norm(CLS)) [B,out], taps: residual stream entering tap blocks)."""
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        taps: list[torch.Tensor] = []
        tap_blocks = set(self.cfg.tap_blocks)
        for idx, blk in enumerate(self.blocks):
            if idx in tap_blocks:
                taps.append(x)
            x = blk(x)
        return self.head(self.norm(x)[:, 0]), taps

    def encode(self, image01: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """PuLID's use: [B,3,H,W] in [0,1] -> (L2-normalised feature, taps).

        Bicubic resize without antialias, as the pinned torchvision 0.15 did on tensors.
        """
        size = self.cfg.image_size
        x = F.interpolate(image01, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
        mean = x.new_tensor(OPENAI_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(OPENAI_STD).view(1, 3, 1, 1)
        feat, taps = self((x - mean) / std)
        return feat / torch.norm(feat, 2, 1, True), taps
