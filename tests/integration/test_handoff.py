"""Jobs handed straight to an idle worker of the node (api/services/doorbell.py): stored already claimed by
it, so that it runs them without a claim; queued as before when no worker is idle; requeued at once when
the worker they went to has just died."""

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
        large = c.post("/run/test/echo", json={"value": "x" * 5000})  # too large for one pipe write: queued
        assert large.status_code == 200 and large.json()["value"] == "x" * 5000
        busy = c.post("/queue/test/echo", json={"steps": 10, "step_seconds": 0.1}).json()
        wait_running(c, busy["status_url"])
        queued = c.post("/queue/test/echo", json={"value": "b"}).json()
        assert queued["queue_position"] == 0
        assert c.get(queued["status_url"]).json()["status"] == "IN_QUEUE"
        assert wait_completed(c, queued["status_url"], timeout=30).get("error") is None
        created, started, attempts, worker = timing(srv, queued["request_id"])
        assert started > created and attempts == 1 and worker == handed[3]  # claimed once the worker was free


def test_the_jobs_of_a_worker_that_died_are_requeued_at_once_not_when_their_leases_run_out(
    fresh_server: Server,
) -> None:
    """Its running job, and one the API may have handed it in its last moments (its pipe stays open until
    its last thread exits), go back to the queue once it is gone: a lease of 120 s is never waited for."""
    fresh_server.env = {**ECHO_ONLY, "PULID_LEASE_SECONDS": "120"}
    srv = fresh_server.start()
    with srv.client() as c:
        running = c.post("/queue/test/echo", json={"steps": 30, "step_seconds": 0.1}).json()
        wait_running(c, running["status_url"])
        [worker] = srv.worker_pids()
        os.kill(worker, signal.SIGKILL)
        started = time.monotonic()
        assert wait_completed(c, running["status_url"], timeout=60).get("error") is None
        assert time.monotonic() - started < 60 and timing(srv, running["request_id"])[2] == 2
        [worker] = srv.worker_pids()  # the restarted one, idle now
        os.kill(worker, signal.SIGKILL)
        wait_gone(worker, timeout=15)
        sub = c.post("/queue/test/echo", json={"value": "after"}).json()
        started = time.monotonic()
        assert wait_completed(c, sub["status_url"], timeout=60).get("error") is None
        assert time.monotonic() - started < 60
        assert c.get(sub["response_url"]).json()["value"] == "after"


def test_a_job_handed_over_then_refused_is_dropped_by_its_worker(fresh_server: Server) -> None:
    """The worker starts a handed job before it is stored; when the store refuses it (here: a queue-length
    cap), the worker drops it (nothing recorded) and takes the next job as before."""
    fresh_server.env = ECHO_ONLY
    srv = fresh_server.start()
    with srv.client() as c:
        assert c.post("/run/test/echo", json={"value": "warm"}).status_code == 200
        for _ in range(50):  # until one is handed over: the worker says it is idle just after a result
            refused = c.post("/queue/test/echo?fal_max_queue_length=0", json={"value": "no", "steps": 3})
            assert refused.status_code == 429
            time.sleep(0.2)
            if "handed over but not stored" in srv.log():
                break
        assert "handed over but not stored" in srv.log(), srv.log()[-3000:]
        after = c.post("/run/test/echo", json={"value": "next"})
        assert after.status_code == 200 and after.json()["value"] == "next"
    db = sqlite3.connect(srv.data_dir / "pulid.db")
    try:
        inputs = [row[0] for row in db.execute("SELECT input_json FROM jobs")]
    finally:
        db.close()
    assert len(inputs) == 2 and not any('"no"' in i for i in inputs)  # the refused ones: never stored
