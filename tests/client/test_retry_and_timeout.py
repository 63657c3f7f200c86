"""Retries on a real 429 and the client-side deadline (cancel + PulidTimeoutError)."""

from __future__ import annotations

import time

import httpx
import pytest

from pulid_server.client import (
    AsyncClient,
    InProgress,
    PulidHTTPError,
    PulidTimeoutError,
    RequestFailed,
    RetryPolicy,
    SyncClient,
)
from tests.servers import Server


def _running(client: SyncClient, arguments: dict) -> str:
    """Submit a request and return its id once a worker is running it."""
    handle = client.submit("test/echo", arguments)
    for status in handle.iter_events(interval=0.05, timeout=30):
        if isinstance(status, InProgress):
            return handle.request_id
    raise AssertionError("request finished before it was seen running")


def test_submit_retries_429_until_the_queue_has_room(small_queue_server: Server) -> None:
    codes: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda r: codes.append(r.status_code)]})
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.5)  # caps the server's Retry-After: 5
    with SyncClient(small_queue_server.url, small_queue_server.key) as plain, http:
        _running(plain, {"steps": 10, "step_seconds": 0.1})  # ~1 s on the only worker
        plain.submit("test/echo", {"value": "queued"})  # fills this key's one queue slot
        with SyncClient(small_queue_server.url, small_queue_server.key, retry=policy, http_client=http) as c:
            handle = c.submit("test/echo", {"value": "third"})  # 429 until the queued one starts
            assert handle.get(timeout=30)["value"] == "third"
    submits = codes[: codes.index(200) + 1]
    assert submits[0] == 429 and set(submits[:-1]) == {429}, codes


def test_429_gives_up_after_max_attempts(small_queue_server: Server) -> None:
    codes: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda r: codes.append(r.status_code)]})
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
    with SyncClient(small_queue_server.url, small_queue_server.key) as plain, http:
        running = _running(plain, {"steps": 200, "step_seconds": 0.05})
        queued = plain.submit("test/echo", {})
        limited = SyncClient(small_queue_server.url, small_queue_server.key, retry=policy, http_client=http)
        with limited, pytest.raises(PulidHTTPError) as full:
            limited.submit("test/echo", {})
        assert full.value.status_code == 429 and codes == [429, 429, 429]
        queued.cancel()  # before the running one, or the worker may finish it first
        plain.cancel("test/echo", running)


def test_client_timeout_cancels_the_request(client: SyncClient) -> None:
    ids: list[str] = []
    started = time.monotonic()
    with pytest.raises(PulidTimeoutError) as timed_out:
        client.subscribe(
            "test/echo", {"steps": 200, "step_seconds": 0.05}, client_timeout=1.5, on_enqueue=ids.append
        )
    assert 1.4 < time.monotonic() - started < 5
    assert timed_out.value.request_id == ids[0] and timed_out.value.timeout == 1.5
    with pytest.raises(RequestFailed) as failed:
        client.result("test/echo", ids[0], timeout=30)
    assert failed.value.cancelled


def test_result_timeout_does_not_cancel(client: SyncClient) -> None:
    handle = client.submit("test/echo", {"value": "slow", "steps": 20, "step_seconds": 0.05})
    with pytest.raises(PulidTimeoutError) as timed_out:
        client.result("test/echo", handle.request_id, timeout=0.2)
    assert timed_out.value.request_id == handle.request_id
    assert handle.get(timeout=30)["value"] == "slow"


def test_async_client_timeout_cancels_the_request(server: Server) -> None:
    import asyncio

    async def main() -> None:
        ids: list[str] = []
        async with AsyncClient(server.url, server.key) as c:
            with pytest.raises(PulidTimeoutError) as timed_out:
                await c.subscribe(
                    "test/echo",
                    {"steps": 200, "step_seconds": 0.05},
                    client_timeout=1.5,
                    on_enqueue=ids.append,
                )
            assert timed_out.value.request_id == ids[0]
            with pytest.raises(RequestFailed) as failed:
                await c.result("test/echo", ids[0], timeout=30)
            assert failed.value.cancelled

    asyncio.run(main())
