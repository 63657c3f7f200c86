"""A request's images, made local before it is queued (the submit path of api/queue.py).

Every image an endpoint's `image_inputs` names is read at submit: a `data:` URI is decoded, an http(s) URL
fetched (SSRF-safe, files/fetch.py), and each must be a JPEG, PNG or WEBP image within the limits, else
the submit is a 422 naming the field and nothing is stored. Each image is stored as
`inputs/<request id>/<token>.<ext>` and its URL in the queued input replaced by ours, so that:
- job rows stay small (an inline face is megabytes of base64 that every read of the row would carry);
- workers read only our own files: a slow or dead URL costs its submit the fetch time, never a GPU;
- the files sit under the request's own prefix, to be deleted with it.
URLs of files we already hold (uploads, outputs) are kept: workers read those from the blob store.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

from pulid_server import failures
from pulid_server.config import Settings
from pulid_server.endpoints import Endpoint, Loc
from pulid_server.files import (
    BlobStore,
    DataURIError,
    FetchError,
    ImageDecodeError,
    check_image,
    decode_data_uri,
    fetch_bytes,
    file_key_of,
    inputs_prefix,
)

# Fetches run in their own threads: a slow URL holds one of these for up to `fetch_timeout_seconds`,
# never the event loop or the threads other requests use; one key holds at most a few at a time.
FETCH_THREADS = 16
FETCHES_PER_KEY = 4
_EXTENSIONS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp")}


@dataclass
class StagedInput:
    input_json: str  # what to queue: the request with its images' URLs replaced by ours
    keys: list[str]  # the blobs written for it (to delete if the request is not queued after all)


class InputStager:
    def __init__(self, settings: Settings, blobs: BlobStore):
        self._settings = settings
        self._blobs = blobs
        self._pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="pulid-inputs")
        self._per_key: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(FETCHES_PER_KEY)
        )

    async def stage(
        self, endpoint: Endpoint, body: BaseModel, key_id: str, job_id: str, base: str
    ) -> StagedInput:
        images = endpoint.image_inputs(body)
        if not images:
            return StagedInput(body.model_dump_json(), [])
        loop = asyncio.get_running_loop()
        async with self._per_key[key_id]:
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, self._store_one, loc, url, job_id, base)
                    for loc, url in images
                ),
                return_exceptions=True,
            )
        keys = [r for r in results if isinstance(r, str)]
        error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            await self.discard(keys)
            raise error
        data = body.model_dump(mode="json")
        for (loc, _), key in zip(images, results, strict=True):
            if isinstance(key, str):
                _set(data, loc[1:], f"{base}/files/{key}")
        return StagedInput(json.dumps(data), keys)

    async def discard(self, keys: list[str]) -> None:
        for key in keys:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._blobs.delete, key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _store_one(self, loc: Loc, url: str, job_id: str, base: str) -> str | None:
        """Read, check and store one image: its new key, or None for a file of ours (a worker reads it)."""
        if file_key_of(url, (base,)) is not None:
            return None
        settings = self._settings
        try:
            if url.startswith("data:"):
                data = decode_data_uri(url, max_bytes=settings.max_data_uri_bytes)[1]
            else:
                data, _ = fetch_bytes(
                    url,
                    max_bytes=settings.max_file_bytes,
                    timeout=settings.fetch_timeout_seconds,
                    allow_private=settings.allow_private_urls,
                )
            ext, content_type = _EXTENSIONS[check_image(data, max_pixels=settings.max_image_pixels)]
        except (FetchError, DataURIError, ImageDecodeError) as exc:
            raise HTTPException(422, [failures.field_error(loc, str(exc), failures.INVALID_IMAGE)]) from exc
        key = f"{inputs_prefix(job_id)}{secrets.token_urlsafe(16)}.{ext}"
        self._blobs.put(key, data, content_type)
        return key


def _set(data: Any, path: Loc, value: str) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value
