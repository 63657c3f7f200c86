"""`pulid prune [--dry-run]`: what has expired in a node's database and files, said or deleted now."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from pulid_server.cli import app
from pulid_server.files import LocalBlobStore
from pulid_server.store import SqlJobStore
from pulid_server.store.schema import jobs


def prune(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["prune", *args, "--data-dir", str(tmp_path)], terminal_width=200)
    return result.exit_code, result.output


def test_dry_run_then_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULID_RETAIN_JOBS", "1h")
    store = SqlJobStore(f"sqlite:///{tmp_path / 'pulid.db'}")
    blobs = LocalBlobStore(tmp_path / "files")
    try:
        ids = []
        for _ in range(2):
            job, _ = store.queue.submit(endpoint_id="e/x", owner_key_id="k", input_json="{}", base_url="")
            claimed = store.queue.claim("w", ["e/x"], 30)
            assert claimed is not None and store.queue.complete(claimed, "w", {})
            blobs.put(f"outputs/{job.id}/a.png", b"x" * 2048, "image/png")
            ids.append(job.id)
        with store.db.engine.begin() as conn:  # one finished two hours ago, one just now
            conn.execute(
                update(jobs).where(jobs.c.id == ids[0]).values(finished_at=jobs.c.finished_at - 7200)
            )
        code, out = prune(tmp_path, "--dry-run")
        assert code == 0 and out.startswith("would delete: 1 finished requests, 0 requests' outputs")
        assert "outputs/: 1 files, 2048 bytes" in out and store.queue.get(ids[0]) is not None
        code, out = prune(tmp_path)
        assert code == 0 and out.startswith("deleted: 1 finished requests") and "1 jobs" in out
        assert store.queue.get(ids[0]) is None and store.queue.get(ids[1]) is not None
        assert [i.key for i in blobs.scan()] == [f"outputs/{ids[1]}/a.png"]
        assert prune(tmp_path)[1].startswith("deleted: 0 finished requests")
    finally:
        store.close()


def test_a_missing_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["prune"])
    assert result.exit_code == 2 and "no pulid-server database" in result.output
