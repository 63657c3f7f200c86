"""A worker in this process over a real SQLite store: cheap jobs are claimed, run and recorded in batches
(one commit for many), each exactly once; a job claimed with a batch that ran long is given back, never
run on a lease about to expire."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from pulid_server.config import Settings
from pulid_server.store import COMPLETED, IN_QUEUE, Job, Submission, handed_job
from pulid_server.worker.config import WorkerConfig
from pulid_server.worker.loop import BATCH_CLAIM, Worker

ECHO = "test/echo"


def _worker(tmp_path: Path, **settings: Any) -> Worker:
    worker = Worker(
        WorkerConfig(
            Settings(
                data_dir=tmp_path,
                extra_endpoints=["tests.fixtures.endpoints"],
                worker_endpoints=[ECHO],
                poll_seconds=0.01,
                **settings,
            )
        )
    )
    worker.load()
    return worker


def _submit(worker: Worker, n: int) -> list[Job]:
    return [
        worker.store.queue.submit(endpoint_id=ECHO, owner_key_id="k", input_json="{}", base_url="http://x")[0]
        for _ in range(n)
    ]


def test_cheap_jobs_are_recorded_in_batches_each_once(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    jobs = _submit(worker, 40)
    commits: list[int] = []
    event.listen(worker.store.db.engine, "commit", lambda _conn: commits.append(1))  # durable commits
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [worker.store.queue.get(j.id) for j in jobs]
        if all(s is not None and s.status == COMPLETED for s in states):
            break
        time.sleep(0.05)
    worker.stopping.set()
    thread.join(30)
    done = [worker.store.queue.get(j.id) for j in jobs]
    assert all(d is not None and d.status == COMPLETED and d.attempts == 1 for d in done)
    assert len(commits) <= len(jobs) / 2  # batches of up to BATCH_CLAIM, not a commit per job


def test_a_job_claimed_with_a_batch_that_ran_long_goes_back_unstarted(tmp_path: Path) -> None:
    worker = _worker(tmp_path, lease_seconds=30.0)
    first, late = _submit(worker, 2)
    claimed = deque(
        j for j in (worker.store.queue.claim(worker.worker_id, [ECHO], 30.0) for _ in range(2)) if j
    )
    assert [j.id for j in claimed] == [first.id, late.id] and BATCH_CLAIM > 1
    claimed[1].lease_until = time.time() + 10  # as if the first job had run for 20 s of its 30 s lease
    worker._work(claimed, [])
    after = worker.store.queue.get(late.id)
    assert worker.store.queue.get(first.id).status == COMPLETED  # type: ignore[union-attr]
    assert after is not None and after.status == IN_QUEUE and after.attempts == 0  # given back, not run


def test_a_batch_whose_job_turns_out_slow_gives_the_rest_back_at_once(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    slow = worker.store.queue.submit(
        endpoint_id=ECHO, owner_key_id="k", input_json='{"steps": 1, "step_seconds": 0.02}', base_url="x"
    )[0]
    rest = _submit(worker, 2)
    claimed = deque(
        j for j in (worker.store.queue.claim(worker.worker_id, [ECHO], 30.0) for _ in range(3)) if j
    )
    assert [j.id for j in claimed] == [slow.id, *(j.id for j in rest)]
    worker._work(claimed, [])  # 20 ms > CHEAP_BATCH_SECONDS: another worker may run the others now
    assert worker.store.queue.get(slow.id).status == COMPLETED  # type: ignore[union-attr]
    assert all(worker.store.queue.get(j.id).status == IN_QUEUE for j in rest)  # type: ignore[union-attr]


def test_a_queued_jobs_result_is_announced_once_committed_then_synced_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiting request hears of the result without waiting for the fsync; the fsync follows at once.
    A sync /run's result (durable=False) is never synced: its caller got it in the response."""
    worker = _worker(tmp_path)
    events: list[str] = []
    real_sync = worker.store.queue.sync
    monkeypatch.setattr(worker.store.queue, "sync", lambda: (events.append("sync"), real_sync())[1])

    def done(job_id: str, *_args: Any, **_kwargs: Any) -> bool:  # with the result: the API needs no read
        events.append(f"done {job_id}")
        return True

    monkeypatch.setattr(worker.doorbell, "done", done)
    queued = _submit(worker, 1)[0]
    [stored] = worker.store.queue.submit_many(
        [Submission(endpoint_id=ECHO, owner_key_id="k", input_json="{}", base_url="x", durable=False)]
    )
    assert isinstance(stored, tuple)
    run = stored[0]
    event.listen(worker.store.db.engine, "commit", lambda _conn: events.append("durable commit"))
    for job in (queued, run):
        claimed = worker.store.queue.claim(worker.worker_id, [ECHO], 30.0)
        assert claimed is not None and claimed.id == job.id
        worker._work(deque([claimed]), [])
        assert worker.store.queue.get(job.id).status == COMPLETED  # type: ignore[union-attr]
    assert events == [f"done {queued.id}", "sync", f"done {run.id}"]


def test_a_handed_job_the_store_never_got_is_dropped_with_its_files(tmp_path: Path) -> None:
    """No word from the API (this worker has no pipes) and no row in the store: nothing is recorded, and
    what the job wrote is deleted."""
    worker = _worker(tmp_path)
    sub = Submission(
        endpoint_id=ECHO, owner_key_id="k", input_json="{}", base_url="x", job_id="lost", lease_seconds=30
    )
    job = handed_job(dataclasses.replace(sub, worker_id=worker.worker_id))
    worker.blobs.put(f"outputs/{job.id}/a.png", b"png", "image/png")  # as if the model had saved it
    worker._unsettled.add(job.id)
    worker._work(deque([job]), [])
    assert worker.store.queue.get(job.id) is None
    assert list(worker.blobs.scan(f"outputs/{job.id}/")) == []
