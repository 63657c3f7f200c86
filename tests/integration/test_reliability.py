"""No job lost: restarts, worker crashes (a real kill -9), OOM, drain, deadlines, queue controls."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.servers import Server, wait_completed


def wait_status(client: httpx.Client, url: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (body := client.get(url).json())["status"] != status:
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def wait_running(client: httpx.Client, url: str, timeout: float = 30) -> None:
    """Until the job has logged a step. IN_PROGRESS alone is not enough: a job handed to an idle worker is
    stored IN_PROGRESS a moment before that worker starts it (api/services/doorbell.py)."""
    deadline = time.monotonic() + timeout
    while not any(
        line["message"].startswith("step")
        for line in client.get(url, params={"logs": 1}).json().get("logs") or []
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_restart_loses_no_queued_or_finished_job(fresh_server: Server) -> None:
    srv = fresh_server
    srv.workers = 0  # API only: jobs stay queued
    srv.start()
    with srv.client() as c:
        queued = c.post("/queue/test/echo", json={"value": "later"}).json()
    srv.stop()
    srv.workers = 1
    srv.start()
    with srv.client() as c:
        wait_completed(c, queued["status_url"])
        assert c.get(queued["response_url"]).json()["value"] == "later"
    srv.stop()
    srv.start()
    with srv.client() as c:
        assert c.get(queued["response_url"]).json()["value"] == "later"


def test_killed_worker_job_is_reclaimed_and_completes(fresh_server: Server, tmp_path: Path) -> None:
    srv = fresh_server.start()
    marker = tmp_path / "killed-once"
    with srv.client() as c:
        sub = c.post("/queue/test/kill", json={"marker": str(marker)}).json()
        done = wait_completed(c, sub["status_url"], timeout=60)
        assert "error" not in done, done
        result = c.get(sub["response_url"]).json()
        assert result["value"] == "survived"
        assert result["worker_pid"] != int(marker.read_text())  # the supervisor started a new worker
        assert any("requeued" in line["message"] for line in done["logs"])


def test_job_that_always_kills_its_worker_fails_after_bounded_attempts(
    fresh_server: Server, tmp_path: Path
) -> None:
    fresh_server.env = {"PULID_MAX_ATTEMPTS": "2"}
    srv = fresh_server.start()
    with srv.client() as c:
        sub = c.post("/queue/test/kill", json={"marker": str(tmp_path / "m"), "always": True}).json()
        done = wait_completed(c, sub["status_url"], timeout=90)
        assert done["error_type"] == "worker_crashed"
        assert c.get(sub["response_url"]).status_code == 503
        # the service is still healthy and serves the next job
        ok = c.post("/queue/test/echo", json={"value": "next"}).json()
        wait_completed(c, ok["status_url"], timeout=60)


def test_external_kill_9_of_worker_mid_job(fresh_server: Server) -> None:
    srv = fresh_server.start()
    with srv.client() as c:
        sub = c.post("/queue/test/echo", json={"steps": 40, "step_seconds": 0.05}).json()
        wait_running(c, sub["status_url"])
        [pid] = srv.worker_pids()
        os.kill(pid, signal.SIGKILL)
        done = wait_completed(c, sub["status_url"], timeout=60)
        assert "error" not in done
        assert c.get(sub["response_url"]).json()["worker_pid"] != pid


def test_oom_fails_the_job_and_restarts_the_worker(fresh_server: Server) -> None:
    srv = fresh_server.start()
    with srv.client() as c:
        before = c.post("/run/test/echo", json={}).json()["worker_pid"]
        sub = c.post("/queue/test/fail", json={"kind": "oom"}).json()
        done = wait_completed(c, sub["status_url"])
        assert done["error_type"] == "gpu_oom"
        after = c.post("/run/test/echo", json={}, timeout=60).json()["worker_pid"]
        assert after != before


def test_sigterm_drains_the_running_job(fresh_server: Server) -> None:
    srv = fresh_server.start()
    with srv.client() as c:
        sub = c.post("/queue/test/echo", json={"steps": 10, "step_seconds": 0.1}).json()
        wait_running(c, sub["status_url"])
    srv.stop(signal.SIGTERM)
    srv.start()
    with srv.client() as c:
        done = c.get(sub["status_url"], params={"logs": 1}).json()
        assert done["status"] == "COMPLETED" and "error" not in done  # finished before the server exited
        assert len([line for line in done["logs"] if line["message"].startswith("step")]) == 10


def test_start_timeout_expires_queued_request(fresh_server: Server) -> None:
    fresh_server.workers = 1
    srv = fresh_server.start()
    with srv.client() as c:
        blocker = c.post("/queue/test/echo", json={"steps": 30, "step_seconds": 0.1}).json()
        late = c.post("/queue/test/echo", json={}, headers={"X-Fal-Request-Timeout": "1.5"}).json()
        done = wait_completed(c, late["status_url"], timeout=30)
        assert done["error_type"] == "request_timeout"
        r = c.get(late["response_url"])
        assert r.status_code == 504 and r.headers["x-fal-request-timeout-type"] == "user"
        c.put(blocker["cancel_url"])
        assert (
            c.post("/queue/test/echo", json={}, headers={"X-Fal-Request-Timeout": "soon"}).status_code == 422
        )


def test_low_priority_waits_behind_normal(fresh_server: Server) -> None:
    fresh_server.workers = 0
    srv = fresh_server.start()
    with srv.client() as c:
        low = c.post("/queue/test/echo", json={}, headers={"X-Fal-Queue-Priority": "low"}).json()
        assert c.get(low["status_url"]).json()["queue_position"] == 0
        normal = c.post("/queue/test/echo", json={}, headers={"X-Fal-Queue-Priority": "normal"}).json()
        assert normal["queue_position"] == 0
        assert c.get(low["status_url"]).json()["queue_position"] == 1
        assert (
            c.post("/queue/test/echo", json={}, headers={"X-Fal-Queue-Priority": "urgent"}).status_code == 422
        )


def test_queue_caps_answer_429_with_retry_after(fresh_server: Server) -> None:
    fresh_server.workers = 0
    fresh_server.env = {"PULID_MAX_QUEUE_PER_KEY": "2", "PULID_MAX_QUEUE_TOTAL": "3"}
    srv = fresh_server.start()
    other = srv.new_key()
    with srv.client() as c, srv.client(other) as o:
        assert c.post("/queue/test/echo", json={}).status_code == 200
        assert c.post("/queue/test/echo", json={}).status_code == 200
        r = c.post("/queue/test/echo", json={})
        assert r.status_code == 429 and r.headers["retry-after"]
        assert o.post("/queue/test/echo", json={}).status_code == 200  # per-key cap is per key
        assert o.post("/queue/test/echo", json={}).status_code == 429  # total cap


def test_idempotency_key_returns_the_same_request(server: Server) -> None:
    with server.client() as c:
        headers = {"Idempotency-Key": f"idem-{time.time()}"}
        first = c.post("/queue/test/echo", json={"value": "once"}, headers=headers).json()
        second = c.post("/queue/test/echo", json={"value": "once"}, headers=headers).json()
        assert first["request_id"] == second["request_id"]


def test_body_cap_is_413(server: Server) -> None:
    with server.client() as c:
        r = c.post(
            "/queue/test/echo",
            content=b"{" + b" " * (17 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413


def test_revoked_key_stops_working_at_once(server: Server) -> None:
    from tests.servers import pulid

    key = server.new_key()
    with server.client(key) as c:
        assert c.post("/queue/test/echo", json={}).status_code == 200
        pulid("keys", "revoke", key, "--data-dir", str(server.data_dir))
        assert c.post("/queue/test/echo", json={}).status_code == 401


def test_keys_never_appear_in_logs(server: Server) -> None:
    with server.client() as c:
        c.post("/queue/test/echo", json={})
        c.post("/queue/test/echo", json={}, headers={"Authorization": "Key bogus:secret-value"})
    secret = server.key.split(":")[1]
    assert secret not in server.log() and "secret-value" not in server.log()


def test_webhook_retries_survive_a_restart(fresh_server: Server) -> None:
    from tests.integration.test_files_and_webhooks import Receiver

    receiver = Receiver(failures=2)
    srv = fresh_server.start()
    try:
        with srv.client() as c:
            sub = c.post("/queue/test/echo", params={"fal_webhook": receiver.url}, json={}).json()
            receiver.wait(1)
        srv.stop()  # the outbox row is pending with a failed attempt
        srv.start()
        receiver.wait(3)
        time.sleep(1.0)
        assert len(receiver.calls) == 3  # two failures, one success, never a duplicate after it
        assert all(sub["request_id"].encode() in body for _, body in receiver.calls)
    finally:
        receiver.close()


def test_submit_wakes_an_idle_supervised_worker(fresh_server: Server) -> None:
    # With a 60 s idle poll, only the doorbell pipe can get this job started within the test's bounds.
    fresh_server.env = {"PULID_POLL_SECONDS": "60"}
    srv = fresh_server.start()
    time.sleep(1.5)  # past the worker's fast-poll window after start-up
    with srv.client() as c:
        for _ in range(2):
            sub = c.post("/queue/test/echo", json={}).json()
            wait_completed(c, sub["status_url"], timeout=20)
            time.sleep(1.5)
