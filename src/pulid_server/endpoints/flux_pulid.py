"""`fal-ai/flux-pulid`: PuLID-FLUX v0.9.1 on FLUX.1-dev, with fal's input and output schema, and its runner.

Fields, types and defaults are fal's (https://fal.ai/models/fal-ai/flux-pulid/api). fal publishes no bounds
for `start_step`, `true_cfg` and `id_weight`; ours are generous safety limits (a 422 naming the field past
them). Where fal's descriptions are copy-paste slips ("URL of image to use for inpainting", a negative
prompt "to generate an image from") ours say what the field does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pulid_server import failures
from pulid_server.endpoints import register
from pulid_server.endpoints.base import Endpoint, JobContext, UserInputError
from pulid_server.endpoints.common import (
    MAX_IMAGE_URL,
    MAX_SEED,
    Image,
    ImageSize,
    ImageSizePreset,
    inline_image,
    no_face_message,
    pixel_size,
    seed_or_random,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from pulid_server.config import Settings

ENDPOINT_ID = "fal-ai/flux-pulid"
REFERENCE_LOC = ("body", "reference_image_url")


class FluxPulidInput(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    prompt: str = Field(
        ..., min_length=1, max_length=4000, description="The prompt to generate an image from."
    )
    reference_image_url: str = Field(
        ...,
        min_length=1,
        max_length=MAX_IMAGE_URL,
        description="URL of the reference face image (http(s), data: URI, or a file uploaded to this server).",
    )
    image_size: ImageSizePreset | ImageSize = Field(
        ImageSizePreset.landscape_4_3, description="The size of the generated image."
    )
    num_inference_steps: int = Field(20, ge=1, le=50, description="The number of inference steps to perform.")
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="The same seed and the same prompt given to the same version of the model will output "
        "the same image every time.",
    )
    guidance_scale: float = Field(
        4.0,
        ge=0.0,
        le=20.0,
        description="The CFG (Classifier Free Guidance) scale is a measure of how close you want the model to "
        "stick to your prompt when looking for a related image to show you.",
    )
    negative_prompt: str = Field(
        "",
        max_length=4000,
        description="What the image should not show. Used only with true CFG (true_cfg above 1).",
    )
    sync_mode: bool = Field(
        False,
        description="If set to true, the images are returned in the response as data URIs and are not "
        "stored (no file URL to fetch afterwards).",
    )
    start_step: int = Field(
        0,
        ge=0,
        le=50,
        description="The denoising step from which the identity is injected: lower for higher fidelity, "
        "higher for more editability (0-4 recommended).",
    )
    true_cfg: float = Field(
        1.0,
        ge=0.0,
        le=20.0,
        description="True CFG scale: above 1, each step also runs the negative prompt without the identity "
        "(about twice as slow).",
    )
    id_weight: float = Field(1.0, ge=0.0, le=5.0, description="The weight of the ID loss.")
    enable_safety_checker: bool = Field(
        True, description="If set to true, the safety checker will be enabled."
    )
    max_sequence_length: Literal["128", "256", "512"] = Field(
        "128", description="The maximum sequence length for the model."
    )

    def size(self) -> tuple[int, int]:
        return pixel_size(self.image_size)


class FluxPulidOutput(BaseModel):
    images: list[Image] = Field(..., description="The generated image files info.")
    timings: dict[str, float] = Field(..., description="Seconds spent per stage (`inference`).")
    seed: int = Field(
        ...,
        description="Seed of the generated Image. It will be the same value of the one passed in the input or "
        "the randomly generated that was used in case none was passed.",
    )
    has_nsfw_concepts: list[bool] = Field(
        ..., description="Whether the generated images contain NSFW concepts (one per image)."
    )
    prompt: str = Field(..., description="The prompt used for generating the image.")


def deliver(
    images: list[PILImage], inputs: FluxPulidInput, ctx: JobContext
) -> tuple[list[Image], list[bool]]:
    """The one place this endpoint's images leave the runner: stored (file URLs) or, with `sync_mode`,
    inlined as data URIs; either way through the operator's safety checker first (flagged images masked,
    or the job refused), whose flags are `has_nsfw_concepts` (all False where no checker ran)."""
    if inputs.sync_mode:
        saved = [inline_image(image) for image in ctx.screen_images(images)]
    else:
        saved = ctx.save_images(images)
    return [Image(**s) for s in saved], ctx.nsfw_flags


def load_runner(settings: Settings) -> Any:
    """Load the PuLID-FLUX pipeline once (in the worker process) and return the per-job runner."""
    from pulid_server.model import NoFaceError, get_family
    from pulid_server.model.flux import FluxRequest

    pipeline = get_family("flux").load(
        settings.preset_for(ENDPOINT_ID), settings.device, settings.weights_dir, **settings.flux_options()
    )

    def run(inputs: FluxPulidInput, ctx: JobContext) -> FluxPulidOutput:
        reference = ctx.load_image(inputs.reference_image_url, REFERENCE_LOC)
        seed = seed_or_random(inputs.seed)
        width, height = inputs.size()
        request = FluxRequest(
            reference_image=reference,
            prompt=inputs.prompt,
            negative_prompt=inputs.negative_prompt,
            width=width,
            height=height,
            num_inference_steps=inputs.num_inference_steps,
            seed=seed,
            guidance_scale=inputs.guidance_scale,
            start_step=inputs.start_step,
            true_cfg=inputs.true_cfg,
            id_weight=inputs.id_weight,
            max_sequence_length=int(inputs.max_sequence_length),
            timestep_to_start_cfg=1,  # the official app's; not a fal input
        )
        started = time.perf_counter()
        try:
            image = pipeline.generate(request, on_step=ctx.progress, log=ctx.log)
        except NoFaceError as exc:  # one reference image: index 0 is reference_image_url
            raise UserInputError(no_face_message(exc), REFERENCE_LOC, failures.NO_FACE) from exc
        inference = time.perf_counter() - started
        images, nsfw = deliver([image], inputs, ctx)
        return FluxPulidOutput(
            images=images,
            timings={"inference": inference},
            seed=seed,
            has_nsfw_concepts=nsfw,
            prompt=inputs.prompt,
        )

    run.preset = pipeline.preset  # type: ignore[attr-defined]  # read by endpoints.loaded_preset
    return run


ENDPOINT = register(
    Endpoint(
        id=ENDPOINT_ID,
        input_model=FluxPulidInput,
        output_model=FluxPulidOutput,
        load_runner=load_runner,
        title="PuLID-FLUX: identity-preserving generation (FLUX.1-dev, 20 steps)",
        family="flux",
        image_inputs=lambda inputs: [(REFERENCE_LOC, inputs.reference_image_url)],
    )
)
