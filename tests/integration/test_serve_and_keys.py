"""`pulid serve` and `pulid keys` as a newcomer meets them: "listening" only once it is true, one clear
line for a busy port, the access log switch, and keys that land in the server's own database."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pulid_server.cli import _listen
from tests.servers import REPO, free_port

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PULID_")}


def pulid(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulid_server", *args],
        env={**CLEAN_ENV, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@contextmanager
def serving(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[queue.Queue[str]]:
    """`pulid serve --workers 0 ...` with its stderr lines in a queue; stopped with SIGTERM at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulid_server", "serve", "--workers", "0", *args],
        env={**CLEAN_ENV, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stderr])
    reader.start()
    try:
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)  # it ends at the pipe's end
        proc.stderr.close()


def next_line(lines: queue.Queue[str], containing: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if containing in line:
            return line
    raise AssertionError(f"no line with {containing!r} within {timeout} s")


def test_listening_is_said_once_it_accepts_and_the_access_log_follows_its_env_var(tmp_path: Path) -> None:
    port = free_port()
    env = {"PULID_PORT": str(port), "PULID_ACCESS_LOG": "true"}  # env vars, as the docs promise
    with serving(tmp_path, env=env) as lines:
        assert next_line(lines, "listening") == f"pulid-server listening on http://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200  # no retry
        assert next_line(lines, "database:") == f"database: SQLite file {tmp_path / 'data' / 'pulid.db'}"
        assert '"GET /health/live HTTP/1.1" 200' in next_line(lines, "/health/live")

    port = free_port()
    with serving(tmp_path, "--port", str(port)) as lines:  # off by default (`make serve` turns it on)
        next_line(lines, "listening")
        assert httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
    seen = [lines.get_nowait() for _ in range(lines.qsize())]
    assert not [line for line in seen if "GET /health" in line], seen


def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = pulid("serve", "--port", str(port), cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr.splitlines() == [
            f"error: port {port} on 127.0.0.1 is already in use (another pulid serve?): "
            "choose another with --port N (or PULID_PORT=N)"
        ]
        tls = ["--tls-cert", "cert.pem", "--tls-key", "key.pem"]
        out = pulid("serve", "--port", str(free_port()), *tls, "--tls-port", str(port), cwd=tmp_path)
        assert out.returncode == 1 and out.stderr.splitlines()[-1].endswith(
            "--tls-port N (or PULID_TLS_PORT=N)"
        )
    assert not (tmp_path / "data").exists()  # it stopped before starting anything


def test_keys_go_to_the_servers_database_or_say_why_not(tmp_path: Path) -> None:
    out = pulid("keys", "create", "--name", "me", cwd=tmp_path)  # no ./data here: no server runs here
    assert out.returncode == 2 and out.stdout == ""
    assert f"no pulid-server database at {tmp_path / 'data' / 'pulid.db'}" in out.stderr
    assert "--data-dir" in out.stderr and "PULID_DATABASE_URL" in out.stderr
    assert not (tmp_path / "data").exists()

    named = tmp_path / "server-data"
    out = pulid("keys", "create", "--name", "me", cwd=tmp_path, env={"PULID_DATA_DIR": str(named)})
    key_id = out.stdout.strip().partition(":")[0]
    assert out.returncode == 0 and len(out.stdout.strip().split(":")) == 2
    assert out.stderr.strip() == f"created key {key_id} in SQLite file {named / 'pulid.db'}"
    listed = pulid("keys", "list", "--data-dir", str(named), cwd=REPO)
    assert key_id in listed.stdout and listed.returncode == 0


def test_served_connections_send_small_writes_at_once() -> None:
    """`pulid serve` binds its own sockets: they must say TCP, or asyncio leaves Nagle on and a response's
    body waits ~40 ms for the client's delayed ACK of its head (every request, measured in bench_peer)."""
    sock = _listen("127.0.0.1", 0, "--port")

    async def accepted_nodelay() -> int:
        flags: list[int] = []

        def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            flags.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(500):  # bounded: the server side runs within a few loop turns
                if flags:
                    break
                await asyncio.sleep(0.01)
            writer.close()
        return flags[0]

    assert asyncio.run(accepted_nodelay()) == 1
