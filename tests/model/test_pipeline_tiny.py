"""The tiny preset runs the production pipeline end to end; these tests check its behaviour."""

from __future__ import annotations

import copy
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pulid_server.model import NoFaceError, WeightsMissingError, get_family
from pulid_server.model.sdxl import GenerationRequest
from pulid_server.model.sdxl.pipeline import PulidPipeline

Ref = tuple[bytes, Image.Image]


def as_ref(array: np.ndarray) -> Ref:
    image = Image.fromarray(array).convert("RGB")
    return png(image), image


def request(refs: list[Ref], **kw: object) -> GenerationRequest:
    base: dict[str, object] = {
        "prompt": "a photo of a person",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "seed": 7,
        "guidance_scale": 1.2,
    }
    base.update(kw)
    return GenerationRequest(reference_images=refs, **base)  # type: ignore[arg-type]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_load_pipeline_tiny_astronaut_end_to_end(astronaut: Ref) -> None:
    from pulid_server.model.common.face_cache import FACE_FEATURES

    pipe = get_family("sdxl").load("tiny", "cpu", None)
    FACE_FEATURES.clear()  # the process-wide feature cache may hold this image from the FLUX tests
    steps: list[tuple[int, int]] = []
    logs: list[str] = []
    images = pipe.generate(
        request([astronaut], num_images=2), on_step=lambda k, n: steps.append((k, n)), log=logs.append
    )
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert all(im.mode == "RGB" for im in images)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert any("face analysis" in line for line in logs)


def test_same_seed_same_bytes_across_loads(tiny: PulidPipeline, astronaut: Ref) -> None:
    other = get_family("sdxl").load("tiny", "cpu", None)
    a = [png(im) for im in tiny.generate(request([astronaut], seed=3))]
    b = [png(im) for im in other.generate(request([astronaut], seed=3))]
    c = [png(im) for im in tiny.generate(request([astronaut], seed=4))]
    assert a == b
    assert a != c


def test_batch_of_n_equals_n_singles(tiny: PulidPipeline, astronaut: Ref) -> None:
    req = request([astronaut], num_images=3)
    latents = tiny.initial_latents(req)
    batch = tiny.generate_array(req)
    singles = [
        tiny.generate_array(request([astronaut], num_images=1), latents=latents[k : k + 1]) for k in range(3)
    ]
    np.testing.assert_allclose(batch, np.concatenate(singles), atol=1e-5)
    # image 0 of a batch is what a single run with the same seed draws
    np.testing.assert_allclose(batch[:1], tiny.generate_array(request([astronaut])), atol=1e-5)


def test_id_scale_zero_equals_plain_diffusers_sdxl(tiny: PulidPipeline, astronaut: Ref) -> None:
    from diffusers import StableDiffusionXLPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = copy.deepcopy(tiny.unet)
    unet.set_attn_processor(AttnProcessor2_0())
    plain = StableDiffusionXLPipeline(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        text_encoder_2=tiny.text_encoder_2,
        tokenizer=tiny.tokenizer,
        tokenizer_2=tiny.tokenizer_2,
        unet=unet,
        scheduler=tiny.make_scheduler(),
        add_watermarker=False,
    )
    plain.set_progress_bar_config(disable=True)
    req = request([astronaut], num_images=2, id_scale=0.0)
    latents = tiny.initial_latents(req)
    ours = tiny.generate_array(req, latents=latents)
    theirs = plain(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        num_images_per_prompt=2,
        guidance_scale=req.guidance_scale,
        num_inference_steps=4,
        height=64,
        width=64,
        latents=latents.clone(),
        output_type="np",
    ).images
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with_id = tiny.generate_array(request([astronaut], num_images=2, id_scale=0.8), latents=latents)
    assert np.abs(with_id - theirs).max() > 1e-3


def test_modes_differ(tiny: PulidPipeline, astronaut: Ref) -> None:
    fidelity = tiny.generate_array(request([astronaut], mode="fidelity", id_scale=2.0))
    style = tiny.generate_array(request([astronaut], mode="extreme style", id_scale=2.0))
    assert np.abs(fidelity - style).max() > 1e-3


@pytest.mark.parametrize(
    "faceless",
    [
        np.full((128, 128, 3), 127, dtype=np.uint8),
        np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3)),
        "coffee",
    ],
    ids=["flat", "gradient", "coffee"],
)
def test_no_face_names_the_image(tiny: PulidPipeline, astronaut: Ref, coffee: Ref, faceless: object) -> None:
    bad = coffee if isinstance(faceless, str) else as_ref(faceless)  # type: ignore[arg-type]
    with pytest.raises(NoFaceError) as err:
        tiny.generate(request([astronaut, bad]))
    assert err.value.index == 1
    assert "no face found in reference_images[1]" in str(err.value)
    with pytest.raises(NoFaceError) as err0:
        tiny.generate(request([bad]))
    assert err0.value.index == 0


def test_on_step_raising_stops_at_that_step(tiny: PulidPipeline, astronaut: Ref) -> None:
    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def on_step(k: int, total: int) -> None:
        seen.append(k)
        if k == 2:
            raise Cancelled

    before = tiny.stats.denoise_steps
    generations = tiny.stats.generations
    with pytest.raises(Cancelled):
        tiny.generate(request([astronaut]), on_step=on_step)
    assert seen == [1, 2]
    assert tiny.stats.denoise_steps - before == 2
    assert tiny.stats.generations == generations


def test_id_cache_hit_skips_face_analysis_and_encoder(astronaut: Ref) -> None:
    from pulid_server.model.common.face_cache import FACE_FEATURES

    pipe = get_family("sdxl").load("tiny", "cpu", None)
    FACE_FEATURES.clear()  # the process-wide feature cache holds this image from earlier tests
    logs: list[str] = []
    pipe.generate(request([astronaut], prompt="first"), log=logs.append)
    assert (pipe.stats.face_analyses, pipe.stats.id_encodes, pipe.stats.id_cache_hits) == (1, 1, 0)
    pipe.generate(request([astronaut], prompt="another prompt"), log=logs.append)
    assert (pipe.stats.face_analyses, pipe.stats.id_encodes, pipe.stats.id_cache_hits) == (1, 1, 1)
    assert any("cached" in line for line in logs)
    # other bytes of the same picture are another key
    jpeg = io.BytesIO()
    astronaut[1].save(jpeg, "JPEG")
    pipe.generate(request([(jpeg.getvalue(), astronaut[1])]))
    assert pipe.stats.face_analyses == 2


def test_several_references_and_id_mix_token_counts(tiny: PulidPipeline, astronaut: Ref) -> None:
    flipped = as_ref(np.ascontiguousarray(np.asarray(astronaut[1])[:, ::-1]))
    refs = [astronaut, flipped, astronaut]
    uncond, cond = tiny.id_tokens(request(refs, id_mix=False), log=lambda m: None)
    assert cond.shape[1] == uncond.shape[1] == 10 + 5 + 5
    uncond_mix, cond_mix = tiny.id_tokens(request(refs, id_mix=True), log=lambda m: None)
    assert cond_mix.shape[1] == 30
    main = tiny.id_tokens(request([astronaut]), log=lambda m: None)[1]
    second = tiny.id_tokens(request([flipped]), log=lambda m: None)[1]
    torch.testing.assert_close(cond[:, :10], main)
    torch.testing.assert_close(cond[:, 10:15], second[:, :5])  # extra image: its 5 global tokens
    torch.testing.assert_close(cond_mix[:, 10:20], second)
    torch.testing.assert_close(uncond_mix[:, 10:20], tiny.uncond_id)
    assert tiny.generate(request(refs, id_mix=True))[0].size == (64, 64)


def test_uncond_id_is_encoder_of_zeros(tiny: PulidPipeline) -> None:
    eva = tiny.face.eva.cfg
    zeros = torch.zeros(1, 512 + eva.output_dim)
    taps = [torch.zeros(1, eva.grid**2 + 1, eva.width)] * 5
    torch.testing.assert_close(tiny.uncond_id, tiny.id_encoder(zeros, taps))
    assert tiny.uncond_id.abs().sum() > 0


def test_guidance_one_runs_without_cfg(tiny: PulidPipeline, astronaut: Ref) -> None:
    images = tiny.generate(request([astronaut], guidance_scale=1.0, num_images=2))
    assert len(images) == 2


def test_without_cfg_id_tokens_are_uncond_and_cond_by_default(tiny: PulidPipeline, astronaut: Ref) -> None:
    seen: list[torch.Tensor] = []
    unet_forward = tiny.unet.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs["cross_attention_kwargs"]["id"].embedding)  # type: ignore[index]
        return unet_forward(*args, **kwargs)

    req = request([astronaut], guidance_scale=1.0, num_images=2, id_scale=2.0)
    latents = tiny.initial_latents(req)
    tiny.unet.forward = spy
    try:
        official = tiny.generate_array(req, latents=latents)
        tiny.no_cfg_id_tokens = "cond"
        cond_only = tiny.generate_array(req, latents=latents)
    finally:
        tiny.no_cfg_id_tokens = "official"
        del tiny.unet.forward
    uncond, cond = tiny.id_tokens(req, log=lambda m: None)
    torch.testing.assert_close(seen[0], torch.cat([uncond, cond, uncond, cond]))  # per image: [u, c]
    torch.testing.assert_close(seen[-1], torch.cat([cond, cond]))
    assert np.abs(official - cond_only).max() > 1e-3


def test_auto_falls_back_to_tiny_and_says_how_to_download(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pulid_server.model"):
        pipe = get_family("sdxl").load("auto", "cpu", tmp_path)
    assert pipe.preset == "tiny"
    assert "pulid weights download" in caplog.text


def test_official_without_weights_lists_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError) as err:
        get_family("sdxl").load("official", "cpu", tmp_path)
    text = str(err.value)
    assert "pulid_v1.bin" in text and "sdxl_lightning_4step_unet.safetensors" in text
    assert "glintr100.onnx" in text and "parsing_bisenet.pth" in text
    assert "pulid weights download" in text
