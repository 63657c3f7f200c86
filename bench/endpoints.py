"""Bench endpoints with a known model cost, loaded by bench servers via
PULID_EXTRA_ENDPOINTS='["bench.endpoints"]' (PYTHONPATH = repo root). Never part of the package.

bench/noop  costs ~0: validates, returns its input. Measures pure service overhead per job.
bench/sleep costs `ms` (default 200) spread over `steps` (default 4) with a progress call per step,
            like the 4-step Lightning model does. It sleeps instead of computing so that the model's cost
            is the same in every process on a loaded 2-core machine and the ratio shows only our overhead.
bench/image stores what a real request stores: reads its reference image (an upload), logs `steps`
            steps and saves one `size`² PNG of noise (incompressible, like a photo) as its output.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from pulid_server.endpoints import Endpoint, JobContext, register


class NoopIn(BaseModel):
    value: str = "x"


class NoopOut(BaseModel):
    value: str


class SleepIn(BaseModel):
    ms: float = Field(200.0, ge=0, le=10_000)
    steps: int = Field(4, ge=1, le=100)


class SleepOut(BaseModel):
    slept_ms: float


def noop(inputs: NoopIn, ctx: JobContext) -> NoopOut:
    return NoopOut(value=inputs.value)


def sleep(inputs: SleepIn, ctx: JobContext) -> SleepOut:
    for step in range(inputs.steps):
        time.sleep(inputs.ms / 1000 / inputs.steps)
        ctx.progress(step + 1, inputs.steps)
    return SleepOut(slept_ms=inputs.ms)


class ImageIn(BaseModel):
    reference_url: str
    size: int = Field(256, ge=8, le=1024)
    steps: int = Field(4, ge=1, le=100)
    seed: int = 0


class ImageOut(BaseModel):
    images: list[dict[str, Any]]


def image(inputs: ImageIn, ctx: JobContext) -> ImageOut:
    ctx.load_image(inputs.reference_url, ("body", "reference_url"))
    for step in range(inputs.steps):
        ctx.progress(step + 1, inputs.steps)
    pixels = np.random.default_rng(inputs.seed).integers(0, 256, (inputs.size, inputs.size, 3), np.uint8)
    return ImageOut(images=[ctx.save_image(Image.fromarray(pixels))])


def _load(runner: Any) -> Any:
    return lambda _settings: runner


NOOP = register(Endpoint("bench/noop", NoopIn, NoopOut, _load(noop), title="costs ~0"))
SLEEP = register(
    Endpoint("bench/sleep", SleepIn, SleepOut, _load(sleep), title="sleeps `ms` in `steps` steps")
)
IMAGE = register(Endpoint("bench/image", ImageIn, ImageOut, _load(image), title="stores a noise PNG"))
IDS = ("bench/noop", "bench/sleep", "bench/image")


class NullContext:
    """The JobContext of a direct in-process call: no store, no logs, never cancelled."""

    request_id = "direct"

    def log(self, message: str, level: str = "INFO") -> None:
        pass

    def progress(self, step: int, total: int) -> None:
        pass

    def load_image(self, url: str, loc: tuple[str | int, ...]) -> Any:
        raise NotImplementedError

    def save_image(self, image: Any) -> dict[str, Any]:
        raise NotImplementedError


def call_direct(endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
    """The baseline: what a worker does per job minus the service (validate, run, dump to JSON)."""
    inputs = endpoint.input_model.model_validate(payload)
    result = endpoint.load_runner(None)(inputs, NullContext())  # type: ignore[arg-type]
    return result.model_dump(mode="json")  # type: ignore[no-any-return]
