"""PuLID-FLUX's ID cross-attention (`PerceiverAttentionCA`) and where it goes into diffusers' FLUX.

Official placement (`flux/model.py`): after double block i when i % 2 == 0 and after single block j when
j % 4 == 0, doubles numbered first (FLUX.1-dev: 10 + 10 = 20 modules), on the image tokens only:
`img = img + id_weight * ca(id, img)`, no gate. diffusers 0.42's blocks return `(text, image)` (the BFL
double block returns `(image, text)`; BFL single blocks work on `cat(text, image)`, diffusers 0.42 hands
both streams back separately), so the hook adds to the second output. The hooks are forward hooks on the
unchanged diffusers blocks: the transformer's own forward, loading, offload and quantization stay as
diffusers has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def perceiver_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention as `pulid/encoders_transformer.py` computes it: q and k each scaled by
    dim_head ** -0.25 (steadier in half precision), softmax in fp32, no mask. [B, N, H*D] in and out."""
    b, n, _ = q.shape
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    scale = q.shape[-1] ** -0.25
    weight = (q * scale) @ (k * scale).transpose(-2, -1)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return (weight @ v).transpose(1, 2).reshape(b, n, -1)


class PerceiverAttentionCA(nn.Module):
    """Image tokens (queries, width `dim`) attend to the ID tokens (width `kv_dim`). Key names as
    `pulid_ca.{k}.*` in `pulid_flux_v0.9.*.safetensors`."""

    def __init__(self, dim: int = 3072, dim_head: int = 128, heads: int = 16, kv_dim: int = 2048) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(kv_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(kv_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, id_tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(self.norm1(id_tokens)).chunk(2, dim=-1)
        q = self.to_q(self.norm2(image))
        return self.to_out(perceiver_attend(q, k, v, self.heads))


def ca_positions(num_double: int, num_single: int, double_every: int, single_every: int) -> list[str]:
    """Block paths in checkpoint order: the k-th entry gets `pulid_ca[k]`."""
    doubles = [f"transformer_blocks.{i}" for i in range(num_double) if i % double_every == 0]
    singles = [f"single_transformer_blocks.{j}" for j in range(num_single) if j % single_every == 0]
    return doubles + singles


@dataclass
class _Condition:
    tokens: torch.Tensor | None = None
    weight: float = 1.0


class IDInjection:
    """Installs the hooks once; `condition(tokens, weight)` sets the ID for the transformer calls inside
    it (None: the plain FLUX transformer, as the official code before `start_step`)."""

    def __init__(
        self, transformer: Any, modules: nn.ModuleList, double_every: int = 2, single_every: int = 4
    ) -> None:
        cfg = transformer.config
        paths = ca_positions(cfg.num_layers, cfg.num_single_layers, double_every, single_every)
        if len(paths) != len(modules):
            raise ValueError(f"{len(modules)} ID attention modules for {len(paths)} positions")
        self.modules = modules
        self.calls = 0  # hook runs with an ID (tests and stats read it)
        self._now = _Condition()
        for path, module in zip(paths, modules):
            transformer.get_submodule(path).register_forward_hook(self._hook(module))

    def _hook(self, ca: nn.Module) -> Any:
        def add_id(_block: nn.Module, _args: Any, output: tuple[torch.Tensor, torch.Tensor]) -> Any:
            tokens = self._now.tokens
            if tokens is None:
                return output
            self.calls += 1
            text, image = output  # diffusers order: (encoder_hidden_states, hidden_states)
            return text, image + self._now.weight * ca(tokens, image)

        return add_id

    @contextmanager
    def condition(self, tokens: torch.Tensor | None, weight: float) -> Iterator[None]:
        self._now = _Condition(tokens, weight)
        try:
            yield
        finally:
            self._now = _Condition()
