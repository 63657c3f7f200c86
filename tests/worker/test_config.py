"""A worker process gets one explicit configuration: in-process from `pulid worker`'s flags, or as JSON on
stdin from the supervisor, never through variables written into its environment."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulid_server.api.services.supervisor import Supervisor
from pulid_server.config import Settings
from pulid_server.store import SqlJobStore
from pulid_server.worker.config import WorkerConfig
from tests.servers import REPO


def test_round_trip_is_exact_and_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        database_url="postgresql://user:secret@db:5432/pulid",
        worker_endpoints=["test/echo", "fal-ai/pulid"],
        extra_endpoints=["tests.fixtures.endpoints"],
        lease_seconds=7.0,
    )
    config = WorkerConfig(settings, wake_fd=5, done_fd=6)
    monkeypatch.setenv("PULID_LEASE_SECONDS", "99")  # the sender's values win over the receiver's env
    monkeypatch.setenv("PULID_WORKER_ENDPOINTS", "test/image")
    assert WorkerConfig.from_json(config.to_json()) == config


def test_worker_endpoints_from_the_environment_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULID_WORKER_ENDPOINTS", "test/echo,fal-ai/pulid")
    assert Settings().worker_endpoints == ["test/echo", "fal-ai/pulid"]
    monkeypatch.setenv("PULID_WORKER_ENDPOINTS", "")
    assert Settings().worker_endpoints == []


def test_supervised_worker_gets_its_config_on_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PULID_WORKER_ENDPOINTS", "test/image")  # the parent's Settings win, not its env
    database = tmp_path / "secret-name.db"
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{database}",
        model="tiny",
        extra_endpoints=["tests.fixtures.endpoints"],
        worker_endpoints=["test/echo"],
    )
    store = SqlJobStore(settings.resolved_database_url())
    supervisor = Supervisor(settings, 1, drain_seconds=5)
    supervisor.start()
    try:
        deadline = time.monotonic() + 60
        while not (workers := store.cluster.recent_workers(60)) and time.monotonic() < deadline:
            time.sleep(0.1)
        [worker] = workers
        assert worker.endpoints == ["test/echo"] and [worker.pid] == supervisor.pids()
        for view in ("cmdline", "environ"):  # the database URL (a password, in production) stays hidden
            assert database.name.encode() not in Path(f"/proc/{worker.pid}/{view}").read_bytes(), view
    finally:
        supervisor.stop()
        store.close()


def test_pulid_worker_endpoint_flag_reaches_the_worker(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pulid_server",
            "worker",
            "--data-dir",
            str(tmp_path),
            "--endpoint",
            "no/such",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "unknown endpoint 'no/such'" in out.stderr
