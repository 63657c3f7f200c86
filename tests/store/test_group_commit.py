"""Group commit of submits (api/services/submitter.py over JobQueue.submit_many), on SQLite and PostgreSQL:
a burst shares transactions, and each request gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from pulid_server.api.services.submitter import SubmitBatcher
from pulid_server.store import IN_QUEUE, Job, QueueFull, SqlJobStore, Submission

ECHO = "test/echo"


def _sub(owner: str = "k1", **kw: Any) -> Submission:
    return Submission(endpoint_id=ECHO, owner_key_id=owner, input_json="{}", base_url="http://x", **kw)


def _commits(store: SqlJobStore) -> list[int]:
    seen: list[int] = []
    for engine in {id(e): e for e in (store.db.engine, store.db.lazy_engine)}.values():
        event.listen(engine, "commit", lambda _conn: seen.append(1))
    return seen


def test_a_burst_of_submits_shares_commits_and_each_gets_its_own_answer(store: SqlJobStore) -> None:
    commits = _commits(store)
    subs = [_sub("k2" if i % 5 == 0 else "k1", max_queue_per_key=10) for i in range(16)]  # k1: 12, 2 too many

    async def burst() -> list[Any]:
        batcher = SubmitBatcher(store.queue)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(s) for s in subs), return_exceptions=True)
        finally:
            batcher.stop()

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, QueueFull)]
    queued = [r[0] for r in results if isinstance(r, tuple)]
    assert len(refused) == 2 and len(queued) == 14 and len({j.id for j in queued}) == 14
    assert all(j.status == IN_QUEUE and store.queue.get(j.id) is not None for j in queued)
    assert len(commits) < len(subs) / 2  # in a few transactions, not one per submit


def test_submit_many_replays_an_idempotency_key_within_one_batch(store: SqlJobStore) -> None:
    first, again, other = store.queue.submit_many(
        [_sub(idempotency_key="same"), _sub(idempotency_key="same"), _sub(idempotency_key="else")]
    )
    assert isinstance(first, tuple) and isinstance(again, tuple) and isinstance(other, tuple)
    assert first[1] and not again[1] and other[1]
    assert again[0].id == first[0].id != other[0].id


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_sync_runs_writes_skip_the_sync_to_disk(store: SqlJobStore, durable: bool) -> None:
    """A /run's job (durable=False) is submitted and completed lazily: its caller gets the result in the
    response. A queued job's submit and result wait for the disk."""
    seen: list[str] = []
    lazy = store.db.lazy_engine if store.db.is_sqlite else None

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:  # PostgreSQL
        seen.append(statement)

    def began(conn: Any) -> None:  # SQLite: which engine (store/driver.py runs the statements themselves)
        seen.append("lazy" if conn.engine is lazy else "durable")

    def skipped_sync() -> bool:
        found = "lazy" in seen if store.db.is_sqlite else any("synchronous_commit = off" in s for s in seen)
        seen.clear()
        return found

    for engine in {id(e): e for e in (store.db.engine, store.db.lazy_engine)}.values():
        event.listen(engine, *(("begin", began) if lazy is not None else ("before_cursor_execute", record)))
    result = store.queue.submit_many([_sub(durable=durable)])[0]
    assert isinstance(result, tuple) and isinstance(result[0], Job) and result[0].durable is durable
    assert skipped_sync() is not durable
    claimed = store.queue.claim("w", [result[0].endpoint_id], 30)
    assert claimed is not None and claimed.durable is durable
    seen.clear()
    assert store.queue.complete(claimed, "w", {"ok": 1})
    assert skipped_sync() is not durable


def test_a_job_is_told_stored_before_its_sync_to_disk_and_answered_after_it(
    store: SqlJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the commit does not wait for the disk; the jobs can go to their workers (`on_stored`)
    while the write-ahead log is synced, and the requests are answered after that sync."""
    events: list[str] = []
    real_sync = store.queue.sync
    monkeypatch.setattr(store.queue, "sync", lambda: (events.append("sync"), real_sync())[1])
    lazy = _statements_on_lazy_engine(store)

    async def submits() -> list[Any]:
        batcher = SubmitBatcher(store.queue)
        batcher.start()

        async def one(sub: Submission) -> str:
            job, created = await batcher.submit(sub, lambda job, _created: events.append(f"stored {job.id}"))
            events.append(f"answered {job.id}")
            return job.id

        try:
            return await asyncio.gather(one(_sub()), one(_sub(durable=False)))
        finally:
            batcher.stop()

    durable_id, lazy_id = asyncio.run(submits())
    assert events.index("sync") < events.index(f"answered {durable_id}")
    assert events.index(f"stored {durable_id}") < events.index(f"answered {durable_id}")
    assert events.index(f"stored {lazy_id}") < events.index(f"answered {lazy_id}")
    assert store.queue.get(durable_id) is not None and store.queue.get(lazy_id) is not None
    assert bool(lazy) is store.db.is_sqlite  # SQLite: committed lazily, then synced; PostgreSQL: durably


def _statements_on_lazy_engine(store: SqlJobStore) -> list[str]:
    """Transactions begun on the engine that never syncs (SQLite)."""
    seen: list[str] = []
    if store.db.is_sqlite:
        event.listen(store.db.lazy_engine, "begin", lambda _conn: seen.append("begin"))
    return seen
