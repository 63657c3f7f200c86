"""The fal queue protocol over real HTTP against a real server (uvicorn, SQLite, worker process)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.servers import Server, wait_completed


def submit(client: httpx.Client, endpoint: str, body: dict, **kwargs) -> dict:
    r = client.post(f"/queue/{endpoint}", json=body, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_submit_status_result_happy_path(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/echo", {"value": "hi", "steps": 3, "step_seconds": 0.05})
        assert sub["status"] == "IN_QUEUE"
        assert isinstance(sub["queue_position"], int)
        rid = sub["request_id"]
        assert sub["gateway_request_id"] == rid
        base = f"{server.url}/queue/test/echo/requests/{rid}"
        assert (sub["response_url"], sub["status_url"], sub["cancel_url"]) == (
            base,
            base + "/status",
            base + "/cancel",
        )

        done = wait_completed(c, sub["status_url"])
        assert [line["message"] for line in done["logs"]][-3:] == ["step 1/3", "step 2/3", "step 3/3"]
        assert {"level", "source", "timestamp"} <= done["logs"][0].keys()
        assert done["metrics"]["inference_time"] > 0
        assert "error" not in done

        r = c.get(sub["response_url"])
        assert r.status_code == 200
        assert r.headers["x-fal-request-id"] == rid
        assert r.json()["value"] == "hi"


def test_status_logs_flag_variants(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/echo", {"steps": 1})
        wait_completed(c, sub["status_url"])
        for flag, has_logs in [("1", True), ("true", True), ("0", False), ("false", False), (None, False)]:
            params = {"logs": flag} if flag is not None else {}
            body = c.get(sub["status_url"], params=params).json()
            assert "logs" in body
            assert (body["logs"] is not None) == has_logs, flag


def test_trailing_slash_is_not_redirected(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/echo", {})
        wait_completed(c, sub["status_url"])
        assert c.get(sub["status_url"] + "/").status_code == 200
        assert c.get(sub["response_url"] + "/").status_code == 200


def test_missing_or_bad_key_is_401(server: Server) -> None:
    r = httpx.post(f"{server.url}/queue/test/echo", json={})
    assert r.status_code == 401 and "detail" in r.json()
    r = httpx.post(f"{server.url}/queue/test/echo", json={}, headers={"Authorization": "Key nope:nope"})
    assert r.status_code == 401
    # The status and result reads (api/fast_routes.py) check the key before the request id, as FastAPI does.
    for suffix in ("", "/status"):
        for rid in ("no-such-request", "not%20an%20id"):
            r = httpx.get(f"{server.url}/queue/test/echo/requests/{rid}{suffix}")
            assert r.status_code == 401 and r.headers["x-fal-error-type"] == "unauthorized", r.text


def test_other_keys_request_is_404(server: Server) -> None:
    other = server.new_key()
    with server.client() as mine, server.client(other) as theirs:
        sub = submit(mine, "test/echo", {})
        for method, url in [
            ("GET", sub["status_url"]),
            ("GET", sub["response_url"]),
            ("PUT", sub["cancel_url"]),
        ]:
            assert theirs.request(method, url).status_code == 404
        wait_completed(mine, sub["status_url"])


def test_unknown_endpoint_and_request_are_404(server: Server) -> None:
    with server.client() as c:
        assert c.post("/queue/nobody/nothing", json={}).status_code == 404
        assert c.get("/queue/test/echo/requests/does-not-exist/status").status_code == 404
        r = c.put("/queue/test/echo/requests/does-not-exist/cancel")
        assert r.status_code == 404 and r.json()["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "body,loc",
    [
        ({"prompt": "x"}, ["body", "reference_images"]),
        ({"reference_images": [{"image_url": "data:,"}]}, ["body", "prompt"]),
        ({"reference_images": [], "prompt": "x"}, ["body", "reference_images"]),
        ({"reference_images": [{"image_url": "u"}] * 5, "prompt": "x"}, ["body", "reference_images"]),
        ({"reference_images": [{"image_url": "u"}], "prompt": "x", "num_images": 5}, ["body", "num_images"]),
        (
            {"reference_images": [{"image_url": "u"}], "prompt": "x", "num_inference_steps": 0},
            ["body", "num_inference_steps"],
        ),
        ({"reference_images": [{"image_url": "u"}], "prompt": "x", "mode": "photo"}, ["body", "mode"]),
        ({"reference_images": [{"image_url": "u"}], "prompt": "x", "id_scale": -1}, ["body", "id_scale"]),
        (
            {"reference_images": [{"image_url": "u"}], "prompt": "x", "image_size": "huge"},
            ["body", "image_size"],
        ),
        (
            {
                "reference_images": [{"image_url": "u"}],
                "prompt": "x",
                "image_size": {"width": 513, "height": 512},
            },
            ["body", "image_size", "ImageSize", "width"],
        ),
        ({"reference_images": [{"image_url": "u"}], "prompt": "x", "colour": "red"}, ["body", "colour"]),
    ],
)
def test_bad_fields_are_422_naming_the_field(server: Server, body: dict, loc: list) -> None:
    with server.client() as c:
        r = c.post("/queue/fal-ai/pulid", json=body)
        assert r.status_code == 422, r.text
        locs = [e["loc"][: len(loc)] for e in r.json()["detail"]]
        assert loc in locs, r.json()


def test_failed_job_completes_with_error_and_replays_it(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/fail", {"kind": "user"})
        done = wait_completed(c, sub["status_url"])
        assert done["error_type"] == "no_face" and "reference_images[0]" in done["error"]
        r = c.get(sub["response_url"])
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "reference_images", 0, "image_url"]

        sub = submit(c, "test/fail", {"kind": "crash"})
        done = wait_completed(c, sub["status_url"])
        assert done["error_type"] == "internal_error"
        r = c.get(sub["response_url"])
        assert r.status_code == 500 and r.headers["x-fal-request-id"] == sub["request_id"]


def test_cancel_queued_and_running(server: Server) -> None:
    with server.client() as c:
        running = submit(c, "test/echo", {"steps": 200, "step_seconds": 0.05})
        queued = submit(c, "test/echo", {"value": "never"})
        deadline = time.monotonic() + 30
        while c.get(running["status_url"]).json()["status"] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.get(queued["status_url"]).json()["queue_position"] >= 0

        r = c.put(queued["cancel_url"])
        assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
        done = wait_completed(c, queued["status_url"], timeout=5)
        assert done["error_type"] == "request_cancelled"

        assert c.put(running["cancel_url"]).status_code == 202
        done = wait_completed(c, running["status_url"], timeout=30)
        assert done["error_type"] == "request_cancelled"
        steps = [line["message"] for line in done["logs"] if line["message"].startswith("step")]
        assert len(steps) < 200
        assert c.get(running["response_url"]).status_code == 400
        r = c.put(running["cancel_url"])
        assert r.status_code == 400 and r.json() == {"status": "ALREADY_COMPLETED"}


def test_sync_run(server: Server) -> None:
    with server.client() as c:
        r = c.post("/run/test/echo", json={"value": "sync"})
        assert r.status_code == 200 and r.json()["value"] == "sync"
        assert r.headers["x-fal-request-id"]
        assert c.post("/run/test/fail", json={"kind": "user"}).status_code == 422


def test_result_before_completion_is_400(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/echo", {"steps": 20, "step_seconds": 0.05})
        r = c.get(sub["response_url"])
        assert r.status_code == 400
        wait_completed(c, sub["status_url"])


def test_status_stream_sends_events_and_closes_after_completed(server: Server) -> None:
    with server.client() as c:
        sub = submit(c, "test/echo", {"steps": 3, "step_seconds": 0.1})
        events = []
        with c.stream("GET", sub["status_url"] + "/stream", params={"logs": "1"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    import json

                    events.append(json.loads(line[6:]))
        assert events[-1]["status"] == "COMPLETED"
        messages = [line["message"] for e in events if e.get("logs") for line in e["logs"]]
        assert messages.count("step 3/3") == 1  # logs are incremental per event


def test_proxy_dispatch_on_target_url(server: Server) -> None:
    with server.client() as c:
        r = c.post(
            "/api/fal/proxy",
            json={"value": "via proxy"},
            headers={"x-fal-target-url": "https://queue.fal.run/test/echo"},
        )
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        target = f"https://queue.fal.run/test/echo/requests/{rid}/status?logs=1"
        deadline = time.monotonic() + 30
        while c.get("/api/fal/proxy", headers={"x-fal-target-url": target}).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = c.get(
            "/api/fal/proxy", headers={"x-fal-target-url": f"https://queue.fal.run/test/echo/requests/{rid}"}
        )
        assert r.json()["value"] == "via proxy"
        assert c.get("/api/fal/proxy").status_code == 400
        assert (
            c.get("/api/fal/proxy", headers={"x-fal-target-url": "https://evil.example/x"}).status_code == 400
        )


def test_openapi_and_docs(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/queue/fal-ai/pulid" in spec["paths"]
    assert "PulidInput" in spec["components"]["schemas"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
