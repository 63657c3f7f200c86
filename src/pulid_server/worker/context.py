"""The JobContext a runner sees: logs, progress + cancel checks, input images, output files (screened by the
safety checker before they are stored)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from PIL import Image

from pulid_server import failures
from pulid_server.config import Settings
from pulid_server.endpoints import JobCancelled, UserInputError
from pulid_server.files import (
    BlobKeyError,
    BlobStore,
    DataURIError,
    FetchError,
    ImageDecodeError,
    decode_data_uri,
    encode_png,
    fetch_bytes,
    file_key_of,
    open_image,
    outputs_prefix,
)
from pulid_server.store import Job
from pulid_server.worker.channel import JobChannel
from pulid_server.worker.safety import ImageScreen


class WorkerJobContext:
    def __init__(self, job: Job, channel: JobChannel, blobs: BlobStore, settings: Settings):
        self.request_id = job.id
        self._job = job
        self._channel = channel
        self._blobs = blobs
        self._settings = settings
        self._base = (settings.public_url or job.base_url).rstrip("/")
        self.screen = ImageScreen()  # the worker sets the job's own once its inputs are validated

    def log(self, message: str, level: str = "INFO") -> None:
        self._channel.log(message, level)

    def progress(self, step: int, total: int) -> None:
        self._channel.log(f"step {step}/{total}")
        if self._channel.cancelled:
            raise JobCancelled()

    def load_image(self, url: str, loc: tuple[str | int, ...]) -> tuple[bytes, Image.Image]:
        try:
            data = self._read_url(url)
            return data, open_image(data, max_pixels=self._settings.max_image_pixels)
        except (FetchError, DataURIError, ImageDecodeError) as exc:
            raise UserInputError(str(exc), loc, failures.INVALID_IMAGE) from exc

    def _read_url(self, url: str) -> bytes:
        # The API stores every image a request names under inputs/ at submit, so this reads our own files;
        # data: URIs and other URLs remain for requests queued before that, and for plugins' own fields.
        limit = self._settings.max_file_bytes
        if url.startswith("data:"):
            return decode_data_uri(url, max_bytes=self._settings.max_data_uri_bytes)[1]
        key = file_key_of(url, (self._base, self._job.base_url))
        if key is not None:
            try:
                blob = self._blobs.get(key)
            except BlobKeyError:
                blob = None
            if blob is None:
                raise FetchError(f"no such uploaded file on this server: {url}")
            return blob.data
        data, _ = fetch_bytes(
            url,
            max_bytes=limit,
            timeout=self._settings.fetch_timeout_seconds,
            allow_private=self._settings.allow_private_urls,
        )
        return data

    @property
    def nsfw_flags(self) -> list[bool]:
        return list(self.screen.flags)

    def save_images(self, images: Sequence[Image.Image]) -> list[dict[str, Any]]:
        return [self._store(image) for image in self.screen_images(images)]

    def screen_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        return self.screen.screen(images)

    def save_image(self, image: Image.Image) -> dict[str, Any]:
        return self.save_images([image])[0]

    def _store(self, image: Image.Image) -> dict[str, Any]:
        data = encode_png(image)
        name = f"{secrets.token_urlsafe(12)}.png"
        key = outputs_prefix(self.request_id) + name
        self._blobs.put(key, data, "image/png")
        return {
            "url": f"{self._base}/files/{key}",
            "content_type": "image/png",
            "file_name": name,
            "file_size": len(data),
            "width": image.width,
            "height": image.height,
        }
