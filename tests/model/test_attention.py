"""ID attention maths (§3.3-3.6) on a small diffusers Attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from pulid_server.model.sdxl.attention import IDAttnProcessor, IDContext


def setup(seed: int = 0) -> tuple[Attention, IDAttnProcessor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16)
    proc = IDAttnProcessor(32, 16)
    x = torch.randn(4, 10, 32)
    text = torch.randn(4, 7, 16)
    return attn, proc, x, text


def reference_ortho(h: torch.Tensor, i: torch.Tensor, s: float, a: torch.Tensor | None) -> torch.Tensor:
    proj = (h * i).sum(-2, keepdim=True) / (h * h).sum(-2, keepdim=True) * h
    if a is None:
        return h + s * (i - proj)
    return h + s * (i - (1 - a) * proj)


def test_modes_match_the_reference_formulas() -> None:
    attn, proc, x, text = setup()
    emb = torch.randn(4, 10, 16)
    q = attn.to_q(x).view(4, -1, 2, 16).transpose(1, 2)
    k = attn.to_k(text).view(4, -1, 2, 16).transpose(1, 2)
    v = attn.to_v(text).view(4, -1, 2, 16).transpose(1, 2)
    h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 10, 32)
    for mode, zeros in (("fidelity", 8), ("extreme style", 16)):
        tokens = torch.cat([emb, torch.zeros(4, zeros, 16)], 1)
        ik = proc.id_to_k(tokens).view(4, -1, 2, 16).transpose(1, 2)
        iv = proc.id_to_v(tokens).view(4, -1, 2, 16).transpose(1, 2)
        i = F.scaled_dot_product_attention(q, ik, iv).transpose(1, 2).reshape(4, 10, 32)
        a = (q @ ik.transpose(-2, -1)).softmax(-1).mean(1)[:, :, :5].sum(-1, keepdim=True)
        expected = attn.to_out[0](reference_ortho(h, i, 0.7, a if mode == "fidelity" else None))
        got = proc(attn, x, text, id=IDContext(emb, 0.7, mode))  # type: ignore[arg-type]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_batched_equals_per_sample_and_kv_reused_within_request() -> None:
    attn, proc, x, text = setup(1)
    emb = torch.randn(4, 10, 16)
    ctx = IDContext(emb, 0.8, "fidelity")
    batched = proc(attn, x, text, id=ctx)
    assert len(ctx._kv) == 1
    again = proc(attn, x, text, id=ctx)  # second step: cached K/V, same result
    torch.testing.assert_close(again, batched)
    for b in range(4):
        single = proc(attn, x[b : b + 1], text[b : b + 1], id=IDContext(emb[b : b + 1], 0.8, "fidelity"))
        torch.testing.assert_close(single, batched[b : b + 1], atol=1e-6, rtol=1e-5)


def test_without_id_it_is_plain_cross_attention() -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn, proc, x, text = setup(2)
    torch.testing.assert_close(proc(attn, x, text), AttnProcessor2_0()(attn, x, text))


def test_without_cfg_uncond_and_cond_tokens_are_one_sequence() -> None:
    """The reference meets its [uncond; cond] ID pair with a batch of 1: its `view(batch, -1, heads, dim)`
    makes one sequence of 2 x (tokens + zeros). Rows [uncond, cond] per image reproduce that, per image."""
    attn, proc, x, text = setup(3)
    uncond, cond = torch.randn(1, 10, 16), torch.randn(1, 10, 16)
    q = attn.to_q(x[:1]).view(1, -1, 2, 16).transpose(1, 2)
    k = attn.to_k(text[:1]).view(1, -1, 2, 16).transpose(1, 2)
    v = attn.to_v(text[:1]).view(1, -1, 2, 16).transpose(1, 2)
    h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 10, 32)
    zeros = torch.zeros(1, 8, 16)
    tokens = torch.cat([uncond, zeros, cond, zeros], 1)  # one sequence of 36 tokens
    ik = proc.id_to_k(tokens).view(1, -1, 2, 16).transpose(1, 2)
    iv = proc.id_to_v(tokens).view(1, -1, 2, 16).transpose(1, 2)
    i = F.scaled_dot_product_attention(q, ik, iv).transpose(1, 2).reshape(1, 10, 32)
    a = (q @ ik.transpose(-2, -1)).softmax(-1).mean(1)[:, :, :5].sum(-1, keepdim=True)  # 5 uncond tokens
    expected = attn.to_out[0](reference_ortho(h, i, 0.7, a))
    got = proc(attn, x[:1], text[:1], id=IDContext(torch.cat([uncond, cond]), 0.7, "fidelity"))  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    cond_only = proc(attn, x[:1], text[:1], id=IDContext(cond, 0.7, "fidelity"))  # type: ignore[arg-type]
    assert (cond_only - got).abs().max() > 1e-3
    # a batch of 2 images with rows [u, c, u, c] is each image on its own
    pair = torch.cat([uncond, cond])
    batched = proc(attn, x[:2], text[:2], id=IDContext(torch.cat([pair, pair]), 0.7, "fidelity"))  # type: ignore[arg-type]
    second = proc(attn, x[1:2], text[1:2], id=IDContext(pair, 0.7, "fidelity"))  # type: ignore[arg-type]
    torch.testing.assert_close(batched[:1], got, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batched[1:], second, atol=1e-6, rtol=1e-5)
