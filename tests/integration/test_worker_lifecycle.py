"""Supervised workers die with their API process, and a signal to the whole process group (Ctrl-C on
`pulid serve`, systemd's control-group stop) drains the running job instead of throwing it away (issue #12).
Real processes and real signals; the workers load only test/echo (no model) to start fast."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_reliability import wait_running
from tests.servers import Server


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.1)


def job_row(srv: Server, request_id: str) -> tuple[str, str | None, int, int]:
    db = sqlite3.connect(srv.data_dir / "pulid.db")
    try:
        status, error, attempts = db.execute(
            "SELECT status, error, attempts FROM jobs WHERE id = ?", (request_id,)
        ).fetchone()
        steps = db.execute(
            "SELECT count(*) FROM job_logs WHERE job_id = ? AND message LIKE 'step %'", (request_id,)
        ).fetchone()[0]
    finally:
        db.close()
    return status, error, attempts, steps


ECHO_ONLY = {"PULID_WORKER_ENDPOINTS": "test/echo"}


def wait_registered(srv: Server, timeout: float = 60) -> None:
    """Until the worker has loaded its endpoints (and so is idle, waiting for jobs)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{srv.url}/health/ready", timeout=5).json().get("workers_recent", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_an_idle_worker_exits_with_its_api_process_and_a_restart_has_one_worker(fresh_server: Server) -> None:
    fresh_server.env = ECHO_ONLY
    srv = fresh_server.start()
    wait_registered(srv)
    [worker] = srv.worker_pids()
    assert srv.proc is not None
    srv.proc.kill()  # kill -9 of the API process alone
    srv.proc.wait()
    if running(worker):  # it must not spin while it goes (a closed pipe once woke it in a loop)
        before = cpu_seconds(worker)
        time.sleep(0.5)
        assert not running(worker) or cpu_seconds(worker) - before < 0.25
    wait_gone(worker, timeout=15)
    srv.start()
    [new] = srv.worker_pids()
    assert new != worker and not running(worker)


def test_a_worker_whose_api_process_dies_finishes_its_job_then_exits(fresh_server: Server) -> None:
    fresh_server.env = ECHO_ONLY
    srv = fresh_server.start()
    with srv.client() as c:
        sub = c.post("/queue/test/echo", json={"steps": 20, "step_seconds": 0.1}).json()
        wait_running(c, sub["status_url"])
    [worker] = srv.worker_pids()
    assert srv.proc is not None
    srv.proc.kill()
    srv.proc.wait()
    wait_gone(worker, timeout=60)
    assert job_row(srv, sub["request_id"]) == ("COMPLETED", None, 1, 20)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_whole_process_group_drains_the_running_job(fresh_server: Server, sig: int) -> None:
    fresh_server.env = ECHO_ONLY
    fresh_server.new_session = True  # `pulid serve` and its worker in a group of their own, as in a shell
    srv = fresh_server.start()
    with srv.client() as c:
        sub = c.post("/queue/test/echo", json={"steps": 15, "step_seconds": 0.1}).json()
        wait_running(c, sub["status_url"])
    assert srv.proc is not None
    os.killpg(srv.proc.pid, sig)  # what the terminal does on Ctrl-C: every process of the group
    srv.proc.wait(60)
    assert job_row(srv, sub["request_id"]) == ("COMPLETED", None, 1, 15)  # finished, not given back
