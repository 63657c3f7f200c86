"""SyncClient against a real server: the queue protocol through fal-client's surface."""

from __future__ import annotations

import time

import httpx
import pytest

from pulid_server.client import (
    Completed,
    InProgress,
    PulidConnectionError,
    PulidHTTPError,
    Queued,
    RequestFailed,
    RetryPolicy,
    Status,
    SyncClient,
)
from tests.servers import Server, free_port

ORDER = {Queued: 0, InProgress: 1, Completed: 2}


def test_subscribe_with_logs_reports_queue_then_progress_then_completion(client: SyncClient) -> None:
    blocker = client.submit("test/echo", {"steps": 10, "step_seconds": 0.1})  # keeps ours queued at first
    updates: list[Status] = []
    enqueued: list[str] = []
    out = client.subscribe(
        "test/echo",
        {"value": "hi", "steps": 5, "step_seconds": 0.1},
        with_logs=True,
        on_queue_update=updates.append,
        on_enqueue=enqueued.append,
    )
    assert out["value"] == "hi"
    assert len(enqueued) == 1 and enqueued[0] != blocker.request_id
    kinds = [ORDER[type(u)] for u in updates]
    assert kinds == sorted(kinds), updates  # never goes backwards
    assert isinstance(updates[0], Queued) and updates[0].position >= 0
    assert any(isinstance(u, InProgress) for u in updates)
    last = updates[-1]
    assert isinstance(last, Completed) and last.error is None
    assert last.logs is not None
    assert [line["message"] for line in last.logs][-5:] == [f"step {k}/5" for k in range(1, 6)]
    assert last.metrics["inference_time"] > 0
    assert isinstance(client.status("test/echo", enqueued[0]), Completed)


def test_submit_status_result(client: SyncClient) -> None:
    handle = client.submit("test/echo", {"value": "later", "steps": 2, "step_seconds": 0.05})
    assert handle == client.get_handle("test/echo", handle.request_id)  # URLs are byte-identical
    assert isinstance(handle.status(), Queued | InProgress | Completed)
    assert handle.get(timeout=30)["value"] == "later"
    assert client.result("test/echo", handle.request_id, timeout=30)["value"] == "later"
    with_logs = client.status("test/echo", handle.request_id, with_logs=True)
    assert isinstance(with_logs, Completed) and with_logs.logs
    without = client.status("test/echo", handle.request_id)
    assert isinstance(without, Completed) and without.logs is None


def test_iter_events_ends_with_completed(client: SyncClient) -> None:
    handle = client.submit("test/echo", {"steps": 2, "step_seconds": 0.05})
    events = list(handle.iter_events(with_logs=True, interval=0.05, timeout=30))
    assert isinstance(events[-1], Completed)
    assert not any(isinstance(e, Completed) for e in events[:-1])


def test_cancel_a_running_request(client: SyncClient) -> None:
    handle = client.submit("test/echo", {"steps": 200, "step_seconds": 0.05})
    for status in handle.iter_events(interval=0.05, timeout=30):
        if isinstance(status, InProgress):
            break
    handle.cancel()
    with pytest.raises(RequestFailed) as failed:
        handle.get(timeout=30)
    assert failed.value.cancelled and failed.value.error_type == "request_cancelled"
    assert failed.value.request_id == handle.request_id
    with pytest.raises(PulidHTTPError) as again:
        client.cancel("test/echo", handle.request_id)
    assert again.value.status_code == 400 and "ALREADY_COMPLETED" in again.value.message
    with pytest.raises(PulidHTTPError) as missing:
        client.cancel("test/echo", "no-such-request")
    assert missing.value.status_code == 404


def test_failed_request_raises_request_failed_with_field_errors(client: SyncClient) -> None:
    with pytest.raises(RequestFailed) as failed:
        client.subscribe("test/fail", {"kind": "user"}, client_timeout=30)
    err = failed.value
    assert err.error_type == "no_face" and "reference_images[0]" in err.message
    assert err.status_code == 422
    assert err.field_errors[0]["loc"] == ["body", "reference_images", 0, "image_url"]
    assert not err.cancelled

    with pytest.raises(RequestFailed) as crashed:
        client.subscribe("test/fail", {"kind": "crash"}, client_timeout=30)
    assert crashed.value.error_type == "internal_error" and crashed.value.status_code == 500


def test_run(client: SyncClient) -> None:
    assert client.run("test/echo", {"value": "sync"}, timeout=30)["value"] == "sync"
    with pytest.raises(PulidHTTPError) as failed:
        client.run("test/fail", {"kind": "user"}, timeout=30)
    assert failed.value.status_code == 422 and failed.value.error_type == "no_face"
    assert failed.value.request_id


def test_invalid_input_is_422_naming_the_field(client: SyncClient) -> None:
    with pytest.raises(PulidHTTPError) as bad:
        client.submit("fal-ai/pulid", {"prompt": "x"})
    err = bad.value
    assert err.status_code == 422
    assert ["body", "reference_images"] in [e["loc"] for e in err.field_errors]
    assert "reference_images" in err.message
    with pytest.raises(PulidHTTPError) as bad_steps:
        client.subscribe("test/echo", {"steps": -1})
    assert bad_steps.value.field_errors[0]["loc"] == ["body", "steps"]
    with pytest.raises(PulidHTTPError) as unknown:
        client.submit("nobody/nothing", {})
    assert unknown.value.status_code == 404


def test_bad_key_is_401(server: Server) -> None:
    with SyncClient(server.url, "nope:nope") as c, pytest.raises(PulidHTTPError) as denied:
        c.submit("test/echo", {})
    assert denied.value.status_code == 401


def test_unreachable_server_is_a_connection_error_after_bounded_retries() -> None:
    calls: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [calls.append]})
    policy = RetryPolicy(max_attempts=3, base_delay=0.01)
    with http, SyncClient(f"http://127.0.0.1:{free_port()}", "k:s", retry=policy, http_client=http) as c:
        started = time.monotonic()
        with pytest.raises(PulidConnectionError):
            c.submit("test/echo", {})
    assert len(calls) == 3
    assert time.monotonic() - started < 5


def test_config_from_env(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    monkeypatch.setenv("PULID_URL", server.url + "/")
    monkeypatch.delenv("PULID_KEY", raising=False)
    monkeypatch.setenv("FAL_KEY", server.key)
    with SyncClient() as c:
        assert (c.url, c.key) == (server.url, server.key)
        assert c.run("test/echo", {"value": "env"})["value"] == "env"
    monkeypatch.setenv("PULID_KEY", "mine:first")
    monkeypatch.delenv("PULID_URL")
    with SyncClient() as c:
        assert (c.url, c.key) == ("http://127.0.0.1:8000", "mine:first")
