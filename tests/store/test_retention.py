"""Retention in the store, on SQLite and PostgreSQL: what is due when, claims that one pruner holds, and the
platform headers the queue keeps (runner hints, no-retry, fal_max_queue_length)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, update

from pulid_server.failures import Failure
from pulid_server.store import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    OUTPUTS_GONE,
    PAYLOAD_GONE,
    Job,
    QueueFull,
    RetentionPolicy,
    SqlJobStore,
)
from pulid_server.store.schema import job_logs, jobs, upload_grants, uploads, webhooks
from tests.store.test_store import ECHO, fetch, submit

HOUR = 3600.0
POLICY = RetentionPolicy(outputs=HOUR, uploads=HOUR, payloads=2 * HOUR, jobs=3 * HOUR)


def finished(store: SqlJobStore, age: float = 0.0, **kw: Any) -> Job:
    """A job that completed `age` seconds ago (with a log line)."""
    job = submit(store, **kw)
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and claimed.id == job.id
    store.queue.log(job.id, "step 1/1")
    assert store.queue.complete(claimed, "w", {"images": [{"url": "x"}]})
    age_by(store, job.id, age)
    return fetch(store, job)


def age_by(store: SqlJobStore, job_id: str, seconds: float) -> None:
    """Move a finished job's clocks back by `seconds`."""
    with store.db.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                finished_at=jobs.c.finished_at - seconds,
                outputs_expire_at=jobs.c.outputs_expire_at - seconds,
            )
        )


def due(store: SqlJobStore, kind: str, policy: RetentionPolicy = POLICY) -> set[str]:
    return {e.ref for e in store.retention.expired(kind, policy, 100)}


def prune_all(store: SqlJobStore, kind: str, policy: RetentionPolicy = POLICY) -> dict[str, int]:
    claim = store.retention.claim(kind, policy, 100, 60)
    return store.retention.finish(claim)


def test_each_part_of_a_job_expires_on_its_own_clock(store: SqlJobStore) -> None:
    fresh, outputs_old = finished(store), finished(store, 1.5 * HOUR)
    payload_old, gone = finished(store, 2.5 * HOUR), finished(store, 3.5 * HOUR)
    assert due(store, "outputs") == {outputs_old.id, payload_old.id, gone.id}
    assert due(store, "payload") == {payload_old.id, gone.id}
    assert due(store, "job") == {gone.id}
    assert prune_all(store, "job") == {"jobs": 1, "job_logs": 1, "webhooks": 0}
    assert store.queue.get(gone.id) is None and store.queue.logs(gone.id) == []
    assert prune_all(store, "outputs") == {"outputs": 2}
    assert prune_all(store, "payload") == {"payloads": 1}
    kept = fetch(store, payload_old)
    assert kept.retention == OUTPUTS_GONE | PAYLOAD_GONE and (kept.output_json, kept.input_json) == (
        None,
        "null",
    )
    assert kept.status == COMPLETED and store.queue.logs(kept.id)  # its metadata and logs stay
    assert fetch(store, outputs_old).retention == OUTPUTS_GONE and fetch(store, outputs_old).output_json
    untouched = fetch(store, fresh)
    assert (untouched.retention, untouched.output_json) == (0, fresh.output_json)
    assert all(due(store, kind) == set() for kind in ("job", "outputs", "payload"))


def test_queued_and_running_jobs_are_never_due(store: SqlJobStore) -> None:
    queued, running = submit(store), submit(store)
    assert store.queue.claim("w", [ECHO], 30) is not None  # `queued` is running now
    with store.db.engine.begin() as conn:  # as old as can be, but not finished
        conn.execute(update(jobs).values(created_at=0.0, started_at=0.0))
    forever = RetentionPolicy(outputs=0.001, uploads=0.001, payloads=0.001, jobs=0.001)
    time.sleep(0.01)
    for kind in ("job", "outputs", "payload"):
        assert due(store, kind, forever) == set()
        assert prune_all(store, kind, forever) == {}
    assert {fetch(store, j).status for j in (queued, running)} == {IN_PROGRESS, IN_QUEUE}


def test_a_requests_own_output_lifetime(store: SqlJobStore) -> None:
    short = finished(store, 0.0, output_lifetime=60.0)
    never = finished(store, 10 * HOUR, output_lifetime=math.inf)
    default = finished(store, 0.0)
    assert fetch(store, short).retention & OUTPUTS_GONE == 0
    age_by(store, short.id, 61)
    assert due(store, "outputs") == {short.id}  # before the node's hour; `never` outlives everything
    assert due(store, "job") == set()  # a row whose outputs are kept is kept with them
    assert due(store, "payload") == {never.id}
    prune_all(store, "outputs")
    assert fetch(store, short).retention & OUTPUTS_GONE and not fetch(store, default).retention
    age_by(store, short.id, 4 * HOUR)
    assert due(store, "job") == {short.id}  # its outputs are gone: the row follows the node's clock


def test_store_io_0_payload_is_due_once_delivered(store: SqlJobStore) -> None:
    job = finished(store, store_io=False)
    assert due(store, "payload") == set()
    assert store.retention.result_delivered(job.id)
    assert not store.retention.result_delivered(finished(store).id)  # stored as usual without the header
    assert due(store, "payload") == {job.id}
    prune_all(store, "payload")
    assert fetch(store, job).retention == PAYLOAD_GONE and not store.retention.result_delivered(job.id)


def test_a_pending_webhook_keeps_its_jobs_payload(store: SqlJobStore) -> None:
    job = finished(store, 4 * HOUR, webhook_url="http://hook.example/")
    assert due(store, "job") == due(store, "payload") == set()
    store.outbox.webhook_done(job.id, delivered=True, error=None, retry_at=None)
    assert due(store, "job") == {job.id}
    assert prune_all(store, "job") == {"jobs": 1, "job_logs": 1, "webhooks": 1}


def test_an_acknowledged_webhook_delivers_a_store_io_0_result(store: SqlJobStore) -> None:
    job = finished(store, store_io=False, webhook_url="http://hook.example/")
    store.outbox.webhook_done(job.id, delivered=True, error=None, retry_at=None)
    assert due(store, "payload") == {job.id}


def test_uploads_expire_on_their_clock_or_their_own(store: SqlJobStore) -> None:
    store.retention.record_upload("uploads/a/old.png", "k1")
    store.retention.record_upload("uploads/b/new.png", "k1")
    store.retention.record_upload("uploads/c/short.png", "k1", lifetime=0.01)
    store.retention.record_upload("uploads/d/never.png", "k1", lifetime=math.inf)
    with store.db.engine.begin() as conn:
        conn.execute(update(uploads).where(uploads.c.file_key != "uploads/b/new.png").values(created_at=0.0))
    time.sleep(0.02)
    assert due(store, "upload") == {"uploads/a/old.png", "uploads/c/short.png"}
    assert prune_all(store, "upload") == {"uploads": 2}
    assert store.retention.upload_deleted("uploads/a/old.png")
    assert not store.retention.upload_deleted("uploads/b/new.png")
    assert due(store, "upload") == set()
    assert store.retention.housekeeping(POLICY, 100)["upload_tombstones"] == 2  # created at 0: old enough
    assert not store.retention.upload_deleted("uploads/a/old.png")


def test_a_claim_is_one_pruners_until_it_lapses(store: SqlJobStore) -> None:
    job = finished(store, 4 * HOUR)
    first = store.retention.claim("job", POLICY, 10, lease_seconds=0.2)
    assert [e.ref for e in first.items] == [job.id]
    assert store.retention.claim("job", POLICY, 10, 60).items == []  # held
    time.sleep(0.3)
    second = store.retention.claim("job", POLICY, 10, 60)  # the first pruner died, or is too slow
    assert [e.ref for e in second.items] == [job.id]
    assert store.retention.finish(first) == {"jobs": 0, "job_logs": 0, "webhooks": 0}
    assert store.retention.finish(second)["jobs"] == 1


def test_two_nodes_pruning_at_once_delete_each_row_once(store_url: str, store: SqlJobStore) -> None:
    ids = {finished(store, 4 * HOUR).id for _ in range(30)}
    nodes = [SqlJobStore(store_url), SqlJobStore(store_url)]
    counts: Counter[str] = Counter()
    claimed: list[str] = []
    lock = threading.Lock()

    def prune(node: SqlJobStore) -> None:
        for _ in range(50):
            claim = node.retention.claim("job", POLICY, 4, 60)
            if not claim.items:
                return
            result = node.retention.finish(claim)
            with lock:
                claimed.extend(e.ref for e in claim.items)
                counts.update(result)

    threads = [threading.Thread(target=prune, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for node in nodes:
        node.close()
    assert sorted(claimed) == sorted(ids)  # every row claimed, none twice
    assert counts["jobs"] == 30 and counts["job_logs"] == 30
    with store.db.engine.begin() as conn:
        assert conn.execute(select(jobs.c.id)).all() == []
        assert conn.execute(select(job_logs.c.id)).all() == []


def test_housekeeping_deletes_expired_grants(store: SqlJobStore) -> None:
    store.uploads.grant_upload("k1", ttl=60)
    store.uploads.grant_upload("k1", ttl=60)
    with store.db.engine.begin() as conn:
        conn.execute(update(upload_grants).values(expires_at=0.0))
    store.uploads.grant_upload("k1", ttl=60)
    assert store.retention.housekeeping(POLICY, 1)["upload_grants"] == 1  # batched
    assert store.retention.housekeeping(POLICY, 100)["upload_grants"] == 1
    with store.db.engine.begin() as conn:
        assert len(conn.execute(select(upload_grants)).all()) == 1


def test_database_size_is_reported(store: SqlJobStore) -> None:
    assert store.retention.database_bytes() > 0


# -- fal's queue headers, as the store keeps them ----------------------------------------------------------


def test_max_endpoint_queue_refuses_past_its_length(store: SqlJobStore) -> None:
    submit(store, max_endpoint_queue=2)
    submit(store, endpoint="test/image")  # another endpoint's queue does not count
    submit(store, max_endpoint_queue=2)
    with pytest.raises(QueueFull, match="fal_max_queue_length=2"):
        submit(store, max_endpoint_queue=2)
    submit(store)  # without the parameter, only the node's caps apply


def test_no_retry_job_fails_when_its_worker_is_lost(store: SqlJobStore) -> None:
    plain, once = submit(store), submit(store, no_retry=True)
    assert store.queue.claim("w1", [ECHO], 0.05) and store.queue.claim("w2", [ECHO], 0.05)
    time.sleep(0.1)
    store.queue.reap(max_attempts=3)
    assert fetch(store, plain).status == IN_QUEUE
    lost = fetch(store, once)
    assert (lost.status, lost.error_type, lost.attempts) == (COMPLETED, "worker_crashed", 1)


def test_runner_hint_keeps_jobs_for_the_worker_that_holds_it(store: SqlJobStore) -> None:
    first = submit(store, runner_hint="face-1")
    taken = store.queue.claim("w1", [ECHO], 30, hint_seconds=10)
    assert taken is not None and taken.id == first.id
    assert store.queue.complete(taken, "w1", {})
    hinted, other, plain = (
        submit(store, runner_hint="face-1"),
        submit(store, runner_hint="face-2"),
        submit(store),
    )
    got = [store.queue.claim("w2", [ECHO], 30, hint_seconds=10) for _ in range(3)]
    assert [j.id if j else None for j in got] == [other.id, plain.id, None]  # face-1 is w1's for now
    again = store.queue.claim("w1", [ECHO], 30, hint_seconds=10)
    assert again is not None and again.id == hinted.id
    with store.db.engine.begin() as conn:  # ... for hint_seconds: then anyone takes it
        conn.execute(update(jobs).where(jobs.c.id == hinted.id).values(status=IN_QUEUE, worker_id=None))
    assert store.queue.claim("w2", [ECHO], 30, hint_seconds=0) is not None
    store.cluster.unregister_worker("w1")  # a worker that leaves holds nothing
    late = submit(store, runner_hint="face-1")
    claimed = store.queue.claim("w2", [ECHO], 30, hint_seconds=10)
    assert claimed is not None and claimed.id == late.id


def test_a_failed_job_holds_no_hint(store: SqlJobStore) -> None:
    job = submit(store, runner_hint="h")
    taken = store.queue.claim("w1", [ECHO], 30, hint_seconds=10)
    assert taken is not None and store.queue.complete(taken, "w1", None, Failure("internal_error", 500, "x"))
    submit(store, runner_hint="h")
    assert store.queue.claim("w2", [ECHO], 30, hint_seconds=10) is not None
    assert fetch(store, job).status == COMPLETED


def test_a_webhook_whose_job_is_gone_is_dropped(store: SqlJobStore) -> None:
    job = finished(store, webhook_url="http://hook.example/")
    with store.db.engine.begin() as conn:
        conn.execute(jobs.delete().where(jobs.c.id == job.id))
    assert store.outbox.claim_webhook(30) is None
    with store.db.engine.begin() as conn:
        assert conn.execute(select(webhooks)).all() == []
