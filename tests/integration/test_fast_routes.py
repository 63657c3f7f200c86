"""api/fast_routes.py serves submits, sync runs, statuses and results without FastAPI's machinery; the FastAPI
routes behind them define what those answer. Here the app in this process (real SQLite store) gets the
same requests twice, once through the fast routes and once with them taken out, and must answer alike:
status, body and fal's headers, for every way a request can be refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pulid_server import endpoints
from pulid_server.api import fast_routes
from pulid_server.api.app import create_app
from pulid_server.config import Settings
from tests.asgi import call

JSON = "application/json"
# (method, path, content type, body, with the key): the refusals, in the order FastAPI checks them
CASES: list[tuple[str, str, str | None, bytes, bool]] = [
    ("POST", "/queue/test/echo", JSON, b"{", True),  # the JSON first...
    ("POST", "/queue/test/echo", JSON, b"{", False),  # ... even before the key
    ("POST", "/queue/test/echo", JSON, b'{"steps": "x"}', False),  # then the key
    ("POST", "/queue/test/echo", JSON, b'{"steps": "x", "step_seconds": -1}', True),
    ("POST", "/queue/test/echo", JSON, b"", True),
    ("POST", "/queue/test/echo", JSON, b"null", True),
    ("POST", "/queue/test/echo", JSON, b"[]", True),
    ("POST", "/queue/test/echo", JSON, b'{"value": NaN}', True),
    ("POST", "/queue/test/echo", JSON, b'{"value": "\\ud800"}', True),
    ("POST", "/queue/test/echo", None, b"{}", True),  # no content type: not read as JSON
    ("POST", "/queue/test/echo", "text/plain", b"{}", True),
    ("POST", "/queue/test/echo", "application/vnd.api+json; charset=utf-8", b'{"steps": -1}', True),
    ("POST", "/queue/test/echo?fal_max_queue_length=-1", JSON, b'{"steps": -1}', True),
    ("POST", "/queue/test/echo?fal_max_queue_length=abc", JSON, b"{}", True),
    ("POST", "/queue/test/echo?fal_max_queue_length=", JSON, b"{}", True),
    ("POST", "/queue/test/echo?fal_max_queue_length=1&fal_max_queue_length=x", JSON, b"{}", True),
    ("POST", "/queue/test/echo", JSON, b"{" + b" " * 2048 + b"}", True),  # over the cap, found reading it
    ("POST", "/run/test/echo", JSON, b"{", False),
    ("POST", "/run/test/echo", JSON, b'{"steps": 1.5}', False),
    ("POST", "/run/test/echo", JSON, b'{"steps": 1.5}', True),
    ("POST", "/run/test/echo", "text/plain", b"", True),
    ("GET", "/queue/test/echo/requests/not%20an%20id/status", None, b"", False),
    ("GET", "/queue/test/echo/requests/not%20an%20id/status", None, b"", True),
    ("GET", "/queue/test/echo/requests/no-such-request/status?logs=1", None, b"", True),
    ("GET", "/queue/test/echo/requests/not%20an%20id", None, b"", True),
    ("GET", "/queue/test/echo/requests/no-such-request", None, b"", True),
    ("GET", "/queue/test/echo/requests/no-such-request", None, b"", False),
]


async def _call(app: Any, method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The answer's status, fal's headers and its JSON body."""
    sent = await call(app, method, target, headers, body)
    start = sent[0]
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    kept = {b"content-type", b"x-fal-error-type", b"x-fal-request-id", b"retry-after"}
    return {
        "status": start["status"],
        "headers": sorted((k, v) for k, v in start["headers"] if k in kept),
        "body": json.loads(answer),
    }


def test_the_fast_routes_answer_every_refusal_as_the_fastapi_routes_do(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, extra_endpoints=["tests.fixtures.endpoints"], max_body_bytes=1024)
    app = create_app(settings)

    async def answers() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with app.router.lifespan_context(app):
            key = app.state.pulid.store.keys.create_key("parity")
            requests = [
                (method, target, {"host": "x", **({"content-type": ct} if ct else {}), **auth}, body)
                for method, target, ct, body, keyed in CASES
                for auth in [{"authorization": f"Key {key}"} if keyed else {}]
            ]
            fast = [await _call(app, *r) for r in requests]
            routes = app.router.routes
            ours = [
                r
                for r in routes
                if getattr(getattr(r, "endpoint", None), "__module__", "") == fast_routes.__name__
            ]
            assert len(ours) == 2 + 2 * len(endpoints.all_endpoints())  # status, result; submit, /run each
            routes[:] = [r for r in routes if r not in ours]
            return fast, [await _call(app, *r) for r in requests]

    fast, reference = asyncio.run(answers())
    assert {a["status"] for a in reference} >= {401, 404, 413, 422}
    for case, got, expected in zip(CASES, fast, reference, strict=True):
        assert got == expected, case


@pytest.mark.parametrize("path", ["/queue/test/echo", "/run/test/echo"])
def test_a_valid_request_passes_the_checks(tmp_path: Path, path: str) -> None:
    """And one that passes reaches its route (a submit is queued; a /run here, with no worker, waits for
    its start deadline)."""
    app = create_app(Settings(data_dir=tmp_path, extra_endpoints=["tests.fixtures.endpoints"]))

    async def answer() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            key = app.state.pulid.store.keys.create_key("parity")
            headers = {"host": "x", "content-type": JSON, "authorization": f"Key {key}"}
            if path.startswith("/run"):
                headers["x-fal-request-timeout"] = "0.2"
            return await _call(app, "POST", path + "?fal_max_queue_length=5", headers, b'{"steps": 1}')

    got = asyncio.run(answer())
    if path.startswith("/queue"):
        assert got["status"] == 200 and got["body"]["status"] == "IN_QUEUE"
    else:
        assert got["status"] == 504 and got["body"]["error_type"] == "request_timeout"
