"""The tiny PuLID-FLUX pipeline end to end: the official sampling semantics, knob by knob."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pulid_server.model import NoFaceError
from pulid_server.model.flux import FluxRequest
from pulid_server.model.flux.pipeline import PulidFluxPipeline

Ref = tuple[bytes, object]


def request(ref: Ref, **kw: object) -> FluxRequest:
    base = {"prompt": "a portrait photo", "width": 64, "height": 48, "num_inference_steps": 4, "seed": 3}
    return FluxRequest(reference_image=ref, **{**base, **kw})  # type: ignore[arg-type]


def official_denoise(pipe: PulidFluxPipeline, req: FluxRequest) -> torch.Tensor:
    """`flux/sampling.py` (get_noise, get_schedule, prepare, denoise) written out, with the tiny
    transformer (and its ID attention) standing in for the official `Flux` model."""
    tokens = pipe.id_tokens(*req.reference_image, print)
    use_true_cfg = abs(req.true_cfg - 1.0) > 1e-2
    uncond = pipe.uncond_tokens() if use_true_cfg else None
    h, w = math.ceil(req.height / 16), math.ceil(req.width / 16)
    x = torch.randn(1, 16, 2 * h, 2 * w, generator=torch.Generator("cpu").manual_seed(req.seed))
    img = x.reshape(1, 16, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, h * w, 64)
    img_ids = torch.stack(
        torch.meshgrid(torch.zeros(1), torch.arange(h).float(), torch.arange(w).float(), indexing="ij"), -1
    )
    img_ids = img_ids.reshape(h * w, 3).float()
    pos = pipe.encode_text(req.prompt, req.max_sequence_length)
    neg = pipe.encode_text(req.negative_prompt, req.max_sequence_length)
    txt_ids = torch.zeros(req.max_sequence_length, 3)
    m = (1.15 - 0.5) / (4096 - 256)
    mu = m * (h * w) + 0.5 - m * 256
    t = torch.linspace(1, 0, req.num_inference_steps + 1)
    timesteps = (math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)).tolist()
    guidance = torch.full((1,), req.guidance_scale)

    def model(text: object, t: torch.Tensor, id_tokens: torch.Tensor | None) -> torch.Tensor:
        with pipe.injection.condition(id_tokens, req.id_weight):
            return pipe.transformer(  # type: ignore[no-any-return]
                hidden_states=img, encoder_hidden_states=text.t5, pooled_projections=text.pooled,  # type: ignore[attr-defined]
                timestep=t, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False,
            )[0]  # fmt: skip

    for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        t_vec = torch.full((1,), t_curr)
        pred = model(pos, t_vec, tokens if i >= req.start_step else None)
        if use_true_cfg and i >= req.timestep_to_start_cfg:
            neg_pred = model(neg, t_vec, uncond if i >= req.start_step else None)
            pred = neg_pred + req.true_cfg * (pred - neg_pred)
        img = img + (t_prev - t_curr) * pred
    return img


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"start_step": 2},
        {"true_cfg": 3.0, "negative_prompt": "blurry", "start_step": 1},
        {"true_cfg": 2.5, "timestep_to_start_cfg": 0, "id_weight": 1.7},
        {"true_cfg": 2.0, "timestep_to_start_cfg": 2, "start_step": 3, "guidance_scale": 1.5},
        {"max_sequence_length": 256, "width": 72, "height": 40},  # sizes not multiples of 16 round up
    ],
)
def test_denoise_is_the_official_loop(
    flux: PulidFluxPipeline, astronaut: Ref, knobs: dict[str, object]
) -> None:
    req = request(astronaut, **knobs)
    assert torch.allclose(flux.denoise(req), official_denoise(flux, req), rtol=0, atol=1e-6)


def test_each_knob_changes_the_output_where_the_official_code_does(
    flux: PulidFluxPipeline, astronaut: Ref
) -> None:
    base = request(astronaut)
    out = {
        name: flux.denoise(dataclasses.replace(base, **kw))
        for name, kw in {
            "base": {},
            "start_step": {"start_step": 2},
            "no_id_steps": {"start_step": 4},
            "id_weight_0": {"id_weight": 0.0},
            "true_cfg": {"true_cfg": 3.0, "negative_prompt": "blurry"},
            "true_cfg_from_0": {"true_cfg": 3.0, "negative_prompt": "blurry", "timestep_to_start_cfg": 0},
            "fake_cfg_neg": {"negative_prompt": "blurry"},
            "cfg_within_1e-2": {"true_cfg": 1.005, "negative_prompt": "blurry"},
            "guidance": {"guidance_scale": 1.0},
            "seed": {"seed": 4},
            "again": {},
        }.items()
    }
    same = lambda a, b: torch.equal(out[a], out[b])  # noqa: E731
    assert same("base", "again")  # seeded
    for knob in ("start_step", "id_weight_0", "true_cfg", "guidance", "seed"):
        assert not same("base", knob), knob
    assert not same("true_cfg", "true_cfg_from_0")  # timestep_to_start_cfg moves the first CFG step
    assert same("no_id_steps", "id_weight_0")  # start_step >= steps: the ID never runs
    assert same("base", "fake_cfg_neg")  # without true CFG the negative prompt is ignored
    assert same("base", "cfg_within_1e-2")  # |true_cfg - 1| <= 0.01 is no true CFG


def test_call_counts_follow_start_step_and_cfg(flux: PulidFluxPipeline, astronaut: Ref) -> None:
    before = dataclasses.replace(flux.stats)
    flux.denoise(
        request(astronaut, num_inference_steps=5, start_step=2, true_cfg=2.0, timestep_to_start_cfg=1)
    )
    calls = flux.stats.transformer_calls - before.transformer_calls
    id_calls = flux.stats.id_calls - before.id_calls
    assert (calls, id_calls) == (5 + 4, 3 + 3)  # negative pass from step 1; ID (or uncond ID) from step 2


def test_id_weight_zero_is_plain_diffusers_flux(flux: PulidFluxPipeline, astronaut: Ref) -> None:
    """With id_weight 0 the ID attention adds nothing: diffusers' FluxPipeline on a hook-free copy of the
    same tiny transformer, with the same noise, gives the same latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    plain_transformer = FluxTransformer2DModel.from_config(flux.transformer.config)
    plain_transformer.load_state_dict(flux.transformer.state_dict())
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
        use_dynamic_shifting=True,
    )
    plain = FluxPipeline(
        scheduler=scheduler,
        vae=flux.vae,
        text_encoder=flux.text_encoder,
        tokenizer=flux.tokenizer,
        text_encoder_2=flux.text_encoder_2,
        tokenizer_2=flux.tokenizer_2,
        transformer=plain_transformer,
    )
    plain.set_progress_bar_config(disable=True)
    req = request(astronaut, id_weight=0.0, max_sequence_length=128)
    noise = flux.initial_noise(req)
    ours = flux.denoise(req, noise=noise)
    from pulid_server.model.flux.pipeline import pack

    theirs = plain(
        prompt=req.prompt,
        height=req.height,
        width=req.width,
        num_inference_steps=req.num_inference_steps,
        guidance_scale=req.guidance_scale,
        max_sequence_length=req.max_sequence_length,
        latents=pack(noise),
        output_type="latent",
    ).images
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, flux.denoise(dataclasses.replace(req, id_weight=1.0)), atol=1e-3)


def test_generate_returns_the_requested_size(flux: PulidFluxPipeline, astronaut: Ref) -> None:
    image = flux.generate(request(astronaut, width=72, height=40, num_inference_steps=2))
    assert image.size == (72, 40) and image.mode == "RGB"


def test_no_face_raises(flux: PulidFluxPipeline, coffee: Ref) -> None:
    with pytest.raises(NoFaceError) as info:
        flux.generate(request(coffee))
    assert info.value.index == 0


def test_cancel_from_on_step_stops_the_run(flux: PulidFluxPipeline, astronaut: Ref) -> None:
    seen: list[int] = []

    def on_step(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise KeyboardInterrupt("cancelled")

    before = flux.stats.denoise_steps
    with pytest.raises(KeyboardInterrupt):
        flux.generate(request(astronaut, num_inference_steps=6), on_step=on_step)
    assert seen == [1, 2] and flux.stats.denoise_steps - before == 2


def test_id_and_text_caches(flux: PulidFluxPipeline, astronaut: Ref) -> None:
    flux.clear_id_cache()
    before = dataclasses.replace(flux.stats)
    flux.denoise(request(astronaut, num_inference_steps=1))
    flux.denoise(request(astronaut, num_inference_steps=1))
    assert flux.stats.face_analyses - before.face_analyses == 1
    assert flux.stats.id_cache_hits - before.id_cache_hits == 1
    assert flux.encode_text("a portrait photo", 256).t5.shape == (1, 256, 32)
