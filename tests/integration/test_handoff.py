"""Jobs handed straight to an idle worker of the node (api/services/doorbell.py): stored already claimed by
it, so that it runs them without a claim; queued as before when no worker is idle, or when the one that
looked idle has just died."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

from tests.integration.test_reliability import wait_running
from tests.integration.test_worker_lifecycle import ECHO_ONLY, wait_gone
from tests.servers import Server, wait_completed


def timing(srv: Server, request_id: str) -> tuple[float, float, int, str]:
    """(created_at, started_at, attempts, worker_id) of a job."""
    db = sqlite3.connect(srv.data_dir / "pulid.db")
    try:
        row = db.execute(
            "SELECT created_at, started_at, attempts, worker_id FROM jobs WHERE id = ?", (request_id,)
        ).fetchone()
    finally:
        db.close()
    return row  # type: ignore[no-any-return]


def test_an_idle_worker_is_handed_the_job_and_a_busy_one_leaves_it_queued(fresh_server: Server) -> None:
    fresh_server.env = ECHO_ONLY
    srv = fresh_server.start()
    with srv.client() as c:
        first = c.post("/run/test/echo", json={"value": "a"})
        assert first.status_code == 200 and first.json()["value"] == "a"
        handed = timing(srv, first.headers["x-fal-request-id"])
        # Stored started, by the worker, in the submit's own transaction: no claim came after it.
        assert handed[1] == handed[0] and handed[2] == 1 and handed[3]
        busy = c.post("/queue/test/echo", json={"steps": 10, "step_seconds": 0.1}).json()
        wait_running(c, busy["status_url"])
        queued = c.post("/queue/test/echo", json={"value": "b"}).json()
        assert queued["queue_position"] == 0
        assert c.get(queued["status_url"]).json()["status"] == "IN_QUEUE"
        assert wait_completed(c, queued["status_url"], timeout=30).get("error") is None
        created, started, attempts, worker = timing(srv, queued["request_id"])
        assert started > created and attempts == 1 and worker == handed[3]  # claimed once the worker was free


def test_a_job_handed_to_a_worker_that_just_died_is_queued_at_once(fresh_server: Server) -> None:
    fresh_server.env = {**ECHO_ONLY, "PULID_LEASE_SECONDS": "120"}  # its lease alone would take 2 minutes
    srv = fresh_server.start()
    with srv.client() as c:
        assert c.post("/run/test/echo", json={}).status_code == 200  # the worker is idle, and said so
        [worker] = srv.worker_pids()
        os.kill(worker, signal.SIGKILL)
        wait_gone(worker, timeout=15)
        sub = c.post("/queue/test/echo", json={"value": "after"}).json()
        started = time.monotonic()
        done = wait_completed(c, sub["status_url"], timeout=60)
        assert done.get("error") is None and time.monotonic() - started < 60
        assert c.get(sub["response_url"]).json()["value"] == "after"
        assert timing(srv, sub["request_id"])[2] == 1  # the lost hand-off cost no attempt
