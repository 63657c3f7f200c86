"""`fal-ai/pulid`: the input and output schema exactly as fal documents it, and its runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pulid_server import failures
from pulid_server.endpoints import register
from pulid_server.endpoints.base import Endpoint, JobContext, Loc, UserInputError
from pulid_server.endpoints.common import (
    MAX_IMAGE_URL,
    MAX_SEED,
    Image,
    ImageSize,
    ImageSizePreset,
    no_face_message,
    pixel_size,
    seed_or_random,
)

if TYPE_CHECKING:
    from pulid_server.config import Settings

DEFAULT_NEGATIVE_PROMPT = (
    "flaws in the eyes, flaws in the face, flaws, lowres, non-HDRi, low quality, worst quality,"
    "artifacts noise, text, watermark, glitch, deformed, mutated, ugly, disfigured, hands, "
    "low resolution, partially rendered objects,  deformed or partially rendered eyes, "
    "deformed, deformed eyeballs, cross-eyed,blurry"
)
ENDPOINT_ID = "fal-ai/pulid"


class ReferenceFace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_url: str = Field(
        ...,
        min_length=1,
        max_length=MAX_IMAGE_URL,
        description="URL of the reference face image (http(s), data: URI).",
    )


class PulidInput(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    reference_images: list[ReferenceFace] = Field(
        ..., min_length=1, max_length=4, description="List of reference faces, ideally 4 images."
    )
    prompt: str = Field(..., min_length=1, max_length=4000, description="Prompt to generate the face from")
    negative_prompt: str = Field(
        DEFAULT_NEGATIVE_PROMPT, max_length=4000, description="Negative prompt to generate the face from"
    )
    num_images: int = Field(1, ge=1, le=4, description="Number of images to generate")
    guidance_scale: float = Field(1.2, ge=0.0, le=20.0, description="Guidance scale")
    num_inference_steps: int = Field(4, ge=1, le=50, description="Number of steps to take")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed for reproducibility")
    image_size: ImageSizePreset | ImageSize = Field(
        default_factory=lambda: ImageSize(width=768, height=1024),
        description="The size of the generated image",
        json_schema_extra={"default": {"width": 768, "height": 1024}},  # default_factory is not published
    )
    id_scale: float = Field(0.8, ge=0.0, le=5.0, description="ID scale")
    mode: Literal["fidelity", "extreme style"] = Field("fidelity", description="Mode of generation")
    id_mix: bool = Field(
        False, description="if you want to mix two ID image, please turn this on, otherwise, turn this off"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _accept_official_mode_name(cls, value: Any) -> Any:
        # The official PuLID app spells it "extremely style"; fal spells it "extreme style".
        return "extreme style" if value == "extremely style" else value

    def size(self) -> tuple[int, int]:
        return pixel_size(self.image_size)


class PulidOutput(BaseModel):
    images: Annotated[list[Image], Field(description="The generated images")]
    seed: int = Field(..., description="The seed used to generate the images")


def reference_images(inputs: PulidInput) -> list[tuple[Loc, str]]:
    return [
        (("body", "reference_images", i, "image_url"), r.image_url)
        for i, r in enumerate(inputs.reference_images)
    ]


def load_runner(settings: Settings) -> Any:
    """Load the PuLID pipeline once (in the worker process) and return the per-job runner."""
    from pulid_server.model import NoFaceError, get_family
    from pulid_server.model.sdxl import GenerationRequest

    pipeline = get_family("sdxl").load(
        settings.preset_for(ENDPOINT_ID), settings.device, settings.weights_dir
    )
    pipeline.no_cfg_id_tokens = settings.sdxl_no_cfg_id_tokens

    def run(inputs: PulidInput, ctx: JobContext) -> PulidOutput:
        refs = [
            ctx.load_image(ref.image_url, ("body", "reference_images", i, "image_url"))
            for i, ref in enumerate(inputs.reference_images)
        ]
        seed = seed_or_random(inputs.seed)
        width, height = inputs.size()
        request = GenerationRequest(
            reference_images=refs,
            prompt=inputs.prompt,
            negative_prompt=inputs.negative_prompt,
            num_images=inputs.num_images,
            guidance_scale=inputs.guidance_scale,
            num_inference_steps=inputs.num_inference_steps,
            seed=seed,
            width=width,
            height=height,
            id_scale=inputs.id_scale,
            mode=inputs.mode,
            id_mix=inputs.id_mix,
        )
        try:
            images = pipeline.generate(request, on_step=ctx.progress, log=ctx.log)
        except NoFaceError as exc:
            raise UserInputError(
                no_face_message(exc), ("body", "reference_images", exc.index, "image_url"), failures.NO_FACE
            ) from exc
        # fal's schema has no has_nsfw_concepts: the worker adds it when the safety checker ran
        return PulidOutput(images=[Image(**saved) for saved in ctx.save_images(images)], seed=seed)

    run.preset = pipeline.preset  # type: ignore[attr-defined]  # read by endpoints.loaded_preset
    return run


ENDPOINT = register(
    Endpoint(
        id=ENDPOINT_ID,
        input_model=PulidInput,
        output_model=PulidOutput,
        load_runner=load_runner,
        title="PuLID: identity-preserving generation (SDXL-Lightning, 4 steps)",
        family="sdxl",
        image_inputs=reference_images,
    )
)
