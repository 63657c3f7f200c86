"""Start real pulid-server processes (uvicorn on a free port, temp data dir) for integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TEST_ENV = {
    "PULID_EXTRA_ENDPOINTS": json.dumps(["tests.fixtures.endpoints"]),
    "PULID_ALLOW_PRIVATE_URLS": "true",  # webhook receivers and image servers live on loopback in tests
    "PULID_LEASE_SECONDS": "3",
    "PULID_HEARTBEAT_SECONDS": "0.5",
    "PULID_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "PULID_MODEL": "tiny",
}
TEST_ENDPOINTS = (
    "test/echo,test/fail,test/kill,test/image,test/safety"  # tests/fixtures/endpoints.py: no model
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pulid(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the `pulid` CLI and return its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "pulid_server", *args],
        env={**os.environ, **TEST_ENV, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pulid {' '.join(args)} failed: {out.stderr}")
    return out.stdout


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    worker_endpoints: str = ""  # PULID_WORKER_ENDPOINTS (self.env wins); empty: every endpoint
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    wrapper: list[str] = field(
        default_factory=list
    )  # runs the server under it, e.g. ["prlimit", "--nofile=256"]
    new_session: bool = False  # its own process group, for signals to the whole group (Ctrl-C)
    proc: subprocess.Popen[bytes] | None = None
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def full_env(self) -> dict[str, str]:
        served = {"PULID_WORKER_ENDPOINTS": self.worker_endpoints} if self.worker_endpoints else {}
        return {**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO), **served, **self.env}

    def new_key(self) -> str:
        return pulid(
            "keys", "create", "--data-dir", str(self.data_dir), *self._db_args(), env=self.env
        ).strip()

    def _db_args(self) -> list[str]:
        return []

    def start(self, wait_ready: bool = True) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.key:
            self.key = self.new_key()
        with open(self.data_dir / f"server-{self.port}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "pulid_server",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--workers",
                    str(self.workers),
                    *self.extra_args,
                ],
                env=self.full_env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        self.wait("/health/ready" if wait_ready and self.workers else "/health/live")
        if wait_ready and self.workers:
            self.wait_loaded()
        return self

    def wait(self, path: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def wait_loaded(self, timeout: float = 120.0) -> None:
        """Until a worker has loaded each endpoint this server's workers serve (one process per model
        family by default: they load side by side, and /health/ready answers once one is alive)."""
        served = self.full_env().get("PULID_WORKER_ENDPOINTS", "")
        paths = httpx.get(self.url + "/openapi.json", timeout=10).json()["paths"]
        wanted = set(filter(None, served.split(","))) or {
            p.removeprefix("/queue/") for p in paths if p.startswith("/queue/") and "{" not in p
        }
        deadline = time.monotonic() + timeout
        while not wanted <= set(httpx.get(self.url + "/health/ready", timeout=10).json()["endpoints_ready"]):
            assert self.proc is not None and self.proc.poll() is None, self.log()
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpoints not loaded: {wanted}\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.data_dir / f"server-{self.port}.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Key {key or self.key}"}, timeout=60, **kwargs
        )

    def worker_pids(self) -> list[int]:
        """Pids of this server's worker processes (children running pulid_server.worker)."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", "pulid_server.worker"], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]


def wait_completed(client: httpx.Client, status_url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(status_url, params={"logs": "1"})
        r.raise_for_status()
        body = r.json()
        if body["status"] == "COMPLETED":
            assert r.status_code == 200
            return body  # type: ignore[no-any-return]
        assert r.status_code == 202
        time.sleep(0.05)
    raise TimeoutError(f"request not completed: {status_url}")
