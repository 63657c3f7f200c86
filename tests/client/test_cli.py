"""The client commands as a user runs them: `python -m pulid_server ...` subprocesses, real server."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from pulid_server.client import InProgress, SyncClient
from tests.files.servers import reply, start_server
from tests.servers import REPO, Server, free_port


def pulid(server: Server | None, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PULID_URL", "PULID_KEY", "FAL_KEY")}
    if server is not None:
        env.update(PULID_URL=server.url, PULID_KEY=server.key)
    return subprocess.run(
        [sys.executable, "-m", "pulid_server", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_help_documents_exit_codes() -> None:
    for command in ("run", "submit", "status", "result", "cancel", "upload"):
        out = pulid(None, command, "--help")
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert "Exit codes: 0 ok, 1 request failed" in text and "6 server busy (HTTP 429" in text, command


def test_help_shows_no_type_beside_flags() -> None:
    for command in (["status"], ["run"], ["serve"], ["keys", "create"]):
        out = pulid(None, *command, "--help")
        assert out.returncode == 0 and "--help" in out.stdout, out.stderr
        assert "<bool>" not in out.stdout, command
    assert "<int>" in pulid(None, "serve", "--help").stdout  # options that take a value keep their type


def test_upload_prints_the_url(server: Server, face_png: Path, client: SyncClient) -> None:
    out = pulid(server, "upload", str(face_png))
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert client.download(url, timeout=30) == face_png.read_bytes()
    out = pulid(server, "upload", str(face_png), "--json")
    assert json.loads(out.stdout)["url"].endswith("face.png")


def test_submit_status_result(server: Server, tmp_path: Path) -> None:
    out = pulid(server, "submit", "test/echo", "--input", '{"value": "cli", "steps": 2}')
    assert out.returncode == 0, out.stderr
    request_id = out.stdout.strip()
    out = pulid(server, "result", request_id, "--endpoint", "test/echo", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["value"] == "cli"
    out = pulid(server, "status", request_id, "--logs", "--json")
    status = json.loads(out.stdout)
    assert status["status"] == "COMPLETED" and status["request_id"] == request_id
    assert [line["message"] for line in status["logs"]][-1] == "step 2/2"
    out = pulid(server, "status", request_id, "--logs")
    assert out.stdout.splitlines()[0] == "COMPLETED" and "step 2/2" in out.stdout
    out = pulid(server, "cancel", request_id, "--endpoint", "test/echo")  # finished: nothing to do
    assert out.returncode == 0 and "already completed" in out.stderr, out.stderr
    out = pulid(server, "cancel", request_id, "--endpoint", "test/echo", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "ALREADY_COMPLETED"

    body = tmp_path / "in.json"
    body.write_text('{"value": "from file"}')
    out = pulid(server, "submit", "test/echo", "--input", f"@{body}", "--json")
    submitted = json.loads(out.stdout)
    assert submitted["status_url"].endswith(f"/requests/{submitted['request_id']}/status")
    assert (
        json.loads(pulid(server, "result", submitted["request_id"], "--json").stdout)["value"] == "from file"
    )


def test_failed_request_exits_1_with_the_error(server: Server) -> None:
    request_id = pulid(server, "submit", "test/fail", "--input", '{"kind": "user"}').stdout.strip()
    out = pulid(server, "result", request_id)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"error: request {request_id} failed (no_face):",
        "  reference_images[0].image_url: no face found",  # the field once, with its message
    ]
    out = pulid(server, "result", request_id, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["error_type"] == "no_face"


def test_usage_and_validation_errors_exit_2(server: Server, face_png: Path) -> None:
    out = pulid(server, "run", "fal-ai/pulid", "--prompt", "x", "--ref", str(face_png), "--num-images", "9")
    assert out.returncode == 2, out.stderr
    assert "num_images" in out.stderr
    out = pulid(server, "run", "fal-ai/pulid", "--prompt", "x", "--ref", str(face_png), "--image-size", "big")
    assert out.returncode == 2 and "--image-size" in out.stderr
    out = pulid(server, "run", "fal-ai/pulid", "--prompt", "x", "--ref", "missing.jpg")
    assert out.returncode == 2 and "missing.jpg" in out.stderr
    out = pulid(server, "submit", "test/echo", "--input", "{not json")
    assert out.returncode == 2
    out = pulid(server, "submit", "test/echo", "--input", '{"steps": -1}', "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["field_errors"][0]["loc"] == ["body", "steps"]
    out = pulid(server, "status", "no-such-request")
    assert out.returncode == 2


def test_cancelled_request_exits_3(server: Server, client: SyncClient) -> None:
    request_id = pulid(
        server, "submit", "test/echo", "--input", '{"steps": 200, "step_seconds": 0.05}'
    ).stdout.strip()
    for status in client.get_handle("test/echo", request_id).iter_events(interval=0.05, timeout=30):
        if isinstance(status, InProgress):
            break
    out = pulid(server, "cancel", request_id, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "CANCELLATION_REQUESTED"
    out = pulid(server, "result", request_id)
    assert out.returncode == 3 and "request_cancelled" in out.stderr


def test_timeout_exits_4(server: Server, client: SyncClient) -> None:
    request_id = pulid(
        server, "submit", "test/echo", "--input", '{"steps": 100, "step_seconds": 0.05}'
    ).stdout.strip()
    out = pulid(server, "result", request_id, "--timeout", "0.5")
    assert out.returncode == 4 and "timed out" in out.stderr
    client.cancel("test/echo", request_id)


def test_connection_and_auth_problems_exit_5(server: Server) -> None:
    out = pulid(None, "status", "x", "--url", f"http://127.0.0.1:{free_port()}", "--key", "k:s")
    assert out.returncode == 5 and "cannot reach" in out.stderr
    out = pulid(None, "submit", "test/echo", "--url", server.url, "--key", "nope:nope")
    assert out.returncode == 5 and "rejected the API key (HTTP 401" in out.stderr
    out = pulid(None, "submit", "test/echo", "--url", server.url)  # no PULID_KEY, FAL_KEY or --key
    assert out.returncode == 5
    assert out.stderr.startswith("error: no API key: set PULID_KEY (or FAL_KEY) or pass --key."), out.stderr


def test_busy_server_retries_are_shown_then_exit_6() -> None:
    """A queue that stays full (429) is retried with backoff, each retry said on stderr; then exit 6."""
    fake, httpd = start_server()
    body = json.dumps({"detail": "this key has too many queued requests"}).encode()
    fake.routes["/queue/test/echo"] = reply(
        429, body, {"Content-Type": "application/json", "Retry-After": "0"}
    )
    try:
        out = pulid(None, "submit", "test/echo", "--url", fake.url(""), "--key", "k:s")
    finally:
        httpd.shutdown()
        httpd.server_close()
    retries = [line for line in out.stderr.splitlines() if "retrying in" in line]
    assert out.returncode == 6, out.stderr
    assert len(retries) == 5 == len(fake.seen) - 1
    assert retries[0].startswith("HTTP 429 (this key has too many queued requests): retrying in ")
    assert retries[-1].endswith("(try 6 of 6)")
    assert "server busy (HTTP 429" in out.stderr.splitlines()[-1]


def test_a_failed_run_leaves_no_progress_bar_on_the_terminal(server: Server, face_png: Path) -> None:
    """On a terminal the bar is drawn while the request runs and erased when it fails."""
    missing = f"{server.url}/files/nope.png"
    master, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PULID_URL", "PULID_KEY", "FAL_KEY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulid_server", "run", "fal-ai/pulid", "--prompt", "x", "--ref", missing],
        env={**env, "PULID_URL": server.url, "PULID_KEY": server.key, "COLUMNS": "100"},
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and select.select([master], [], [], 1)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.wait(30) == 1
    text = screen.decode(errors="replace")
    assert "━" in text  # it was drawn...
    last_frame = text.rsplit("\x1b[2K", 1)[-1]
    assert "━" not in last_frame and "error: request" in last_frame  # ...and is gone, the error stays
    assert "no such uploaded file on this server" in last_frame
