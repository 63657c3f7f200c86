"""The asyncio client: `AsyncClient` and `AsyncRequestHandle`, the same surface as `sync.py` with `await`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx

from pulid_server.client import files
from pulid_server.client._core import (
    CANCEL_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    RETRY_STATUS,
    Deadline,
    Priority,
    RetryPolicy,
    base_headers,
    failure,
    json_body,
    request_urls,
    resolve_key,
    resolve_url,
    retryable_transport,
    submit_headers,
)
from pulid_server.client.errors import PulidClientError, PulidConnectionError, PulidTimeoutError, http_error
from pulid_server.client.status import Completed, Status, parse_status

if TYPE_CHECKING:
    from PIL import Image


class AsyncClient:
    """Talks to a pulid-server (or anything speaking fal's queue API) without blocking the event loop.

    url: server base URL [default: env PULID_URL, else http://127.0.0.1:8000].
    key: `key_id:secret` [default: env PULID_KEY, else FAL_KEY].
    default_timeout: seconds one HTTP call may take. retry: when and how often to retry.
    http_client: an httpx.AsyncClient to use (event hooks, transports, proxies); not closed by us.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ):
        self.url = resolve_url(url)
        self.key = resolve_key(key)
        self.default_timeout = default_timeout
        self.retry = retry or RetryPolicy()
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient()

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport ---------------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        *,
        deadline: Deadline | None = None,
        auth: bool = True,
        call_timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One HTTP call with retries; returns the last response (any status) or raises a client error.

        call_timeout: seconds for each try [default: default_timeout], capped by the deadline.
        """
        deadline = deadline or Deadline(None)
        call_timeout = call_timeout or self.default_timeout
        headers = {**(base_headers(self.key) if auth else {}), **kwargs.pop("headers", {})}
        outcome: httpx.Response | httpx.TransportError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            deadline.check()
            try:
                timeout = deadline.http_timeout(call_timeout)
                outcome = await self._http.request(method, url, headers=headers, timeout=timeout, **kwargs)
            except httpx.TransportError as exc:
                if not retryable_transport(exc):
                    raise deadline.timeout_error(call_timeout) from exc
                outcome = exc
            else:
                if outcome.status_code not in RETRY_STATUS:
                    return outcome
            if attempt < self.retry.max_attempts:
                delay = self.retry.delay_after(attempt, outcome)
                deadline.check(delay)
                self.retry.notify(attempt, delay, outcome)
                await asyncio.sleep(delay)
        if isinstance(outcome, httpx.Response):
            return outcome
        raise PulidConnectionError(f"cannot reach {self.url}: {outcome!r}") from outcome

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.send(method, url, **kwargs)
        if response.is_error:
            raise http_error(response)
        return json_body(response)

    # -- queue -------------------------------------------------------------------------------------------

    async def submit(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None = None,
        priority: Priority | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
        deadline: Deadline | None = None,
    ) -> AsyncRequestHandle:
        """Queue a request and return its handle at once. Paths and PIL images in `arguments` are uploaded."""
        deadline = deadline or Deadline(None)
        body = await self._upload_inputs(arguments, deadline)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        data = await self._json(
            "POST",
            f"{self.url}/queue/{quote(endpoint.strip('/'))}",
            json=body,
            params=params,
            headers=submit_headers(priority, start_timeout, headers),
            deadline=deadline,
        )
        return AsyncRequestHandle(
            data["request_id"], data["response_url"], data["status_url"], data["cancel_url"], self
        )

    async def subscribe(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        with_logs: bool = False,
        on_queue_update: Callable[[Status], Any] | None = None,
        on_enqueue: Callable[[str], Any] | None = None,
        client_timeout: float | None = None,
        priority: Priority | None = None,
        start_timeout: float | None = None,
        interval: float = DEFAULT_POLL_INTERVAL,
        webhook_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Submit, follow the request until it completes, return its output.

        Raises RequestFailed if it completed with an error, and PulidTimeoutError (after cancelling the
        request) if `client_timeout` seconds pass first.
        """
        if start_timeout is None and client_timeout is not None and client_timeout > 1:
            start_timeout = client_timeout  # as fal-client: the server gives up too
        deadline = Deadline(client_timeout)
        handle = await self.submit(
            endpoint, arguments, webhook_url=webhook_url, priority=priority,
            start_timeout=start_timeout, headers=headers, deadline=deadline,
        )  # fmt: skip
        deadline.request_id = handle.request_id
        try:
            if on_enqueue is not None:
                await _maybe_await(on_enqueue(handle.request_id))
            return await handle.get(
                interval=interval, with_logs=with_logs, on_queue_update=on_queue_update, deadline=deadline
            )
        except PulidTimeoutError:
            await handle.cancel_quietly()
            raise

    def get_handle(self, endpoint: str, request_id: str) -> AsyncRequestHandle:
        return AsyncRequestHandle(request_id, *request_urls(self.url, endpoint, request_id), self)

    async def status(self, endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
        return await self.get_handle(endpoint, request_id).status(with_logs=with_logs)

    async def result(self, endpoint: str, request_id: str, *, timeout: float | None = None) -> Any:
        """Wait (up to `timeout` s, if given) for the request to complete and return its output."""
        return await self.get_handle(endpoint, request_id).get(deadline=Deadline(timeout, request_id))

    async def cancel(self, endpoint: str, request_id: str) -> None:
        await self.get_handle(endpoint, request_id).cancel()

    async def run(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        timeout: float | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Run and wait in one HTTP call (`POST /run/...`). Errors come as PulidHTTPError, as in fal-client."""
        deadline = Deadline(timeout)
        body = await self._upload_inputs(arguments, deadline)
        return await self._json(
            "POST", f"{self.url}/run/{quote(endpoint.strip('/'))}", json=body,
            headers=submit_headers(None, start_timeout, headers), deadline=deadline, call_timeout=timeout,
        )  # fmt: skip

    # -- files -------------------------------------------------------------------------------------------

    async def upload(
        self,
        data: str | bytes,
        content_type: str,
        file_name: str | None = None,
        *,
        deadline: Deadline | None = None,
    ) -> str:
        """Store bytes on the server and return their URL (usable in any input)."""
        headers = {"Content-Type": content_type, **({"X-Fal-File-Name": file_name} if file_name else {})}
        content = data.encode() if isinstance(data, str) else data
        body = await self._json(
            "POST", f"{self.url}/cdn/files/upload", content=content, headers=headers, deadline=deadline
        )
        return str(body["access_url"])

    async def upload_file(self, path: str | PurePath) -> str:
        data, content_type, name = files.upload_payload(PurePath(path))
        return await self.upload(data, content_type, name)

    async def upload_image(self, image: Image.Image, format: str = "jpeg") -> str:
        return await self.upload(files.image_bytes(image, format), f"image/{format}", f"image.{format}")

    async def download(self, url: str, *, timeout: float | None = None) -> bytes:
        """Fetch an output file. No API key is sent: file URLs are capabilities and may be on another host."""
        response = await self.send("GET", url, auth=False, deadline=Deadline(timeout), follow_redirects=True)
        if response.is_error:
            raise http_error(response)
        return response.content

    async def _upload_inputs(self, arguments: dict[str, Any], deadline: Deadline) -> Any:
        urls = {}
        for value in files.find_uploadables(arguments):
            data, content_type, name = files.upload_payload(value)
            urls[id(value)] = await self.upload(data, content_type, name, deadline=deadline)
        return files.substitute(arguments, urls) if urls else arguments


@dataclass(frozen=True)
class AsyncRequestHandle:
    """One queued request: poll it, wait for it, cancel it."""

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    client: AsyncClient

    async def status(self, *, with_logs: bool = False, deadline: Deadline | None = None) -> Status:
        params = {"logs": "1" if with_logs else "0"}
        return parse_status(await self.client._json("GET", self.status_url, params=params, deadline=deadline))

    async def iter_events(
        self,
        *,
        with_logs: bool = False,
        interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        deadline: Deadline | None = None,
    ) -> AsyncIterator[Status]:
        """Yield the status every `interval` s until (and including) Completed."""
        deadline = deadline or Deadline(timeout, self.request_id)
        while True:
            status = await self.status(with_logs=with_logs, deadline=deadline)
            yield status
            if isinstance(status, Completed):
                return
            deadline.check()
            await asyncio.sleep(deadline.sleep_time(interval))

    async def get(
        self,
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        with_logs: bool = False,
        on_queue_update: Callable[[Status], Any] | None = None,
        deadline: Deadline | None = None,
    ) -> Any:
        """Wait for completion and return the output; RequestFailed if it completed with an error."""
        deadline = deadline or Deadline(timeout, self.request_id)
        completed: Status | None = None
        async for completed in self.iter_events(with_logs=with_logs, interval=interval, deadline=deadline):
            if on_queue_update is not None:
                await _maybe_await(on_queue_update(completed))
        assert isinstance(completed, Completed)
        response = await self.client.send("GET", self.response_url, deadline=deadline)
        if completed.error is not None:
            raise failure(completed, self.request_id, response)
        if response.is_error:
            raise http_error(response)
        return json_body(response)

    async def cancel(self) -> None:
        response = await self.client.send("PUT", self.cancel_url)
        if response.is_error:
            raise http_error(response)

    async def cancel_quietly(self) -> None:
        """Best effort, after a client-side timeout: the request may already be done."""
        try:
            await self.client.send("PUT", self.cancel_url, deadline=Deadline(CANCEL_TIMEOUT))
        except PulidClientError:
            pass


async def _maybe_await(value: Any) -> None:
    """Callbacks may be plain functions or coroutines (as in fal-client's async client)."""
    if inspect.isawaitable(value):
        await value
