"""Typed errors of the client. Every one is a `PulidClientError`, so one `except` catches them all."""

from __future__ import annotations

import json
from typing import Any

import httpx


class PulidClientError(Exception):
    """Base class of every error this client raises."""


class PulidConnectionError(PulidClientError):
    """The server could not be reached (after retries): refused, reset, DNS, TLS."""


class PulidHTTPError(PulidClientError):
    """The server answered with an error status.

    `field_errors` holds the 422 `detail` list (`[{"loc": [...], "msg": ..., "type": ...}]`), else [].
    """

    def __init__(
        self,
        message: str,
        status_code: int,
        field_errors: list[dict[str, Any]] | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.field_errors = field_errors or []
        self.error_type = error_type
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class PulidTimeoutError(PulidClientError, TimeoutError):
    """The client-side deadline passed. The request (if one was created) was cancelled."""

    def __init__(self, timeout: float, request_id: str | None = None):
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"no result within {timeout:g} s{where}")
        self.timeout = timeout
        self.request_id = request_id


class RequestFailed(PulidClientError):
    """The request completed with an error (cancelled, no face found, model error...).

    `error_type` is the server's machine id (`request_cancelled`, `no_face`, `internal_error`, ...);
    `status_code` and `field_errors` come from the result response the server replays for it.
    """

    def __init__(
        self,
        message: str,
        error_type: str | None,
        request_id: str,
        status_code: int | None = None,
        field_errors: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.request_id = request_id
        self.status_code = status_code
        self.field_errors = field_errors or []

    @property
    def cancelled(self) -> bool:
        return self.error_type == "request_cancelled"

    def __str__(self) -> str:
        return f"{self.error_type or 'error'}: {self.message}"


def parse_error_body(response: httpx.Response) -> tuple[str, list[dict[str, Any]], str | None]:
    """(message, field_errors, error_type) from a fal-shaped error response (§6.1 of the protocol)."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    message = response.text or response.reason_phrase
    field_errors: list[dict[str, Any]] = []
    error_type = None
    if isinstance(body, dict):
        detail = body.get("detail", body.get("status"))
        error_type = body.get("error_type")
        if isinstance(detail, list):
            field_errors = [e for e in detail if isinstance(e, dict)]
            message = "; ".join(format_field_error(e) for e in field_errors) or message
        elif detail is not None:
            message = str(detail)
    return message, field_errors, error_type or response.headers.get("x-fal-error-type")


def format_field_error(error: dict[str, Any]) -> str:
    """{"loc": ["body", "reference_images", 0, "image_url"], "msg": "..."} -> "reference_images[0].image_url: ..."."""
    loc = [p for p in error.get("loc", []) if p != "body"]
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return f"{name or 'body'}: {error.get('msg', '')}"


def http_error(response: httpx.Response) -> PulidHTTPError:
    message, field_errors, error_type = parse_error_body(response)
    return PulidHTTPError(
        message, response.status_code, field_errors, error_type, response.headers.get("x-fal-request-id")
    )
