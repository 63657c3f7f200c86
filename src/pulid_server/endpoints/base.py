"""What an endpoint is: an input model, an output model, and a runner built once per worker process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from pulid_server import failures

if TYPE_CHECKING:
    from PIL import Image

    from pulid_server.config import Settings


Loc = tuple[str | int, ...]  # where a field is, e.g. ("body", "reference_images", 0, "image_url")


def no_images(_inputs: Any) -> list[tuple[Loc, str]]:
    return []


class JobCancelled(Exception):
    """Raised inside a runner (by `JobContext.progress`) when the user cancelled the request."""


class UserInputError(Exception):
    """The inputs were well-formed but unusable (no face, not an image...). Ends the job with a 422.

    `loc` names the field, e.g. ("body", "reference_images", 0, "image_url"); `message` says what is wrong
    with it and does not repeat its name.
    """

    def __init__(
        self, message: str, loc: tuple[str | int, ...] = ("body",), error_type: str = failures.VALUE_ERROR
    ):
        super().__init__(message)
        self.message = message  # what is wrong, without the field's name: clients print `loc` beside it
        self.loc = loc
        self.error_type = error_type


class JobContext(Protocol):
    """What a runner may do while it runs one job. The worker implements it."""

    request_id: str

    def log(self, message: str, level: str = "INFO") -> None: ...

    def progress(self, step: int, total: int) -> None:
        """Log `step k/N` and raise JobCancelled if the user cancelled."""

    def load_image(self, url: str, loc: tuple[str | int, ...]) -> tuple[bytes, Image.Image]:
        """Fetch an input image (our files, data: URI or http(s)) within the limits; raise UserInputError."""

    def save_images(self, images: Sequence[Image.Image]) -> list[dict[str, Any]]:
        """Store output images as PNGs and return their fal `Image` dicts (url, content_type, file_name,
        ...), in order. They go through the operator's safety checker first, in one batch, when the
        content policy has it run for this request (the request's `enable_safety_checker` field, if the
        endpoint's Input has one, the API key's and the node's policy): a flagged image is stored masked
        (black or blurred), or the job fails with `content_policy_violation` and nothing is stored."""

    def save_image(self, image: Image.Image) -> dict[str, Any]:
        """`save_images([image])[0]`; prefer one `save_images` call for a batch (one checker pass)."""

    def screen_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The safety check of `save_images` without storing: the images as they may leave the worker
        (flagged ones masked), for outputs returned inline (`sync_mode`). Raises like `save_images`."""

    @property
    def nsfw_flags(self) -> list[bool]:
        """`has_nsfw_concepts` of every image saved so far, in order (False where nothing was checked).
        An endpoint whose Output has `has_nsfw_concepts` sets it from this; for one without it (fal-ai/pulid)
        the worker adds the field to the output when the checker ran."""


class Runner(Protocol):
    def __call__(self, inputs: Any, ctx: JobContext) -> BaseModel: ...


# Presets whose weights are seeded random numbers: they run the real code path, but their images are noise.
RANDOM_WEIGHT_PRESETS = frozenset({"tiny"})
WEIGHTS_FIX = "pulid weights download"


def loaded_preset(runner: Runner) -> str:
    """The model preset a runner loaded (`official`, `tiny`...), as it tells in a `preset` attribute; ""
    for runners with no model. The worker reports it, since `auto` may have fallen back to tiny."""
    return str(getattr(runner, "preset", ""))


def random_weights_notice(endpoint_id: str, family: str = "") -> str:
    """What users are told wherever they meet an endpoint that runs on random weights."""
    fix = f"{WEIGHTS_FIX} --family {family}" if family else WEIGHTS_FIX
    return (
        f"{endpoint_id} runs the tiny model (seeded random weights): its images are noise by design. "
        f"For real images run `{fix}` on the server, then restart it."
    )


@dataclass(frozen=True)
class Endpoint:
    id: str  # "owner/alias", e.g. "fal-ai/pulid"
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    load_runner: Callable[[Settings], Runner]  # called once in the worker process
    title: str = ""
    family: str = ""  # the model family it loads (pulid_server.model.FAMILIES), "" for none
    # The images a request names, with where each one is: the API fetches (or decodes) each at submit,
    # checks that it is an image and stores it under inputs/<request id>/, so a bad one is a 422 at once
    # and a worker reads only local files (a slow URL never holds a GPU).
    image_inputs: Callable[[Any], list[tuple[Loc, str]]] = no_images
