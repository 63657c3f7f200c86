"""The queue: jobs and their logs. Submit with caps and idempotency, claim with a lease, heartbeat,
cancel, complete (writing the outbox row in the same transaction), reap expired deadlines and leases.

SQLite serializes writers (`BEGIN IMMEDIATE`); PostgreSQL claims with `FOR UPDATE SKIP LOCKED` and takes
an advisory lock around submits so that the queue caps stay exact across API nodes.

Fair across keys: within a priority, jobs are claimed by their virtual start time `vt`, then `seq`
(start-time fair queuing, one unit of work per job). A submit sets `vt` to one turn after the key's last
queued job, but never earlier than the queue's current turn, so keys take turns: a key with a thousand
queued jobs holds one place per round, and a newcomer waits for at most one job of each other key.
Queue positions count the same order (priority, vt, seq), so they always match what claims do.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from pulid_server import failures
from pulid_server.failures import Failure
from pulid_server.store import outbox
from pulid_server.store.cluster import touch_worker
from pulid_server.store.database import Database
from pulid_server.store.records import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    Job,
    JobProgress,
    JobState,
    LogLine,
    QueueFull,
    field_names,
)
from pulid_server.store.retention import OWN_OUTPUT_LIFETIME
from pulid_server.store.schema import job_logs, jobs, runner_hints

_PG_SUBMIT_LOCK = 0x70756C6964 + 1  # advisory lock that makes the queue caps exact across API nodes
_STATE_COLUMNS = [jobs.c[name] for name in field_names(JobState)]
_CHUNK = 500  # ids per IN (...) list: well under every backend's bound on query parameters


class SqlJobQueue:
    def __init__(self, db: Database):
        self._db = db

    # -- submit / read ----------------------------------------------------------------------------------

    def submit(
        self,
        *,
        endpoint_id: str,
        owner_key_id: str,
        input_json: str,
        base_url: str,
        priority: int = 0,
        webhook_url: str | None = None,
        start_timeout: float | None = None,
        idempotency_key: str | None = None,
        max_queue_per_key: int = 10**9,
        max_queue_total: int = 10**9,
        max_endpoint_queue: int | None = None,
        runner_hint: str | None = None,
        no_retry: bool = False,
        store_io: bool = True,
        output_lifetime: float | None = None,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        if idempotency_key:
            existing = self._find_idempotent(owner_key_id, idempotency_key)
            if existing:
                return existing, False
        now = time.time()
        values = dict(
            id=job_id or str(uuid.uuid4()),
            endpoint_id=endpoint_id,
            owner_key_id=owner_key_id,
            status=IN_QUEUE,
            priority=priority,
            input_json=input_json,
            base_url=base_url,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            created_at=now,
            start_deadline=now + start_timeout if start_timeout else None,
            attempts=0,
            cancel_requested=False,
            runner_hint=runner_hint,
            no_retry=no_retry,
            store_io=store_io,
            # Its own lifetime for its outputs (NULL with the bit: never); without the bit, the node's clock.
            output_lifetime=output_lifetime if output_lifetime and math.isfinite(output_lifetime) else None,
            retention=0 if output_lifetime is None else OWN_OUTPUT_LIFETIME,
        )
        try:
            with self._db.tx() as conn:
                if not self._db.is_sqlite:
                    # Count-then-insert races between API nodes under READ COMMITTED; one transaction-scoped
                    # lock serializes submits (held for a few ms), as SQLite's single writer already does.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SUBMIT_LOCK})
                queued = select(func.count()).select_from(jobs).where(jobs.c.status == IN_QUEUE)
                if conn.execute(queued).scalar_one() >= max_queue_total:
                    raise QueueFull("the queue is full")
                mine = queued.where(jobs.c.owner_key_id == owner_key_id)
                if conn.execute(mine).scalar_one() >= max_queue_per_key:
                    raise QueueFull("this key has too many queued requests")
                if max_endpoint_queue is not None:  # the caller's fal_max_queue_length
                    endpoint_queue = queued.where(jobs.c.endpoint_id == endpoint_id)
                    if conn.execute(endpoint_queue).scalar_one() >= max_endpoint_queue:
                        raise QueueFull(
                            f"the queue of {endpoint_id} is longer than fal_max_queue_length={max_endpoint_queue}"
                        )
                values["vt"] = _virtual_start(conn, owner_key_id, priority)
                row = conn.execute(insert(jobs).values(**values).returning(*jobs.c)).one()
        except IntegrityError:
            # Two submits raced with the same Idempotency-Key: the other one won.
            existing = self._find_idempotent(owner_key_id, idempotency_key or "")
            if existing is None:
                raise
            return existing, False
        return Job.from_row(row), True

    def _find_idempotent(self, owner_key_id: str, key: str) -> Job | None:
        with self._db.read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.owner_key_id == owner_key_id, jobs.c.idempotency_key == key)
            ).first()
        return Job.from_row(row) if row else None

    def get(self, job_id: str, owner_key_id: str | None = None) -> Job | None:
        query = select(jobs).where(jobs.c.id == job_id)
        if owner_key_id is not None:
            query = query.where(jobs.c.owner_key_id == owner_key_id)
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return Job.from_row(row) if row else None

    def state(self, job_id: str, owner_key_id: str | None = None) -> JobState | None:
        query = select(*_STATE_COLUMNS).where(jobs.c.id == job_id)
        if owner_key_id is not None:
            query = query.where(jobs.c.owner_key_id == owner_key_id)
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return JobState.from_row(row) if row else None

    def queue_position(self, job: JobState) -> int:
        ahead = (
            select(func.count())
            .select_from(jobs)
            .where(
                jobs.c.status == IN_QUEUE,
                jobs.c.endpoint_id == job.endpoint_id,
                tuple_(jobs.c.priority, jobs.c.vt, jobs.c.seq) < tuple_(job.priority, job.vt, job.seq),
            )
        )
        with self._db.read() as conn:
            return int(conn.execute(ahead).scalar_one())

    def progress(self, job_ids: list[str], *, positions: bool = True) -> list[JobProgress]:
        """State, queue position and newest log line of many jobs, in one read transaction."""
        states: list[JobState] = []
        last_log: dict[str, int] = {}
        ranks: dict[str, int] = {}
        with self._db.read() as conn:
            for i in range(0, len(job_ids), _CHUNK):
                rows = conn.execute(select(*_STATE_COLUMNS).where(jobs.c.id.in_(job_ids[i : i + _CHUNK])))
                states.extend(JobState(*r) for r in rows)  # the columns are in JobState's field order
            started = [s.id for s in states if s.status != IN_QUEUE]  # a queued job has no log lines yet
            for i in range(0, len(started), _CHUNK):
                heads = (
                    select(job_logs.c.job_id, func.max(job_logs.c.id))
                    .where(job_logs.c.job_id.in_(started[i : i + _CHUNK]))
                    .group_by(job_logs.c.job_id)
                )
                last_log.update((job_id, int(last)) for job_id, last in conn.execute(heads))
            queued = [s for s in states if s.status == IN_QUEUE]
            if positions and queued:
                ranks = _ranks(conn, queued)
        return [
            JobProgress(s, ranks.get(s.id) if s.status == IN_QUEUE else None, last_log.get(s.id, 0))
            for s in states
        ]

    def logs(self, job_id: str, after_id: int = 0) -> list[LogLine]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(job_logs.c.id, job_logs.c.ts, job_logs.c.level, job_logs.c.message)
                .where(job_logs.c.job_id == job_id, job_logs.c.id > after_id)
                .order_by(job_logs.c.id)
            ).all()
        return [LogLine(r.id, r.ts, r.level, r.message) for r in rows]

    # -- cancel -----------------------------------------------------------------------------------------

    def cancel(self, job_id: str, owner_key_id: str) -> str:
        job = self.get(job_id, owner_key_id)
        if job is None:
            return "not_found"
        if job.status == COMPLETED:
            return "completed"
        with self._db.tx() as conn:
            if self._finish(conn, job, None, failures.REQUEST_CANCELLED, only_if_status=IN_QUEUE):
                return "requested"
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == IN_PROGRESS)
                .values(cancel_requested=True)
            )
        return "requested" if res.rowcount else "completed"

    # -- worker side ------------------------------------------------------------------------------------

    def has_queued(self, endpoint_ids: list[str]) -> bool:
        query = (
            select(jobs.c.seq).where(jobs.c.status == IN_QUEUE, jobs.c.endpoint_id.in_(endpoint_ids)).limit(1)
        )
        with self._db.read() as conn:
            return conn.execute(query).first() is not None

    def claim(
        self, worker_id: str, endpoint_ids: list[str], lease_seconds: float, hint_seconds: float = 0.0
    ) -> Job | None:
        now = time.time()
        with self._db.tx() as conn:
            next_seq = (
                select(jobs.c.seq)
                .where(
                    jobs.c.status == IN_QUEUE,
                    jobs.c.endpoint_id.in_(endpoint_ids),
                    _not_hinted_elsewhere(worker_id, now - hint_seconds),
                )
                .order_by(jobs.c.priority, jobs.c.vt, jobs.c.seq)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            row = conn.execute(
                update(jobs)
                .where(jobs.c.seq == next_seq, jobs.c.status == IN_QUEUE)
                .values(
                    status=IN_PROGRESS,
                    worker_id=worker_id,
                    lease_until=now + lease_seconds,
                    started_at=now,
                    attempts=jobs.c.attempts + 1,
                )
                .returning(*jobs.c)
            ).first()
        return Job.from_row(row) if row else None

    def reap(self, max_attempts: int) -> None:
        now = time.time()
        with self._db.read() as conn:
            late = conn.execute(
                select(jobs).where(jobs.c.status == IN_QUEUE, jobs.c.start_deadline < now).limit(100)
            ).all()
            stale = conn.execute(
                select(jobs).where(jobs.c.status == IN_PROGRESS, jobs.c.lease_until < now).limit(100)
            ).all()
        if not late and not stale:
            return
        with self._db.tx() as conn:
            for row in late:
                self._finish(conn, Job.from_row(row), None, failures.REQUEST_TIMEOUT, only_if_status=IN_QUEUE)
            for row in stale:
                job = Job.from_row(row)
                if job.cancel_requested or job.attempts >= max_attempts:
                    failure = failures.REQUEST_CANCELLED if job.cancel_requested else failures.WORKER_CRASHED
                    self._finish(
                        conn,
                        job,
                        None,
                        failure,
                        only_if_status=IN_PROGRESS,
                        worker_id=job.worker_id,
                        expired_at=now,
                    )
                elif job.no_retry:  # x-fal-no-retry: a lost worker ends the request
                    self._finish(
                        conn,
                        job,
                        None,
                        failures.WORKER_CRASHED,
                        only_if_status=IN_PROGRESS,
                        worker_id=job.worker_id,
                        expired_at=now,
                    )
                elif self._requeue(conn, job, now):
                    _log(
                        conn,
                        job.id,
                        f"worker lost; requeued (attempt {job.attempts} of {max_attempts})",
                        "WARN",
                    )

    @staticmethod
    def _requeue(conn: Connection, job: Job, now: float) -> bool:
        # Re-checked at write time: the lease may have been renewed, or another node's reaper got here first.
        res = conn.execute(
            update(jobs)
            .where(
                jobs.c.id == job.id,
                jobs.c.status == IN_PROGRESS,
                jobs.c.worker_id == job.worker_id,
                jobs.c.lease_until < now,
            )
            .values(status=IN_QUEUE, worker_id=None, lease_until=None, started_at=None)
        )
        return res.rowcount == 1

    def release(self, job: Job, worker_id: str) -> None:
        with self._db.tx() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.status == IN_PROGRESS, jobs.c.worker_id == worker_id)
                .values(
                    status=IN_QUEUE,
                    worker_id=None,
                    lease_until=None,
                    started_at=None,
                    attempts=jobs.c.attempts - 1,
                )
            )

    def retry_later(self, job: Job, worker_id: str, failure: Failure, max_attempts: int) -> bool:
        with self._db.tx() as conn:
            if job.attempts >= max_attempts or job.no_retry:  # x-fal-no-retry: fail now, as for a lost worker
                return self._finish(conn, job, None, failure, only_if_status=IN_PROGRESS, worker_id=worker_id)
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.status == IN_PROGRESS, jobs.c.worker_id == worker_id)
                .values(status=IN_QUEUE, worker_id=None, lease_until=None, started_at=None)
            )
            if res.rowcount == 1:
                note = f"{failure.message}; requeued (attempt {job.attempts} of {max_attempts})"
                _log(conn, job.id, note, "WARN")
        return res.rowcount == 1

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        with self._db.tx() as conn:
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == IN_PROGRESS)
                .values(lease_until=time.time() + lease_seconds)
            )
            touch_worker(conn, worker_id, job_id)  # a busy worker is a live one
        return res.rowcount == 1

    def log(self, job_id: str, message: str, level: str = "INFO") -> None:
        with self._db.tx() as conn:
            _log(conn, job_id, message, level)

    def append_logs(self, job_id: str, lines: list[tuple[str, str]]) -> bool:
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(
                insert(job_logs),
                [{"job_id": job_id, "ts": now, "level": lv, "message": m} for m, lv in lines],
            )
            return bool(conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    def complete(
        self,
        job: Job,
        worker_id: str,
        output: dict[str, Any] | None,
        failure: Failure | None = None,
        inference_time: float | None = None,
        images_checked: int | None = None,
        images_flagged: int | None = None,
    ) -> bool:
        with self._db.tx() as conn:
            return self._finish(
                conn,
                job,
                output,
                failure,
                only_if_status=IN_PROGRESS,
                worker_id=worker_id,
                inference_time=inference_time,
                images_checked=images_checked,
                images_flagged=images_flagged,
            )

    @staticmethod
    def _finish(
        conn: Connection,
        job: Job,
        output: dict[str, Any] | None,
        failure: Failure | None,
        *,
        only_if_status: str,
        worker_id: str | None = None,
        inference_time: float | None = None,
        expired_at: float | None = None,
        images_checked: int | None = None,
        images_flagged: int | None = None,
    ) -> bool:
        where = [jobs.c.id == job.id, jobs.c.status == only_if_status]
        if worker_id is not None:
            where.append(jobs.c.worker_id == worker_id)
        if expired_at is not None:  # only if the lease is still expired now (not renewed since it was read)
            where.append(jobs.c.lease_until < expired_at)
        now = time.time()
        values: dict[str, Any] = dict(
            status=COMPLETED,
            finished_at=now,
            lease_until=None,
            images_checked=images_checked,
            images_flagged=images_flagged,
            outputs_expire_at=literal(now) + jobs.c.output_lifetime,  # NULL unless it has its own lifetime
        )
        if inference_time is not None:
            values["inference_time"] = inference_time
        if failure is None:
            values["output_json"] = json.dumps(output)
        else:
            values.update(
                error=failure.message,
                error_type=failure.error_type,
                error_status=failure.status,
                error_body_json=json.dumps(failure.body()),
            )
        res = conn.execute(update(jobs).where(*where).values(**values))
        if res.rowcount != 1:
            return False
        if job.webhook_url:
            outbox.add(conn, job.id, job.webhook_url)
        if job.runner_hint and worker_id is not None and failure is None:
            _hold_hint(conn, job.runner_hint, worker_id, now)
        return True


def _not_hinted_elsewhere(worker_id: str, since: float) -> ColumnElement[bool]:
    """X-Fal-Runner-Hint, best effort: a job whose hint another worker used since `since` is left to that
    worker (it holds the hint's state); once that window has passed, any worker takes it."""
    held = exists().where(
        runner_hints.c.hint == jobs.c.runner_hint,
        runner_hints.c.worker_id != worker_id,
        runner_hints.c.seen_at > since,
    )
    return or_(jobs.c.runner_hint.is_(None), ~held)


def _hold_hint(conn: Connection, hint: str, worker_id: str, now: float) -> None:
    """Record that `worker_id` now holds `hint`'s state (an upsert, inside the completing transaction)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    row = {"hint": hint, "worker_id": worker_id, "seen_at": now}
    stmt = dialect.insert(runner_hints).values(**row)
    conn.execute(stmt.on_conflict_do_update(index_elements=["hint"], set_=row))


def _virtual_start(conn: Connection, owner_key_id: str, priority: int) -> int:
    """A new job's vt: one turn after the key's last queued job of this priority, but not before the queue's
    current turn (the newest running job's vt, else the oldest queued one's), so that an idle key joins the
    current round instead of replaying the rounds it missed."""
    same_class = jobs.c.priority == priority
    running = select(func.max(jobs.c.vt)).where(jobs.c.status == IN_PROGRESS, same_class)
    clock = conn.execute(running).scalar()
    if clock is None:
        clock = conn.execute(
            select(func.min(jobs.c.vt)).where(jobs.c.status == IN_QUEUE, same_class)
        ).scalar()
    last = conn.execute(
        select(func.max(jobs.c.vt)).where(
            jobs.c.owner_key_id == owner_key_id, jobs.c.status == IN_QUEUE, same_class
        )
    ).scalar()
    return max(int(clock or 0), -1 if last is None else int(last) + 1)


def _ranks(conn: Connection, queued: list[JobState]) -> dict[str, int]:
    """Queue positions of `queued` jobs: their rank in claim order within their endpoint. One pass over the
    queued jobs of those endpoints (bounded by max_queue_total), filtered here rather than by IN (...)."""
    ranked = select(
        jobs.c.id,
        func.row_number().over(
            partition_by=jobs.c.endpoint_id, order_by=(jobs.c.priority, jobs.c.vt, jobs.c.seq)
        ),
    ).where(jobs.c.status == IN_QUEUE, jobs.c.endpoint_id.in_({s.endpoint_id for s in queued}))
    wanted = {s.id for s in queued}
    return {job_id: int(rank) - 1 for job_id, rank in conn.execute(ranked) if job_id in wanted}


def _log(conn: Connection, job_id: str, message: str, level: str) -> None:
    conn.execute(insert(job_logs).values(job_id=job_id, ts=time.time(), level=level, message=message))
