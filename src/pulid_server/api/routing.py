"""ASGI middleware that maps every way a client may reach us onto one set of routes.

- `/api/fal/proxy` with `x-fal-target-url` (the JS client's `proxyUrl`, @fal-ai/server-proxy protocol);
- fal host names (`fal.run`, `queue.fal.run`, `rest.fal.ai`, `v3.fal.media`, `api.fal.ai`) for the
  DNS-override recipe;
- a trailing slash is ignored instead of redirected (fal's SDK polls `.../status/`);
- request bodies are capped before any route reads them: a 413 for every oversized body, declared or
  chunked; uploads may be up to `max_file_bytes`, other bodies `max_body_bytes`.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulid_server import failures

HOST_PREFIXES = {
    "fal.run": "/run",
    "queue.fal.run": "/queue",
    "rest.fal.ai": "/rest",
    "rest.alpha.fal.ai": "/rest",
    "v3.fal.media": "/cdn",
    "v3b.fal.media": "/cdn",
    "api.fal.ai": "",  # the Platform API: /v1/... paths as they are
}
PROXY_PATH = "/api/fal/proxy"
UPLOAD_PATHS = ("/files/upload/", "/cdn/files/upload")  # api/storage.py: bodies up to max_file_bytes


class FalRoutingMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_file_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_file_bytes = max_file_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.rstrip("/") == PROXY_PATH:
            target = _header(scope, b"x-fal-target-url")
            rewritten = _rewrite_target(target) if target else None
            if rewritten is None:
                await _refuse(send, 400, "Invalid request: x-fal-target-url must name a fal host")
                return
            path, query = rewritten
            scope = {**scope, "query_string": query.encode()}
        else:
            prefix = HOST_PREFIXES.get(_header(scope, b"host").split(":")[0])
            if prefix and not path.startswith(prefix + "/"):
                path = prefix + path
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        scope = {**scope, "path": path, "raw_path": path.encode()}
        limit = self.max_file_bytes if path.startswith(UPLOAD_PATHS) else self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, str(BodyTooLarge(limit).detail))
            return
        await self.app(scope, _capped(receive, limit), send)


def _rewrite_target(target: str) -> tuple[str, str] | None:
    parts = urlsplit(target)
    prefix = HOST_PREFIXES.get(parts.hostname or "")
    if parts.scheme not in ("http", "https") or prefix is None:
        return None
    return prefix + (parts.path or "/"), parts.query


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


class BodyTooLarge(HTTPException):
    """A body grew past the cap while a route read it: a 413 (an HTTPException, so that FastAPI's body
    parsing passes it on instead of answering 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"Request body is larger than {limit} bytes")


async def _refuse(send: Send, status: int, message: str) -> None:
    """fal's request error, before any route runs: `{detail, error_type}` with X-Fal-Error-Type."""
    failure = failures.request_error(status, message)
    data = json.dumps(failure.body()).encode()
    headers = [
        (k.lower().encode(), v.encode()) for k, v in failures.error_headers(failure.error_type).items()
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
