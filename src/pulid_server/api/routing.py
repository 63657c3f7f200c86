"""ASGI middleware that maps every way a client may reach us onto one set of routes.

- `/api/fal/proxy` with `x-fal-target-url` (the JS client's `proxyUrl`, @fal-ai/server-proxy protocol);
- fal host names (`fal.run`, `queue.fal.run`, `rest.fal.ai`, `v3.fal.media`, `api.fal.ai`) for the
  DNS-override recipe;
- a trailing slash is ignored instead of redirected (fal's SDK polls `.../status/`).

Request bodies are capped by FastAPI's `max_body_size` (api/app.py, and the upload routes' own cap): a
413 for every oversized body, declared or chunked.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

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


class FalRoutingMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

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
        await self.app(scope, receive, send)


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
