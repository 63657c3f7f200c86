"""Uploads, data URIs, file downloads and webhook delivery over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image

from tests.servers import Server, wait_completed


def png_bytes(size: tuple[int, int] = (40, 30), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_upload_then_use_uploaded_url(server: Server) -> None:
    with server.client() as c:
        r = c.post(
            "/rest/storage/upload/initiate", json={"file_name": "face.png", "content_type": "image/png"}
        )
        assert r.status_code == 200
        urls = r.json()
        assert (
            httpx.put(
                urls["upload_url"], content=png_bytes(), headers={"Content-Type": "image/png"}
            ).status_code
            == 200
        )
        assert httpx.get(urls["file_url"]).content == png_bytes()

        sub = c.post("/queue/test/image", json={"image_url": urls["file_url"]}).json()
        wait_completed(c, sub["status_url"])
        out = c.get(sub["response_url"]).json()["image"]
        assert (out["width"], out["height"], out["content_type"]) == (40, 30, "image/png")
        image = Image.open(io.BytesIO(httpx.get(out["url"]).content))
        assert image.format == "PNG" and image.size == (40, 30)


def test_cdn_token_upload_flow(server: Server) -> None:
    with server.client() as c:
        token = c.post("/rest/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}).json()
        assert token["token_type"] == "Bearer" and token["expires_at"].endswith("+00:00")
        r = httpx.post(
            f"{server.url}/cdn/files/upload",
            content=png_bytes(),
            headers={
                "Authorization": f"Bearer {token['token']}",
                "Content-Type": "image/png",
                "X-Fal-File-Name": "a.png",
            },
        )
        assert r.status_code == 200
        assert httpx.get(r.json()["access_url"]).content == png_bytes()
        bad = httpx.post(
            f"{server.url}/cdn/files/upload", content=b"x", headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401


def test_data_uri_input(server: Server) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png_bytes((24, 16))).decode()
    with server.client() as c:
        sub = c.post("/queue/test/image", json={"image_url": uri}).json()
        wait_completed(c, sub["status_url"])
        assert c.get(sub["response_url"]).json()["image"]["width"] == 24


def test_bad_image_is_refused_at_submit_naming_the_field(server: Server) -> None:
    uri = "data:text/plain;base64," + base64.b64encode(b"not an image").decode()
    with server.client() as c:
        r = c.post("/queue/test/image", json={"image_url": uri})
        assert r.status_code == 422
        [error] = r.json()["detail"]
        assert (error["loc"], error["type"]) == (["body", "image_url"], "invalid_image")
        assert error["msg"] == "not a JPEG/PNG/WEBP image"  # the field is named by `loc`, not repeated


def test_missing_own_file_is_no_such_uploaded_file(server: Server) -> None:
    """A /files/ URL of this server that names nothing is read from the blob store (never fetched), and
    the error names the field once: in `loc`, not again in the message."""
    with server.client() as c:
        for url in (f"{server.url}/files/nope.png", f"{server.url}/files/uploads/missing/face.png"):
            sub = c.post("/queue/test/image", json={"image_url": url}).json()
            done = wait_completed(c, sub["status_url"])
            assert done["error"] == f"image_url: no such uploaded file on this server: {url}"
            [detail] = c.get(sub["response_url"]).json()["detail"]
            assert detail["loc"] == ["body", "image_url"]
            assert detail["msg"] == f"no such uploaded file on this server: {url}"


def test_upload_too_large_is_413(server: Server) -> None:
    with server.client() as c:
        urls = c.post("/rest/storage/upload/initiate", json={"file_name": "x.bin"}).json()
        r = httpx.put(urls["upload_url"], content=b"\0" * (21 * 1024 * 1024))
        assert r.status_code == 413


def test_html_upload_is_served_as_attachment(server: Server) -> None:
    with server.client() as c:
        urls = c.post(
            "/rest/storage/upload/initiate", json={"file_name": "x.html", "content_type": "text/html"}
        ).json()
        httpx.put(
            urls["upload_url"], content=b"<script>alert(1)</script>", headers={"Content-Type": "text/html"}
        )
        r = httpx.get(urls["file_url"])
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == "attachment"


class Receiver:
    """A local webhook receiver that fails the first `failures` deliveries with 500."""

    def __init__(self, failures: int = 1):
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                code = 500 if len(receiver.calls) <= receiver.failures else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook?a=1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} webhook calls"
            time.sleep(0.05)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def verify_fal_signature(jwks: dict[str, Any], headers: dict[str, str], body: bytes) -> bool:
    message = "\n".join(
        [
            headers["X-Fal-Webhook-Request-Id"],
            headers["X-Fal-Webhook-User-Id"],
            headers["X-Fal-Webhook-Timestamp"],
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()
    for key in jwks["keys"]:
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(
                bytes.fromhex(headers["X-Fal-Webhook-Signature"]), message
            )
            return True
        except Exception:  # noqa: BLE001 - try the next key
            continue
    return False


def test_webhook_retried_after_failure_and_signed(server: Server) -> None:
    receiver = Receiver(failures=1)
    try:
        with server.client() as c:
            sub = c.post(
                "/queue/test/echo", params={"fal_webhook": receiver.url}, json={"value": "hook"}
            ).json()
            receiver.wait(2)
            time.sleep(0.5)
            assert len(receiver.calls) == 2  # one failure, one success, then nothing more
            headers, body = receiver.calls[-1]
            payload = json.loads(body)
            assert payload["request_id"] == sub["request_id"] == payload["gateway_request_id"]
            assert payload["status"] == "OK" and payload["payload"]["value"] == "hook"
            jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
            assert verify_fal_signature(jwks, headers, body)
            assert not verify_fal_signature(jwks, headers, body + b" ")
    finally:
        receiver.close()


def test_webhook_error_payload(server: Server) -> None:
    receiver = Receiver(failures=0)
    try:
        with server.client() as c:
            c.post("/queue/test/fail", params={"fal_webhook": receiver.url}, json={"kind": "user"})
            receiver.wait(1)
            payload = json.loads(receiver.calls[0][1])
            assert payload["status"] == "ERROR" and "no face" in payload["error"]
            assert payload["payload"]["detail"][0]["loc"] == ["body", "reference_images", 0, "image_url"]
    finally:
        receiver.close()


def test_bad_webhook_url_is_422(server: Server) -> None:
    with server.client() as c:
        r = c.post("/queue/test/echo", params={"fal_webhook": "ftp://example.com/x"}, json={})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
