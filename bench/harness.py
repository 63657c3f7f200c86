"""What the bench scripts share: a real `pulid serve` subprocess with production defaults, percentiles,
peak RSS from /proc, and the machine line for the report."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"not ready: {url}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Pulid:
    url: str
    key: str
    proc: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]


@contextmanager
def pulid_server(
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
) -> Iterator[Pulid]:
    """`pulid serve` (1 uvicorn process + `workers` worker processes, SQLite, local files) on a free port.
    Defaults are the shipped ones; only the bench endpoints are added (and served, unless env overrides).
    `wrapper` runs the server under a command, e.g. ("prlimit", "--nofile=1024:1024")."""
    with tempfile.TemporaryDirectory(prefix="pulid-bench-") as tmp:
        data = Path(tmp)
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PULID_EXTRA_ENDPOINTS": json.dumps(["bench.endpoints"]),
            "PULID_WORKER_ENDPOINTS": "bench/noop,bench/sleep",
            **(env or {}),
        }
        cli = [PY, "-m", "pulid_server"]
        key = subprocess.run(
            [*cli, "keys", "create", "--data-dir", str(data)],
            env=full_env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        port = free_port()
        with open(data / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    *wrapper,
                    *cli,
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data),
                    "--workers",
                    str(workers),
                    *args,
                ],
                env=full_env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health/ready", proc)
            _wait_workers(url, workers)
            yield Pulid(url, key, proc, data)
        finally:
            stop(proc)


def _wait_workers(url: str, workers: int, timeout: float = 120.0) -> None:
    """Ready means one worker is up; a throughput run needs all of them registered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/health/ready", timeout=5).json().get("workers_recent", 0) >= workers:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{workers} workers not registered")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size, from the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wait_for_quiet(limit: float = 1.5, max_wait: float = 180.0) -> str:
    """Wait (bounded) for the 1-minute load average to drop below `limit`; return the load at start."""
    deadline = time.monotonic() + max_wait
    while float(loadavg().split()[0]) > limit and time.monotonic() < deadline:
        time.sleep(10)
    return loadavg()
