"""A scale-out deployment on one machine: API-only nodes (`pulid serve --workers 0`) and `pulid worker`
processes sharing one PostgreSQL database and one S3 bucket, exactly as separate machines would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.pg import S3_ENV
from tests.servers import REPO, TEST_ENV, Server, pulid

ENDPOINTS = ("test/echo", "test/image")


@dataclass
class ClusterConfig:
    database_url: str
    storage: str
    s3_endpoint_url: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        return {
            **S3_ENV,
            "PULID_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "PULID_LEASE_SECONDS": "2",  # short leases: a killed worker's job is requeued within seconds
            "PULID_HEARTBEAT_SECONDS": "0.3",
        }

    def args(self) -> list[str]:
        return ["--database-url", self.database_url, "--storage", self.storage]


@dataclass
class ApiNode(Server):
    config: ClusterConfig | None = None

    def _db_args(self) -> list[str]:
        assert self.config is not None
        return ["--database-url", self.config.database_url]


@dataclass
class Cluster:
    config: ClusterConfig
    apis: list[ApiNode] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    key: str = ""

    def start_apis(self, count: int) -> None:
        cfg = self.config
        self.key = pulid("keys", "create", "--database-url", cfg.database_url, env=cfg.env()).strip()
        for i in range(count):
            node = ApiNode(
                cfg.data_dir / f"api{i}",
                workers=0,
                env=cfg.env(),
                extra_args=cfg.args(),
                key=self.key,
                config=cfg,
            )
            self.apis.append(node.start(wait_ready=False))
        for node in self.apis:
            node.wait("/health/ready")

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            i = len(self.workers)
            log = open(self.config.data_dir / f"worker{i}.log", "ab")  # noqa: SIM115 - closed in stop_workers
            cmd = [
                sys.executable,
                "-m",
                "pulid_server",
                "worker",
                *self.config.args(),
                "--data-dir",
                str(self.config.data_dir / f"worker{i}"),
            ]
            for endpoint in ENDPOINTS:
                cmd += ["--endpoint", endpoint]
            env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO), **self.config.env()}
            self.workers.append(
                subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def wait_workers_registered(self, count: int, timeout: float = 60.0) -> dict[str, object]:
        """Until /health/ready on an API node reports `count` workers (their endpoints loaded)."""
        deadline = time.monotonic() + timeout
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            body = httpx.get(self.apis[0].url + "/health/ready", timeout=5).json()
            if body.get("workers_recent") == count:
                return body
            dead = [
                w for w in self.workers if w.poll() is not None and w.returncode not in (0, -signal.SIGKILL)
            ]
            assert not dead, self.worker_logs()
            time.sleep(0.1)
        raise TimeoutError(f"workers not registered: {body}\n{self.worker_logs()}")

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-2000:] for p in sorted(self.config.data_dir.glob("worker*.log"))
        )

    def stop_workers(self) -> None:
        for w in self.live_workers():
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        for node in self.apis:
            node.stop()
