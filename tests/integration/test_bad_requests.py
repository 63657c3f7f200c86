"""Hostile requests get a clear 4xx over real HTTP, never a 500 or a dropped connection (issue #12)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from openapi_spec_validator import validate

from tests.servers import Server

BAD_JSON = {
    "NaN": b'{"value": NaN}',
    "Infinity": b'{"value": -Infinity}',
    "overflow": b'{"steps": 1e400}',
    "lone surrogate value": b'{"value": "\\ud800"}',
    "lone surrogate key": b'{"\\udfff": 1}',
    "too deep": b"[" * 100_000 + b"]" * 100_000,
    "huge integer": b'{"steps": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("body", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_json_that_cannot_be_stored_or_echoed_is_422(server: Server, body: bytes) -> None:
    with server.client() as c:
        for path in ("/queue/test/echo", "/run/test/echo"):
            r = c.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (path, r.text[:300])
            [error] = r.json()["detail"]
            assert error["type"] == "json_invalid" and error["loc"][0] == "body"


def test_422_never_echoes_the_input(server: Server) -> None:
    junk = "x" * 3_000_000
    with server.client() as c:
        r = c.post("/queue/fal-ai/pulid", json={"prompt": junk, "reference_images": "not a list"})
    assert r.status_code == 422 and len(r.content) < 10_000
    assert {tuple(e["loc"]) for e in r.json()["detail"]} >= {("body", "prompt"), ("body", "reference_images")}


@pytest.mark.parametrize(
    "key", ["uploads//etc/passwd", "uploads/../../pulid.db", "outputs/a/./b", "uploads/%00"]
)
def test_invalid_file_keys_are_404(server: Server, key: str) -> None:
    assert httpx.get(f"{server.url}/files/{key}").status_code == 404


@pytest.mark.parametrize("suffix", ["/status", "/status/stream", "", "/cancel"])
def test_request_ids_with_a_trailing_newline_are_refused_not_dropped(server: Server, suffix: str) -> None:
    with server.client() as c:
        rid = c.post("/queue/test/echo", json={}).json()["request_id"]
        method = "PUT" if suffix == "/cancel" else "GET"
        r = c.request(method, f"/queue/test/echo/requests/{rid}%0A{suffix}")
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["path", "request_id"]
        assert "x-fal-request-id" not in r.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/models/requests/{}/payloads"), ("PUT", "/rest/requests/delete_io/{}")],
)
def test_payload_routes_refuse_ids_with_a_trailing_newline(server: Server, method: str, path: str) -> None:
    with server.client() as c:
        r = c.request(method, path.format(f"{uuid.uuid4()}%0A"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "request_id"]
    assert "x-fal-request-id" not in r.headers


def test_long_idempotency_keys_are_refused_not_cut(server: Server) -> None:
    prefix = f"idem-{time.time()}-".ljust(200, "k")
    with server.client() as c:
        for tail in ("1", "2"):
            r = c.post("/queue/test/echo", json={"value": tail}, headers={"Idempotency-Key": prefix + tail})
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
        whole = c.post("/queue/test/echo", json={}, headers={"Idempotency-Key": prefix})
        again = c.post("/queue/test/echo", json={}, headers={"Idempotency-Key": prefix})
        assert whole.status_code == 200 and whole.json()["request_id"] == again.json()["request_id"]


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    yield b'{"value": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def test_every_oversized_body_is_413_and_uploads_may_reach_the_file_limit(server: Server) -> None:
    with server.client() as c:
        chunked = c.post(
            "/queue/test/echo", content=_chunks(17 << 20), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413  # no Content-Length: caught while reading
        assert chunked.json()["error_type"] == "payload_too_large"  # fal's request error, as when declared
        declared = c.post("/queue/test/echo", content=b"{" + b" " * (17 << 20) + b"}")
        assert declared.status_code == 413
        urls = c.post("/rest/storage/upload/initiate", json={"file_name": "big.bin"}).json()
        # 18 MB: over the 16 MB cap on request bodies, within the 20 MB cap on files
        assert httpx.put(urls["upload_url"], content=b"\0" * (18 << 20)).status_code == 200
        assert len(httpx.get(urls["file_url"]).content) == 18 << 20


def test_openapi_document_is_valid_and_declares_every_path_parameter(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema, undeclared path parameters included
    status = spec["paths"]["/queue/{app}/requests/{request_id}/status"]["get"]
    assert {p["name"] for p in status["parameters"] if p["in"] == "path"} == {"app", "request_id"}
