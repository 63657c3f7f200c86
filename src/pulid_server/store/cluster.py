"""What the whole deployment looks like from the shared store: live workers, queue depth, finished jobs.

Read by /health/ready and /metrics on any API node; written by workers. Every query is bounded by an
index (the queue, the finished_at cursor, the small workers table), so a scrape stays cheap however
many jobs the table holds.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from pulid_server.store import driver
from pulid_server.store.database import Database
from pulid_server.store.records import IN_PROGRESS, IN_QUEUE, FinishedJob, QueueDepth, WorkerInfo
from pulid_server.store.schema import jobs, runner_hints, webhooks, workers

WORKER_ROW_TTL_SECONDS = 86400.0  # rows of workers gone this long are pruned when a worker registers


_TOUCH = update(workers).where(workers.c.worker_id == bindparam("worker"))  # SET: the execute's other keys


def touch_worker(conn: Connection, worker_id: str, job_id: str | None) -> None:
    """Mark a worker alive (running `job_id`, or idle), inside the caller's transaction."""
    driver.run(conn, _TOUCH, {"worker": worker_id, "last_seen": time.time(), "job_id": job_id})


class SqlClusterView:
    def __init__(self, db: Database):
        self._db = db

    # -- worker registry ----------------------------------------------------------------------------------

    def register_worker(
        self,
        worker_id: str,
        endpoint_ids: list[str],
        device: str = "",
        presets: dict[str, str] | None = None,
    ) -> None:
        """Called once a worker has loaded its endpoints; `presets` names the model each one loaded."""
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(delete(workers).where(workers.c.last_seen < now - WORKER_ROW_TTL_SECONDS))
            conn.execute(delete(workers).where(workers.c.worker_id == worker_id))
            conn.execute(
                insert(workers).values(
                    worker_id=worker_id,
                    hostname=socket.gethostname()[:200],
                    pid=os.getpid(),
                    device=device[:64],
                    endpoints=",".join(endpoint_ids),
                    presets=json.dumps(presets or {}),
                    started_at=now,
                    last_seen=now,
                )
            )

    def worker_seen(self, worker_id: str, job_id: str | None = None) -> None:
        with self._db.tx() as conn:
            touch_worker(conn, worker_id, job_id)

    def unregister_worker(self, worker_id: str) -> None:
        with self._db.tx() as conn:
            conn.execute(delete(workers).where(workers.c.worker_id == worker_id))
            conn.execute(delete(runner_hints).where(runner_hints.c.worker_id == worker_id))  # route no more

    def recent_workers(self, within_seconds: float) -> list[WorkerInfo]:
        """Workers that reported in the last `within_seconds` (use the lease: older means presumed dead)."""
        query = (
            select(workers)
            .where(workers.c.last_seen >= time.time() - within_seconds)
            .order_by(workers.c.worker_id)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [
            WorkerInfo(
                r.worker_id,
                r.hostname,
                r.pid,
                r.device,
                [e for e in r.endpoints.split(",") if e],
                r.started_at,
                r.last_seen,
                r.job_id,
                json.loads(r.presets or "{}"),
            )
            for r in rows
        ]

    # -- metrics --------------------------------------------------------------------------------------------

    def queue_depths(self) -> list[QueueDepth]:
        """Unfinished jobs by status, endpoint and priority (an index range: bounded by the queue caps)."""
        query = (
            select(jobs.c.status, jobs.c.endpoint_id, jobs.c.priority, func.count())
            .where(jobs.c.status.in_([IN_QUEUE, IN_PROGRESS]))
            .group_by(jobs.c.status, jobs.c.endpoint_id, jobs.c.priority)
        )
        with self._db.read() as conn:
            return [QueueDepth(s, e, p, n) for s, e, p, n in conn.execute(query).all()]

    def webhook_counts(self) -> dict[str, int]:
        with self._db.read() as conn:
            rows = conn.execute(select(webhooks.c.state, func.count()).group_by(webhooks.c.state)).all()
        return {state: n for state, n in rows}

    def finished_since(
        self, after: tuple[float, int], until: float, limit: int = 5000
    ) -> Iterator[FinishedJob]:
        """Jobs with (finished_at, seq) > `after` and finished_at <= `until`, in that order, in pages."""
        t, seq = after
        for _ in range(1000):  # bounded: 5 million rows per call at most
            query = (
                select(
                    jobs.c.seq,
                    jobs.c.endpoint_id,
                    jobs.c.error_type,
                    jobs.c.created_at,
                    jobs.c.started_at,
                    jobs.c.finished_at,
                    jobs.c.images_checked,
                    jobs.c.images_flagged,
                )
                .where(
                    jobs.c.finished_at >= t,  # the index range; the OR below only breaks ties
                    jobs.c.finished_at <= until,
                    or_(jobs.c.finished_at > t, jobs.c.seq > seq),
                )
                .order_by(jobs.c.finished_at, jobs.c.seq)
                .limit(limit)
            )
            with self._db.read() as conn:
                rows = conn.execute(query).all()
            for r in rows:
                yield FinishedJob(
                    r.seq,
                    r.endpoint_id,
                    r.error_type,
                    r.created_at,
                    r.started_at,
                    r.finished_at,
                    r.images_checked,
                    r.images_flagged,
                )
            if len(rows) < limit:
                return
            t, seq = rows[-1].finished_at, rows[-1].seq
