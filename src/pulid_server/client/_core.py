"""What the sync and async clients share: configuration, URLs, headers, retry decisions, deadlines.

Everything here is pure (no I/O), so `sync.py` and `aio.py` stay two thin loops over the same rules.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from pulid_server import __version__
from pulid_server.client.errors import PulidTimeoutError, RequestFailed, parse_error_body
from pulid_server.client.status import Completed

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0  # seconds per HTTP call (fal-client's default)
DEFAULT_POLL_INTERVAL = 0.1
CANCEL_TIMEOUT = 10.0
RETRY_STATUS = frozenset({408, 409, 429})
USER_AGENT = f"pulid-client/{__version__}"
Priority = Literal["normal", "low"]


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("PULID_URL") or DEFAULT_URL).rstrip("/")


def resolve_key(key: str | None) -> str | None:
    return key or os.environ.get("PULID_KEY") or os.environ.get("FAL_KEY") or None


def app_path(endpoint: str) -> str:
    """Status/result/cancel URLs use only `[workflows|comfy/]owner/alias` (protocol §2)."""
    parts = endpoint.strip("/").split("/")
    keep = 3 if parts[0] in ("workflows", "comfy") else 2
    if len(parts) < keep:
        raise ValueError(f"endpoint must look like 'owner/alias', got {endpoint!r}")
    return "/".join(parts[:keep])


def request_urls(base: str, endpoint: str, request_id: str) -> tuple[str, str, str]:
    """(response_url, status_url, cancel_url) of a request known only by its id."""
    response_url = f"{base}/queue/{app_path(endpoint)}/requests/{request_id}"
    return response_url, f"{response_url}/status", f"{response_url}/cancel"


def base_headers(key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Key {key}"
    return headers


def submit_headers(
    priority: Priority | None, start_timeout: float | None, extra: dict[str, str] | None
) -> dict[str, str]:
    # The Idempotency-Key makes a retried submit (connection reset after the server stored it) safe.
    headers = {**(extra or {}), "Idempotency-Key": uuid.uuid4().hex}
    if priority is not None:
        if priority not in ("normal", "low"):
            raise ValueError("priority must be 'normal' or 'low'")
        headers["X-Fal-Queue-Priority"] = priority
    if start_timeout is not None:
        if start_timeout <= 1:
            raise ValueError("start_timeout must be more than 1 second")
        headers["X-Fal-Request-Timeout"] = str(float(start_timeout))
    return headers


@dataclass(frozen=True)
class Retry:
    """A retry about to happen, as `RetryPolicy.on_retry` is told of it."""

    attempt: int  # the try that failed (1-based)
    max_attempts: int
    delay: float  # seconds until the next try
    status_code: int | None  # 408 / 409 / 429, or None for a connection error
    reason: str  # the server's message, or the connection error


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on 408/409/429 and transport errors, with jittered exponential backoff.

    max_attempts: tries in all (1 = never retry). base_delay: the first wait, doubled per try.
    max_delay: cap on one wait, also on a server's `Retry-After` hint.
    on_retry: called before each wait (e.g. to tell a user why nothing seems to happen).
    """

    max_attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 10.0
    on_retry: Callable[[Retry], None] | None = None

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        backoff: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1)) * random.uniform(
            0.5, 1.5
        )
        return min(self.max_delay, max(backoff, _seconds(retry_after)))

    def delay_after(self, attempt: int, outcome: httpx.Response | httpx.TransportError) -> float:
        retry_after = outcome.headers.get("retry-after") if isinstance(outcome, httpx.Response) else None
        return self.delay(attempt, retry_after)

    def notify(self, attempt: int, delay: float, outcome: httpx.Response | httpx.TransportError) -> None:
        if self.on_retry is None:
            return
        if isinstance(outcome, httpx.Response):
            status_code: int | None = outcome.status_code
            reason = parse_error_body(outcome)[0]
        else:
            status_code, reason = None, f"{type(outcome).__name__}: {outcome}"
        self.on_retry(Retry(attempt, self.max_attempts, delay, status_code, reason))


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:  # an HTTP date: not worth parsing; the backoff applies
        return 0.0


def retryable_transport(exc: httpx.TransportError) -> bool:
    """Connection problems are retried; a read/write timeout means the server is slow: not retried."""
    return not isinstance(exc, httpx.TimeoutException) or isinstance(exc, httpx.ConnectTimeout)


class Deadline:
    """An optional overall time limit shared by every HTTP call and sleep of one operation."""

    def __init__(self, seconds: float | None, request_id: str | None = None):
        self.seconds = seconds
        self.request_id = request_id
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def http_timeout(self, default: float) -> float:
        left = self.remaining()
        return default if left is None else max(0.001, min(default, left))

    def check(self, needed: float = 0.0) -> None:
        """Raise PulidTimeoutError if the deadline passes within `needed` seconds."""
        left = self.remaining()
        if left is not None and left <= needed:
            raise PulidTimeoutError(self.seconds or 0.0, self.request_id)

    def sleep_time(self, interval: float) -> float:
        left = self.remaining()
        return interval if left is None else max(0.0, min(interval, left))

    def timeout_error(self, default: float) -> PulidTimeoutError:
        """An httpx timeout: blame the deadline if it is what capped the call."""
        left = self.remaining()
        expired = left is not None and left <= 0.01
        return PulidTimeoutError(self.seconds if expired and self.seconds else default, self.request_id)


def failure(completed: Completed, request_id: str, response: httpx.Response) -> RequestFailed:
    """The RequestFailed for a request that completed with an error; the result response has the details."""
    status_code: int | None = None
    field_errors: list[dict[str, Any]] = []
    if response.status_code >= 400:
        status_code = response.status_code
        _, field_errors, _ = parse_error_body(response)
    return RequestFailed(
        completed.error or "request failed", completed.error_type, request_id, status_code, field_errors
    )


def json_body(response: httpx.Response) -> Any:
    return response.json() if response.content else None
