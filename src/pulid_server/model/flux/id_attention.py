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
        """The official computation (kept as the reference; the pipeline uses `fold` + `attend`)."""
        k, v = self.to_kv(self.norm1(id_tokens)).chunk(2, dim=-1)
        q = self.to_q(self.norm2(image))
        return self.to_out(perceiver_attend(q, k, v, self.heads))

    def fold(self, id_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold `to_q` into the keys and `to_out` into the values, once per ID: with 32 ID tokens,
        `x @ (Wq_h^T k_h^T)` and `softmax(.) @ (v_h Wo_h)` cost a quarter of `to_q`/`to_out` on every
        image token (same maths; only the bf16 rounding order differs). Returns keys [B, H, dim, n]
        (scale folded in) and values [B, H, n, dim], in fp32 then cast to the weights' dtype."""
        k, v = self.to_kv(self.norm1(id_tokens)).float().chunk(2, dim=-1)
        k, v = k.unflatten(-1, (self.heads, -1)), v.unflatten(-1, (self.heads, -1))  # [B, n, H, D]
        wq = self.to_q.weight.float().unflatten(0, (self.heads, -1))  # [H, D, dim]
        wo = self.to_out.weight.float().unflatten(1, (self.heads, -1))  # [dim, H, D]
        keys = torch.einsum("hdc,bnhd->bhcn", wq, k) * k.shape[-1] ** -0.5
        values = torch.einsum("bnhd,chd->bhnc", v, wo)
        dtype = self.to_q.weight.dtype
        return keys.to(dtype), values.to(dtype)

    def attend(self, folded: tuple[torch.Tensor, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        keys, values = folded
        logits = torch.einsum("blc,bhcn->bhln", self.norm2(image), keys)
        weight = torch.softmax(logits.float(), dim=-1).to(values.dtype)
        return torch.einsum("bhln,bhnc->blc", weight, values)


def ca_positions(num_double: int, num_single: int, double_every: int, single_every: int) -> list[str]:
    """Block paths in checkpoint order: the k-th entry gets `pulid_ca[k]`."""
    doubles = [f"transformer_blocks.{i}" for i in range(num_double) if i % double_every == 0]
    singles = [f"single_transformer_blocks.{j}" for j in range(num_single) if j % single_every == 0]
    return doubles + singles


@dataclass
class _Condition:
    tokens: torch.Tensor | None = None
    weight: float = 1.0
    folded: list[tuple[torch.Tensor, torch.Tensor]] | None = None


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
        self._now = _Condition()
        self._folded: list[tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = []
        for k, (path, module) in enumerate(zip(paths, modules)):
            transformer.get_submodule(path).register_forward_hook(self._hook(k, module))

    def _fold(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Folded keys/values of every module for these ID tokens; the last two (cond, uncond) kept."""
        for seen, folded in self._folded:
            if seen is tokens:
                return folded
        with torch.no_grad():
            folded = [ca.fold(tokens) for ca in self.modules]  # type: ignore[operator]
        self._folded = [*self._folded[-1:], (tokens, folded)]
        return folded

    def _hook(self, k: int, ca: nn.Module) -> Any:
        def add_id(_block: nn.Module, _args: Any, output: tuple[torch.Tensor, torch.Tensor]) -> Any:
            folded = self._now.folded
            if folded is None:
                return output
            if not (isinstance(output, tuple) and len(output) == 2):  # older diffusers: one fused stream
                raise RuntimeError("FLUX blocks must return (text, image): use diffusers 0.42")
            text, image = output  # diffusers order: (encoder_hidden_states, hidden_states)
            return text, image + self._now.weight * ca.attend(folded[k], image)  # type: ignore[operator]

        return add_id

    @contextmanager
    def condition(self, tokens: torch.Tensor | None, weight: float) -> Iterator[None]:
        self._now = _Condition(tokens, weight, None if tokens is None else self._fold(tokens))
        try:
            yield
        finally:
            self._now = _Condition()
