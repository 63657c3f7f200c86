"""What fal's image endpoints share: the `image_size` presets and object, the output `Image`, seeds, and
the `no_face` message. `fal-ai/pulid` and `fal-ai/flux-pulid` publish the same `ImageSize` and `Image`
schemas, so each is one model here (one component in /openapi.json)."""

from __future__ import annotations

import base64
import random
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pulid_server.files import encode_png

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from pulid_server.model import NoFaceError

MAX_SEED = 2**63 - 1
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_IMAGE_URL = 16 * 1024 * 1024  # a data: URI of an image under the body limit


class ImageSizePreset(StrEnum):
    square_hd = "square_hd"
    square = "square"
    portrait_4_3 = "portrait_4_3"
    portrait_16_9 = "portrait_16_9"
    landscape_4_3 = "landscape_4_3"
    landscape_16_9 = "landscape_16_9"


PRESET_SIZES: dict[ImageSizePreset, tuple[int, int]] = {  # (width, height)
    ImageSizePreset.square_hd: (1024, 1024),
    ImageSizePreset.square: (512, 512),
    ImageSizePreset.portrait_4_3: (768, 1024),
    ImageSizePreset.portrait_16_9: (576, 1024),
    ImageSizePreset.landscape_4_3: (1024, 768),
    ImageSizePreset.landscape_16_9: (1024, 576),
}


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(
        768, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="The width of the generated image."
    )
    height: int = Field(
        1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="The height of the generated image."
    )


def pixel_size(image_size: ImageSizePreset | ImageSize) -> tuple[int, int]:
    """(width, height) of an `image_size` input: a preset name or an explicit size."""
    if isinstance(image_size, ImageSizePreset):
        return PRESET_SIZES[image_size]
    return image_size.width, image_size.height


class Image(BaseModel):
    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: str | None = Field("image/png", description="The mime type of the file.")
    file_name: str | None = Field(None, description="The name of the file.")
    file_size: int | None = Field(None, description="The size of the file in bytes.")
    width: int | None = Field(None, description="The width of the image in pixels.")
    height: int | None = Field(None, description="The height of the image in pixels.")


def seed_or_random(seed: int | None) -> int:
    """The request's seed, or a fresh one that the output reports (so the image can be made again)."""
    return seed if seed is not None else random.randint(0, 2**31 - 1)


def no_face_message(exc: NoFaceError) -> str:
    return f"no face found: {exc.detail}" if exc.detail else "no face found"


def inline_image(image: PILImage) -> dict[str, Any]:
    """An output image as a fal `Image` whose URL is a PNG data URI (`sync_mode`): nothing is stored."""
    data = encode_png(image)
    return {
        "url": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
        "content_type": "image/png",
        "file_name": None,
        "file_size": len(data),
        "width": image.width,
        "height": image.height,
    }
