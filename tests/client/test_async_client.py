"""AsyncClient parity: the same behaviours as the sync client, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pulid_server.client import (
    AsyncClient,
    Completed,
    InProgress,
    PulidHTTPError,
    Queued,
    RequestFailed,
    Status,
)
from tests.servers import Server


def run_async(server: Server, body: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with AsyncClient(server.url, server.key) as c:
            return await asyncio.wait_for(body(c), 120)

    return asyncio.run(main())


def test_subscribe_with_coroutine_callbacks(server: Server) -> None:
    updates: list[Status] = []
    enqueued: list[str] = []

    async def on_update(status: Status) -> None:
        updates.append(status)

    async def on_enqueue(request_id: str) -> None:
        enqueued.append(request_id)

    async def body(c: AsyncClient) -> Any:
        return await c.subscribe(
            "test/echo", {"value": "async", "steps": 3, "step_seconds": 0.1},
            with_logs=True, on_queue_update=on_update, on_enqueue=on_enqueue,
        )  # fmt: skip

    assert run_async(server, body)["value"] == "async"
    assert len(enqueued) == 1
    assert isinstance(updates[-1], Completed) and updates[-1].logs
    assert [line["message"] for line in updates[-1].logs][-1] == "step 3/3"
    assert all(isinstance(u, Queued | InProgress) for u in updates[:-1])


def test_submit_status_result_cancel_run(server: Server) -> None:
    async def body(c: AsyncClient) -> None:
        handle = await c.submit("test/echo", {"value": "a", "steps": 2, "step_seconds": 0.05})
        assert handle == c.get_handle("test/echo", handle.request_id)
        events = [s async for s in handle.iter_events(with_logs=True, interval=0.05, timeout=30)]
        assert isinstance(events[-1], Completed)
        assert (await handle.get(timeout=30))["value"] == "a"
        assert (await c.result("test/echo", handle.request_id, timeout=30))["value"] == "a"
        assert isinstance(await c.status("test/echo", handle.request_id), Completed)

        long = await c.submit("test/echo", {"steps": 200, "step_seconds": 0.05})
        await long.cancel()
        with pytest.raises(RequestFailed) as failed:
            await long.get(timeout=30)
        assert failed.value.cancelled

        assert (await c.run("test/echo", {"value": "r"}, timeout=30))["value"] == "r"

    run_async(server, body)


def test_errors(server: Server) -> None:
    async def body(c: AsyncClient) -> None:
        with pytest.raises(PulidHTTPError) as bad:
            await c.submit("fal-ai/pulid", {"prompt": "x"})
        assert bad.value.status_code == 422
        assert ["body", "reference_images"] in [e["loc"] for e in bad.value.field_errors]
        with pytest.raises(RequestFailed) as failed:
            await c.subscribe("test/fail", {"kind": "user"}, client_timeout=30)
        assert failed.value.error_type == "no_face" and failed.value.field_errors

    run_async(server, body)


def test_auto_upload(server: Server, face_png: Path, face: Image.Image) -> None:
    async def body(c: AsyncClient) -> None:
        out = await c.subscribe("test/image", {"image_url": face_png}, client_timeout=60)
        assert out["image"]["width"] == 512
        out = await c.subscribe("test/image", {"image_url": face.resize((72, 64))}, client_timeout=60)
        assert (out["image"]["width"], out["image"]["height"]) == (72, 64)
        url = await c.upload(b"bytes", "application/octet-stream", "b.bin")
        assert await c.download(url, timeout=30) == b"bytes"

    run_async(server, body)
