"""Data lifecycle and fal's platform headers over real HTTP: retention with its 410s, the lifecycle headers,
X-Fal-Store-IO, deleting payloads on demand, fal_max_queue_length, x-fal-no-retry, X-Fal-Runner-Hint,
X-Fal-Error-Type, Standard Webhooks signing and the webhook retry window, /metrics."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.servers import TEST_ENDPOINTS, Server, wait_completed

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RETENTION_ENV = {
    "PULID_RETAIN_OUTPUTS": "2s",
    "PULID_RETAIN_UPLOADS": "2s",
    "PULID_RETAIN_PAYLOADS": "3s",
    "PULID_RETAIN_JOBS": "5s",
    "PULID_PRUNE_EVERY_SECONDS": "0.2",
    "PULID_WEBHOOK_SECRET": SECRET,
    "PULID_WEBHOOK_RETRY_WINDOW_SECONDS": "2",
}
LIFECYCLE = "X-Fal-Object-Lifecycle-Preference"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers (test endpoints only) and retention measured in seconds, pruned every 0.2 s."""
    server = Server(
        tmp_path_factory.mktemp("lifecycle"), workers=2, worker_endpoints=TEST_ENDPOINTS, env=RETENTION_ENV
    ).start()
    yield server
    server.stop()


def png_data_uri(color: str = "red") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def image_job(c: httpx.Client, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """A finished test/image request and its output file's URL."""
    sub = c.post("/queue/test/image", json={"image_url": png_data_uri()}, headers=headers or {}).json()
    wait_completed(c, sub["status_url"])
    return sub, c.get(sub["response_url"]).json()["image"]["url"]


def assert_fal_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, response.text
    assert body["error_type"] == response.headers["x-fal-error-type"] == error_type
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_outputs_payload_and_job_expire_in_turn(srv: Server) -> None:
    with srv.client() as c:
        sub, url = image_job(c)
        status = c.get(sub["status_url"]).json()
        assert isinstance(status["metrics"]["inference_time"], float)  # fal's metrics.inference_time
        assert httpx.get(url).status_code == 200
        gone = until(lambda: (r := httpx.get(url)).status_code == 410 and r)  # retain_outputs: 2 s
        assert "expired" in assert_fal_error(gone, 410, "file_expired")["detail"]
        result = until(lambda: (r := c.get(sub["response_url"])).status_code == 410 and r)  # payloads: 3 s
        assert_fal_error(result, 410, "result_deleted")
        assert c.get(sub["status_url"]).json()["status"] == "COMPLETED"  # the request itself is kept
        until(lambda: c.get(sub["status_url"]).status_code == 404)  # retain_jobs: 5 s
        assert httpx.get(url).status_code == 404


def test_a_requests_lifecycle_preference_sets_its_outputs_lifetime(srv: Server) -> None:
    with srv.client() as c:
        _, default = image_job(c)
        _, kept = image_job(c, {LIFECYCLE: json.dumps({"expiration_duration_seconds": 3600})})
        _, forever = image_job(c, {LIFECYCLE: '{"expiration_duration_seconds": null}'})
        _, short = image_job(c, {LIFECYCLE: '{"expiration_duration_seconds": 1, "initial_acl": {}}'})
        until(lambda: httpx.get(default).status_code == 410)
        assert httpx.get(short).status_code == 410
        assert httpx.get(kept).status_code == httpx.get(forever).status_code == 200
        for bad in (
            "soon",
            '{"expiration_duration_seconds": -5}',
            '{"expiration_duration_seconds": "1h"}',
            "[]",
        ):
            r = c.post("/queue/test/echo", json={}, headers={LIFECYCLE: bad})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", LIFECYCLE.lower()]


def test_uploads_expire_unless_they_ask_to_be_kept(srv: Server) -> None:
    png = base64.b64decode(png_data_uri().partition(",")[2])
    with srv.client() as c:

        def initiate(headers: dict[str, str]) -> str:  # as @fal-ai/client uploads
            urls = c.post(
                "/rest/storage/upload/initiate", json={"content_type": "image/png"}, headers=headers
            )
            assert httpx.put(urls.json()["upload_url"], content=png).status_code == 200
            return str(urls.json()["file_url"])

        default = initiate({})
        kept = initiate({"X-Fal-Object-Lifecycle": '{"expiration_duration_seconds": 3600}'})
        token = c.post("/rest/storage/auth/token", json={}).json()  # as fal-client uploads (both headers)
        lifecycle = json.dumps({"expiration_duration_seconds": 3600})
        cdn = httpx.post(
            f"{srv.url}/cdn/files/upload",
            content=png,
            headers={
                "Authorization": f"Bearer {token['token']}",
                "Content-Type": "image/png",
                "X-Fal-Object-Lifecycle": lifecycle,
                "X-Fal-Object-Lifecycle-Preference": lifecycle,
            },
        ).json()["access_url"]
        assert_fal_error(
            until(lambda: (r := httpx.get(default)).status_code == 410 and r), 410, "file_expired"
        )
        assert httpx.get(kept).status_code == httpx.get(cdn).status_code == 200
        bad = c.post("/rest/storage/upload/initiate", json={}, headers={"X-Fal-Object-Lifecycle": "{"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
            "header",
            "x-fal-object-lifecycle",
        ]


def test_store_io_0_keeps_no_payload_once_the_result_is_delivered(srv: Server) -> None:
    with srv.client() as c:
        sub = c.post("/queue/test/echo", json={"value": "secret"}, headers={"X-Fal-Store-IO": "0"}).json()
        wait_completed(c, sub["status_url"])
        assert c.get(sub["response_url"]).json()["value"] == "secret"  # delivered once
        assert_fal_error(
            until(lambda: (r := c.get(sub["response_url"])).status_code == 410 and r), 410, "result_deleted"
        )
        assert c.get(sub["status_url"]).json()["status"] == "COMPLETED"
        ran = c.post("/run/test/echo", json={"value": "sync"}, headers={"X-Fal-Store-IO": "0"})
        assert ran.json()["value"] == "sync"  # /run delivers it in its answer
        run_id = ran.headers["x-fal-request-id"]
        until(lambda: c.get(f"/queue/test/echo/requests/{run_id}").status_code == 410)
        plain = c.post("/queue/test/echo", json={"value": "kept"}).json()
        wait_completed(c, plain["status_url"])
        assert [c.get(plain["response_url"]).status_code for _ in range(3)] == [200, 200, 200]
        assert c.post("/queue/test/echo", json={}, headers={"X-Fal-Store-IO": "maybe"}).status_code == 422


def test_payloads_deleted_on_demand(srv: Server) -> None:
    with srv.client() as c:
        sub, url = image_job(c, {LIFECYCLE: '{"expiration_duration_seconds": null}'})
        rid = sub["request_id"]
        with srv.client(srv.new_key()) as other:
            assert other.delete(f"/v1/models/requests/{rid}/payloads").status_code == 404
        deleted = c.delete(f"/v1/models/requests/{rid}/payloads")
        assert deleted.json() == {"cdn_delete_results": [{"link": url, "exception": None}]}
        assert_fal_error(httpx.get(url), 410, "file_expired")
        assert_fal_error(c.get(sub["response_url"]), 410, "result_deleted")
        again = c.put(f"/rest/requests/delete_io/{rid}")  # fal's older route; nothing left to delete
        assert again.json() == {"CDN_DELETE_RESULTS": []}
        via_proxy = c.post(  # the Platform API's host, through the JS client's proxy route
            "/api/fal/proxy",
            headers={"x-fal-target-url": f"https://api.fal.ai/v1/models/requests/{rid}/payloads"},
        )
        assert via_proxy.status_code == 405  # DELETE only: the route was found on api.fal.ai's paths
        running = c.post("/queue/test/echo", json={"steps": 40, "step_seconds": 0.05}).json()
        busy = c.delete(f"/v1/models/requests/{running['request_id']}/payloads")
        assert_fal_error(busy, 400, "bad_request")
        c.put(running["cancel_url"])


def test_fal_max_queue_length(srv: Server) -> None:
    with srv.client() as c:
        long = {"steps": 100, "step_seconds": 0.05}
        subs = [c.post("/queue/test/echo", json=long).json() for _ in range(4)]  # 2 run, 2 wait
        until(lambda: sum(c.get(s["status_url"]).json()["status"] == "IN_QUEUE" for s in subs) == 2)
        full = c.post("/queue/test/echo", params={"fal_max_queue_length": 2}, json={})
        assert_fal_error(full, 429, "queue_full")
        assert "fal_max_queue_length=2" in full.json()["detail"]
        assert (
            c.post(
                "/queue/test/image", params={"fal_max_queue_length": 1}, json={"image_url": png_data_uri()}
            ).status_code
            == 200
        )
        fits = c.post("/queue/test/echo", params={"fal_max_queue_length": 3}, json={})
        assert fits.status_code == 200
        bad = c.post("/queue/test/echo", params={"fal_max_queue_length": -1}, json={})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "fal_max_queue_length"]
        for s in [*subs, fits.json()]:
            c.put(s["cancel_url"])


def test_runner_hint_routes_to_the_worker_that_ran_it(srv: Server) -> None:
    with srv.client() as c:

        def batch(headers: dict[str, str], n: int = 8) -> set[int]:
            body = {"steps": 2, "step_seconds": 0.1}
            subs = [c.post("/queue/test/echo", json=body, headers=headers).json() for _ in range(n)]
            for s in subs:
                wait_completed(c, s["status_url"])
            return {c.get(s["response_url"]).json()["worker_pid"] for s in subs}

        assert len(batch({})) == 2  # both workers take jobs ...
        holder = batch({"X-Fal-Runner-Hint": "face-a"}, n=1)  # this worker now holds face-a's state
        assert batch({"X-Fal-Runner-Hint": "face-a"}) == holder  # ... and gets every job hinted so
        r = c.post("/queue/test/echo", json={}, headers={"X-Fal-Runner-Hint": "h" * 201})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "x-fal-runner-hint"]


def test_no_retry_ends_a_request_whose_worker_died(srv: Server, tmp_path: Path) -> None:
    with srv.client() as c:
        retried = c.post("/queue/test/kill", json={"marker": str(tmp_path / "a")}).json()
        once = c.post(
            "/queue/test/kill", json={"marker": str(tmp_path / "b")}, headers={"x-fal-no-retry": "1"}
        ).json()
        assert c.get(wait_result(c, retried)).json()["value"] == "survived"
        status = wait_completed(c, once["status_url"])
        assert status["error_type"] == "worker_crashed"
        assert_fal_error(c.get(once["response_url"]), 503, "worker_crashed")


def wait_result(c: httpx.Client, sub: dict[str, Any]) -> str:
    wait_completed(c, sub["status_url"])
    return str(sub["response_url"])


def test_errors_carry_fals_error_type(srv: Server) -> None:
    assert_fal_error(httpx.post(f"{srv.url}/queue/test/echo", json={}), 401, "unauthorized")
    with srv.client() as c:
        assert_fal_error(c.get("/queue/test/echo/requests/nope/status"), 404, "not_found")
        assert_fal_error(c.get("/no/such/route"), 404, "not_found")
        assert_fal_error(
            c.post("/api/fal/proxy", headers={"x-fal-target-url": "https://x.com/"}), 400, "bad_request"
        )
        big = c.post(
            "/queue/test/echo",
            content=b"x" * (17 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert_fal_error(big, 413, "payload_too_large")
        fields = c.post("/queue/test/echo", json={"steps": -1})  # a 422 listing fields keeps fal's shape
        assert fields.status_code == 422 and set(fields.json()) == {"detail"}
        assert fields.json()["detail"][0]["loc"] == ["body", "steps"]


class Receiver:
    """A webhook receiver that always answers 500, recording each attempt."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append((dict(self.headers), body))
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhooks_signed_both_ways_and_retried_within_their_window(srv: Server) -> None:
    from standardwebhooks import Webhook

    receiver = Receiver()
    try:
        with srv.client() as c:
            sub = c.post("/queue/test/echo", params={"fal_webhook": receiver.url}, json={"value": "w"}).json()
            until(lambda: len(receiver.calls) >= 3)
            time.sleep(2.5)  # past the 2 s window: no more attempts (of 10 allowed)
            assert len(receiver.calls) == 3
        headers, body = receiver.calls[0]
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["webhook-id"] == sub["request_id"] == json.loads(body)["request_id"]
        assert Webhook(SECRET).verify(body, lower) == json.loads(body)  # the Standard Webhooks library
        with pytest.raises(Exception, match="(?i)signature"):
            Webhook(SECRET).verify(body + b" ", lower)
        assert "x-fal-webhook-signature" in lower  # and fal's Ed25519 signature beside it
    finally:
        receiver.close()


def test_metrics_count_what_was_pruned_and_what_is_stored(srv: Server) -> None:
    with srv.client() as c:
        _, url = image_job(c)
        until(lambda: httpx.get(url).status_code == 410)
        text = until(lambda: (t := httpx.get(f"{srv.url}/metrics").text) and "pulid_stored_bytes{" in t and t)
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['pulid_pruned_files_total{prefix="outputs"}']) >= 1
    assert float(lines['pulid_pruned_bytes_total{prefix="outputs"}']) > 0
    assert float(lines['pulid_pruned_rows_total{table="outputs"}']) >= 1
    assert float(lines["pulid_database_bytes"]) > 0
    assert 'pulid_stored_files{prefix="outputs"}' in lines
