"""The pruner against real stores: SQLite with local files, and PostgreSQL with an S3 bucket (moto). Expired
data leaves both the database and the blob store, the rest stays, and two nodes pruning at once delete
each item once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update

from pulid_server.api.services.pruner import Pruner, PruneReport
from pulid_server.files import BlobStore, LocalBlobStore, S3BlobStore
from pulid_server.store import OUTPUTS_GONE, PAYLOAD_GONE, Job, RetentionPolicy, SqlJobStore
from pulid_server.store.schema import jobs, uploads
from tests.pg import PostgresServer, S3Server

HOUR = 3600.0
POLICY = RetentionPolicy(outputs=HOUR, uploads=HOUR, payloads=2 * HOUR, jobs=3 * HOUR)
ECHO = "test/echo"


@dataclass
class Backend:
    """One database and one blob store, as every node of a deployment sees them."""

    url: str
    folder: Path
    bucket: str = ""
    s3: S3Server | None = None

    def node(self) -> tuple[SqlJobStore, BlobStore]:
        if self.s3 is not None:
            return SqlJobStore(self.url), S3BlobStore(
                f"s3://{self.bucket}/p", endpoint_url=self.s3.endpoint_url
            )
        return SqlJobStore(self.url), LocalBlobStore(self.folder)


@pytest.fixture(params=["sqlite+local", "postgresql+s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite+local":
        return Backend(f"sqlite:///{tmp_path / 'pulid.db'}", tmp_path / "files")
    postgres: PostgresServer = request.getfixturevalue("postgres")
    s3: S3Server = request.getfixturevalue("s3")
    return Backend(postgres.create_database(), tmp_path, s3.create_bucket(), s3)


@pytest.fixture
def node(backend: Backend) -> Iterator[tuple[SqlJobStore, BlobStore]]:
    store, blobs = backend.node()
    yield store, blobs
    store.close()


def make_job(store: SqlJobStore, blobs: BlobStore, *, age: float | None, worker: str = "w") -> Job:
    """A job with an input file and an output file; finished `age` seconds ago (None: left running)."""
    job, _ = store.queue.submit(endpoint_id=ECHO, owner_key_id="k", input_json="{}", base_url="http://x")
    blobs.put(f"inputs/{job.id}/face.png", b"i" * 10, "image/png")
    if age is None:
        return job
    claimed = store.queue.claim(worker, [ECHO], 30)
    assert claimed is not None and claimed.id == job.id
    blobs.put(f"outputs/{job.id}/out.png", b"o" * 100, "image/png")
    assert store.queue.complete(claimed, worker, {"url": f"http://x/files/outputs/{job.id}/out.png"})
    with store.db.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(finished_at=jobs.c.finished_at - age))
    return job


def keys(blobs: BlobStore) -> set[str]:
    return {info.key for info in blobs.scan()}


def test_expired_data_leaves_the_store_and_the_blob_store(node: tuple[SqlJobStore, BlobStore]) -> None:
    store, blobs = node
    gone = make_job(store, blobs, age=4 * HOUR)  # the whole job
    outputs_old = make_job(store, blobs, age=1.5 * HOUR)  # its outputs
    payload_old = make_job(store, blobs, age=2.5 * HOUR)  # its outputs and its payload
    fresh = make_job(store, blobs, age=0)
    queued = make_job(store, blobs, age=None)  # never pruned, however old
    running = make_job(store, blobs, age=None)
    assert store.queue.claim("w2", [ECHO], 30) is not None  # `queued` is claimed: it runs now
    blobs.put(f"outputs/{queued.id}/partial.png", b"p", "image/png")
    with store.db.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.finished_at.is_(None)).values(created_at=0.0, started_at=0.0))
    for name in ("old", "new"):
        store.retention.record_upload(f"uploads/{name}/face.png", "k")
        blobs.put(f"uploads/{name}/face.png", b"u" * 1000, "image/png")
    with store.db.engine.begin() as conn:
        old_upload = uploads.c.file_key == "uploads/old/face.png"
        conn.execute(update(uploads).where(old_upload).values(created_at=uploads.c.created_at - 2 * HOUR))

    report = Pruner(store, blobs, POLICY).run_pass()

    assert store.queue.get(gone.id) is None
    assert fetch_bits(store, outputs_old) == OUTPUTS_GONE
    assert fetch_bits(store, payload_old) == OUTPUTS_GONE | PAYLOAD_GONE
    assert store.queue.get(payload_old.id).output_json is None  # type: ignore[union-attr]
    assert fetch_bits(store, fresh) == 0 and store.queue.get(fresh.id).output_json  # type: ignore[union-attr]
    assert keys(blobs) == {
        f"inputs/{outputs_old.id}/face.png",
        f"inputs/{fresh.id}/face.png",
        f"outputs/{fresh.id}/out.png",
        f"inputs/{queued.id}/face.png",
        f"outputs/{queued.id}/partial.png",
        f"inputs/{running.id}/face.png",
        "uploads/new/face.png",
    }
    assert store.retention.upload_deleted("uploads/old/face.png")
    assert dict(report.items) == {"job": 1, "outputs": 2, "payload": 1, "upload": 1}
    assert (report.files["outputs"], report.bytes["outputs"]) == (3, 300)
    assert (report.files["inputs"], report.bytes["inputs"]) == (2, 20)
    assert (report.files["uploads"], report.bytes["uploads"]) == (1, 1000)
    assert report.rows["jobs"] == 1 and report.rows["job_logs"] == 0 and report.rows["uploads"] == 1
    assert Pruner(store, blobs, POLICY).run_pass().empty()  # nothing more is due


def fetch_bits(store: SqlJobStore, job: Job) -> int | None:
    return store.retention.job_retention(job.id)


def test_two_nodes_pruning_at_once_delete_each_item_once(backend: Backend) -> None:
    nodes = [backend.node() for _ in range(2)]
    store, blobs = nodes[0]
    ids = {make_job(store, blobs, age=4 * HOUR).id for _ in range(24)}
    reports = [PruneReport(), PruneReport()]

    def prune(i: int) -> None:
        node_store, node_blobs = nodes[i]
        pruner = Pruner(node_store, node_blobs, POLICY)
        for _ in range(20):
            claim = node_store.retention.claim("job", POLICY, 3, 60)  # small batches: the nodes interleave
            if not claim.items:
                return
            pruner._prune(claim, reports[i])

    threads = [threading.Thread(target=prune, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = PruneReport()
    for report in reports:
        total.add(report)
    assert total.items["job"] == total.rows["jobs"] == len(ids)  # each row deleted and counted once
    assert total.files["outputs"] == total.files["inputs"] == len(ids)
    assert all(store.queue.get(job_id) is None for job_id in ids) and keys(blobs) == set()
    for node_store, _ in nodes:
        node_store.close()


def test_dry_run_deletes_nothing(node: tuple[SqlJobStore, BlobStore]) -> None:
    store, blobs = node
    old = make_job(store, blobs, age=4 * HOUR)
    before = keys(blobs)
    report = Pruner(store, blobs, POLICY).dry_run()
    assert report.items["job"] == 1 and (report.files["outputs"], report.bytes["outputs"]) == (1, 100)
    assert keys(blobs) == before and store.queue.get(old.id) is not None


def test_delete_request_on_demand(node: tuple[SqlJobStore, BlobStore]) -> None:
    store, blobs = node
    job, other = make_job(store, blobs, age=0), make_job(store, blobs, age=0)
    results = Pruner(store, blobs, POLICY).delete_request(job.id, "http://base")
    assert results == [{"link": f"http://base/files/outputs/{job.id}/out.png", "exception": None}]
    assert fetch_bits(store, job) == OUTPUTS_GONE | PAYLOAD_GONE
    assert keys(blobs) == {f"inputs/{other.id}/face.png", f"outputs/{other.id}/out.png"}
    assert Pruner(store, blobs, POLICY).delete_request(job.id, "http://base") == []  # idempotent
