"""Connections that never finish a request (slow loris) are timed out and shed first, so they cannot use up
the server's descriptors (issue #12). The server runs with a hard open-files limit of 256, so that a few
hundred connections are enough to show it."""

from __future__ import annotations

import socket
import time

import httpx

from tests.servers import Server

HALF_OPEN = 400
HEAD_TIMEOUT = 2.0


def half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends the head
    return sock


def answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends before it closes the connection (b"" if it closes without a word)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_half_open_connections_cannot_lock_others_out(fresh_server: Server) -> None:
    fresh_server.workers = 0
    fresh_server.wrapper = ["prlimit", "--nofile=256:256"]
    fresh_server.env = {"PULID_HTTP_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)}
    srv = fresh_server.start()
    log_before = len(srv.log())
    attackers: list[socket.socket] = []
    try:
        for _ in range(HALF_OPEN):
            try:
                attackers.append(half_open(srv.port))
            except OSError:  # on a server that has run out of descriptors, connecting may fail too
                break
        for _ in range(5):
            assert httpx.get(f"{srv.url}/health/live", timeout=5).status_code == 200
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as slow_but_honest:
            slow_but_honest.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            time.sleep(HEAD_TIMEOUT / 4)
            slow_but_honest.sendall(b"Connection: close\r\n\r\n")
            assert answer(slow_but_honest, 5).startswith(b"HTTP/1.1 200")
        newest = half_open(srv.port)  # not shed: connections idle for longer go first
        started = time.monotonic()
        assert answer(newest, HEAD_TIMEOUT + 5).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < HEAD_TIMEOUT + 3
        newest.close()
    finally:
        for sock in attackers:
            sock.close()
    assert len(srv.log()) - log_before < 20_000  # no log line per refused connection
