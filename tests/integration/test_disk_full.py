"""A full disk gets clear 507s, never a 500, a path on the server or a worker crash loop; work resumes
when space comes back (issue #12). The server runs in a mount namespace of its own (`unshare`) where a
small tmpfs stands for the full disk: real ENOSPC errors, from the real kernel."""

from __future__ import annotations

import base64
import errno
import sqlite3
import time
from pathlib import Path

import httpx

from tests.integration.test_files_and_webhooks import png_bytes
from tests.servers import Server, wait_completed


def small_disk(folder: Path, size: str, then: str = ":") -> list[str]:
    """A wrapper that mounts a tmpfs of `size` on `folder` for the server alone, runs `then`, then the server."""
    script = f'mkdir -p "$0" && mount -t tmpfs -o size={size} tmpfs "$0" && {then} && exec "$@"'
    return ["unshare", "--map-root-user", "--mount", "sh", "-c", script, str(folder)]


def fill(srv: Server, folder: Path) -> Path:
    """Fill `folder` as the server sees it (through /proc/<pid>/root) until the disk says no."""
    assert srv.proc is not None
    filler = Path(f"/proc/{srv.proc.pid}/root") / folder.relative_to("/") / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing it has nothing left to write
        try:
            for _ in range(10_000):
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def assert_507(r: httpx.Response, srv: Server) -> None:
    assert r.status_code == 507, r.text
    assert r.json()["error_type"] == "storage_full" and r.headers["x-fal-error-type"] == "storage_full"
    assert str(srv.data_dir) not in r.text and "/tmp" not in r.text


def logs_of(srv: Server, request_id: str) -> list[str]:
    db = sqlite3.connect(srv.data_dir / "pulid.db")
    try:
        return [
            m
            for (m,) in db.execute("SELECT message FROM job_logs WHERE job_id = ? ORDER BY id", (request_id,))
        ]
    finally:
        db.close()


def test_a_full_file_store(fresh_server: Server) -> None:
    srv = fresh_server
    files = srv.data_dir / "files"
    srv.env = {"PULID_WORKER_ENDPOINTS": "test/image", "PULID_MAX_ATTEMPTS": "20"}
    srv.wrapper = small_disk(files, "4m")
    srv.start()
    with srv.client() as c:
        face = c.post("/rest/storage/upload/initiate", json={"file_name": "f.png"}).json()
        assert httpx.put(face["upload_url"], content=png_bytes()).status_code == 200
        filler = fill(srv, files)
        urls = c.post("/rest/storage/upload/initiate", json={"file_name": "g.png"}).json()
        assert_507(httpx.put(urls["upload_url"], content=png_bytes()), srv)
        uri = "data:image/png;base64," + base64.b64encode(png_bytes((300, 200))).decode()
        assert_507(c.post("/queue/test/image", json={"image_url": uri}), srv)
        # A job whose output cannot be stored goes back to the queue instead of failing for good.
        sub = c.post("/queue/test/image", json={"image_url": face["file_url"]}).json()
        deadline = time.monotonic() + 60
        while not any("requeued" in m for m in logs_of(srv, sub["request_id"])):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert c.get(sub["status_url"]).json()["status"] != "COMPLETED"
        filler.unlink()  # space is back
        done = wait_completed(c, sub["status_url"], timeout=90)
        assert "error" not in done
        assert httpx.put(urls["upload_url"], content=png_bytes()).status_code == 200  # its use was given back
        assert c.get(sub["response_url"]).json()["image"]["width"] == 40
        assert not any(str(srv.data_dir) in m for m in logs_of(srv, sub["request_id"]))


def test_a_full_database_disk(fresh_server: Server) -> None:
    srv = fresh_server
    db = srv.data_dir / "db"
    srv.data_dir.mkdir(parents=True)
    srv.key = srv.new_key()  # in data_dir/pulid.db, copied onto the small disk below
    srv.env = {"PULID_WORKER_ENDPOINTS": "test/echo", "PULID_DATABASE_URL": f"sqlite:///{db}/pulid.db"}
    srv.wrapper = small_disk(db, "8m", then='cp "$0/../pulid.db" "$0/"')
    srv.start()
    with srv.client() as c:
        wait_completed(c, c.post("/queue/test/echo", json={}).json()["status_url"])
        [worker] = srv.worker_pids()
        filler = fill(srv, db)
        codes = []
        for i in range(20):
            r = c.post("/queue/test/echo", json={"value": "x" * 2000 + str(i)})
            codes.append(r.status_code)
            if r.status_code == 507:
                assert_507(r, srv)
                break
        assert codes[-1] == 507, codes
        time.sleep(3)  # the worker keeps failing to poll and claim: it must wait, not die and reload
        assert srv.worker_pids() == [worker]
        filler.unlink()
        sub = c.post("/queue/test/echo", json={"value": "after"}).json()
        wait_completed(c, sub["status_url"], timeout=60)
        assert c.get(sub["response_url"]).json()["value"] == "after"
        assert srv.worker_pids() == [worker]
