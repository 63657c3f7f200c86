"""A request's images are read, checked and stored at submit (api/inputs.py): job rows stay small, rejected
inputs leave nothing behind, and a slow image URL never holds the worker (issue #12)."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_files_and_webhooks import png_bytes
from tests.servers import Server, free_port, wait_completed


def input_json(srv: Server, request_id: str) -> str:
    db = sqlite3.connect(srv.data_dir / "pulid.db")
    try:
        [(value,)] = db.execute("SELECT input_json FROM jobs WHERE id = ?", (request_id,)).fetchall()
    finally:
        db.close()
    return str(value)


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_inline_images_are_stored_as_files_of_the_request(server: Server) -> None:
    face = png_bytes((400, 300), "blue")
    uri = "data:image/png;base64," + base64.b64encode(face).decode()
    with server.client() as c:
        sub = c.post("/queue/test/image", json={"image_url": uri}).json()
        stored = json.loads(input_json(server, sub["request_id"]))
        wait_completed(c, sub["status_url"])
        assert c.get(sub["response_url"]).json()["image"]["width"] == 400
    assert len(input_json(server, sub["request_id"])) < 300  # the row holds a URL, not the image
    prefix = f"/files/inputs/{sub['request_id']}/"
    assert prefix in stored["image_url"] and stored["image_url"].endswith(".png")
    key = stored["image_url"].split("/files/", 1)[1]
    assert (server.data_dir / "files" / key).read_bytes() == face


def test_rejected_large_inputs_leave_the_data_folder_as_it_was(server: Server) -> None:
    junk = "data:image/png;base64," + base64.b64encode(b"\x89PNG not really" * 500_000).decode()  # 7.5 MB
    # the model endpoints too: each names its images (Endpoint.image_inputs), checked before a job exists
    sends: list[tuple[str, dict[str, Any], list[Any]]] = [
        ("/queue/test/image", {"image_url": junk}, ["body", "image_url"]),
        (
            "/queue/fal-ai/pulid",
            {"prompt": "a", "reference_images": [{"image_url": junk}]},
            ["body", "reference_images", 0, "image_url"],
        ),
        (
            "/queue/fal-ai/flux-pulid",
            {"prompt": "a", "reference_image_url": junk},
            ["body", "reference_image_url"],
        ),
    ]
    with server.client() as c:
        c.post("/queue/test/echo", json={}).raise_for_status()  # the database and its WAL exist already
        before = tree_size(server.data_dir)
        for path, body, loc in sends * 4:
            r = c.post(path, json=body)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (path, r.text[:300])
    assert tree_size(server.data_dir) - before < 2 << 20  # 90 MB were sent


def test_an_unreachable_image_url_is_422_at_submit(server: Server) -> None:
    with server.client() as c:
        r = c.post("/queue/test/image", json={"image_url": f"http://127.0.0.1:{free_port()}/face.png"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "image_url"] and "could not connect" in error["msg"]


class TricklingImage:
    """Serves one PNG over `seconds`, a few bytes at a time; `finished` is when the last byte went out."""

    def __init__(self, seconds: float):
        self.finished = 0.0
        image, owner = png_bytes((64, 48), "green"), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                pieces = 20
                step = -(-len(image) // pieces)
                for i in range(0, len(image), step):
                    time.sleep(seconds / pieces)
                    self.wfile.write(image[i : i + step])
                    self.wfile.flush()
                owner.finished = time.monotonic()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/face.png"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_slow_image_url_never_holds_the_worker(server: Server) -> None:
    slow = TricklingImage(seconds=8.0)
    other = server.new_key()
    results: dict[str, httpx.Response] = {}
    try:
        with server.client() as c, server.client(other) as o:
            submit = threading.Thread(
                target=lambda: results.update(slow=c.post("/queue/test/image", json={"image_url": slow.url}))
            )
            submit.start()
            time.sleep(0.5)  # the slow image is being read now
            fast = o.post("/queue/test/echo", json={"value": "not blocked"}).json()
            wait_completed(o, fast["status_url"], timeout=30)
            done_at = time.monotonic()
            submit.join(30)
            assert slow.finished and done_at < slow.finished  # the worker ran it while the URL trickled
            sub = results["slow"].json()
            wait_completed(c, sub["status_url"])
            assert c.get(sub["response_url"]).json()["image"]["width"] == 64
    finally:
        slow.close()
