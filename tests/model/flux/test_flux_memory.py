"""Memory options on CPU (the code paths; GPU peaks are in docs/model.md), and the shared face cache."""

from __future__ import annotations

import pytest
import torch

from pulid_server.model.common.face_cache import FACE_FEATURES
from pulid_server.model.flux import FluxRequest, MemoryOptions
from pulid_server.model.flux.presets import build_tiny, load

Ref = tuple[bytes, object]


def request(ref: Ref, **kw: object) -> FluxRequest:
    base = {"prompt": "a portrait photo", "width": 48, "height": 48, "num_inference_steps": 2}
    return FluxRequest(reference_image=ref, **{**base, **kw})  # type: ignore[arg-type]


def test_offload_moves_each_group_in_turn_and_changes_nothing(astronaut: Ref) -> None:
    plain = build_tiny(torch.device("cpu"))
    offload = load("tiny", torch.device("cpu"), None, offload=True)
    req = request(astronaut, true_cfg=2.0)
    assert torch.equal(plain.denoise(req), offload.denoise(req))
    offload.generate(req)
    # second request: ID tokens cached, so the face stack is not moved again
    assert offload.residency.history == ["id", "id", "text", "transformer", "text", "transformer", "vae"]
    assert all(p.device.type == "cpu" for p in offload.transformer.parameters())


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_quantized_transformer_runs_close_to_full_precision(astronaut: Ref, mode: str) -> None:
    from torchao.utils import TorchAOBaseTensor

    plain = build_tiny(torch.device("cpu"))
    quant = build_tiny(torch.device("cpu"), memory=MemoryOptions(quantize=mode))  # type: ignore[arg-type]
    weight = quant.transformer.single_transformer_blocks[0].proj_mlp.weight
    assert isinstance(weight, TorchAOBaseTensor)
    assert not isinstance(quant.transformer.proj_out.weight, TorchAOBaseTensor)  # blocks only
    assert not isinstance(quant.id_attention[0].to_q.weight, TorchAOBaseTensor)  # PuLID stays full
    req = request(astronaut)
    a, b = plain.denoise(req), quant.denoise(req)
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_sdxl_and_flux_share_face_features(astronaut: Ref) -> None:
    """Both tiny families load the same face stack: an image analysed for one is a hit for the other."""
    from pulid_server.model.sdxl import GenerationRequest
    from pulid_server.model.sdxl.presets import build_tiny as build_sdxl

    flux, sdxl = build_tiny(torch.device("cpu")), build_sdxl(torch.device("cpu"))
    assert flux.face_key == sdxl.face_key
    FACE_FEATURES.clear()
    flux.denoise(request(astronaut, num_inference_steps=1))
    logs: list[str] = []
    sdxl.generate(
        GenerationRequest(
            reference_images=[astronaut], prompt="p", width=64, height=64, num_inference_steps=1
        ),  # type: ignore[list-item]
        log=logs.append,
    )
    assert (flux.stats.face_analyses, sdxl.stats.face_analyses) == (1, 0)
    assert "face features cached for reference_images[0]" in logs
