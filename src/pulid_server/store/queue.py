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

import functools
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Update,
    bindparam,
    exists,
    func,
    insert,
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
from pulid_server.store import driver, outbox
from pulid_server.store.cluster import touch_worker
from pulid_server.store.database import Database
from pulid_server.store.records import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    Finished,
    Job,
    JobProgress,
    JobState,
    LogLine,
    QueueFull,
    StorageFull,
    Submission,
    field_names,
    result_columns,
)
from pulid_server.store.retention import OWN_OUTPUT_LIFETIME
from pulid_server.store.schema import job_logs, jobs, runner_hints

_PG_SUBMIT_LOCK = 0x70756C6964 + 1  # advisory lock that makes the queue caps exact across API nodes
_STATE_COLUMNS = [jobs.c[name] for name in field_names(JobState)]
_CHUNK = 500  # ids per IN (...) list: well under every backend's bound on query parameters

# The statements of a job's hot path, built once: building one costs more than running it on SQLite.
_INSERT = insert(jobs).returning(*jobs.c)
_GET = select(jobs).where(jobs.c.id == bindparam("id"))
_GET_OWNED = _GET.where(jobs.c.owner_key_id == bindparam("owner"))
_STATE = select(*_STATE_COLUMNS).where(jobs.c.id == bindparam("id"))
_STATE_OWNED = _STATE.where(jobs.c.owner_key_id == bindparam("owner"))
_IDEMPOTENT = select(jobs).where(
    jobs.c.owner_key_id == bindparam("owner"), jobs.c.idempotency_key == bindparam("key")
)
_LAST_LOG = select(func.max(job_logs.c.id).label("last")).where(job_logs.c.job_id == bindparam("id"))
_LOG = insert(job_logs)
_CANCEL_REQUESTED = select(jobs.c.cancel_requested).where(jobs.c.id == bindparam("id"))
_BEAT = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job"), jobs.c.worker_id == bindparam("worker"), jobs.c.status == IN_PROGRESS
    )
    .values(lease_until=bindparam("until"))
)


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
        sub = Submission(
            endpoint_id=endpoint_id,
            owner_key_id=owner_key_id,
            input_json=input_json,
            base_url=base_url,
            priority=priority,
            webhook_url=webhook_url,
            start_timeout=start_timeout,
            idempotency_key=idempotency_key,
            max_queue_per_key=max_queue_per_key,
            max_queue_total=max_queue_total,
            max_endpoint_queue=max_endpoint_queue,
            runner_hint=runner_hint,
            no_retry=no_retry,
            store_io=store_io,
            output_lifetime=output_lifetime,
            job_id=job_id,
        )
        result = self.submit_many([sub])[0]
        if isinstance(result, QueueFull):
            raise result
        return result

    def submit_many(
        self, subs: list[Submission], *, sync_later: bool = False
    ) -> list[tuple[Job, bool] | QueueFull]:
        """Group commit: every submission in one transaction, one sync to disk for all of them. A
        submission that fails on its own (a database error) sends the batch back one by one."""
        lazy = not any(sub.durable for sub in subs) or (sync_later and self._db.syncs_later)
        try:
            with self._db.tx(lazy=lazy) as conn:
                if not self._db.is_sqlite:
                    # Count-then-insert races between API nodes under READ COMMITTED; one transaction-scoped
                    # lock serializes submits (held for a few ms), as SQLite's single writer already does.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SUBMIT_LOCK})
                return [_submit(conn, sub) for sub in subs]
        except Exception as exc:
            if len(subs) > 1 and not isinstance(exc, StorageFull):
                return [self.submit_many([sub], sync_later=sync_later)[0] for sub in subs]
            if isinstance(exc, IntegrityError) and subs[0].idempotency_key:
                # Two submits raced with the same Idempotency-Key on another node: the other one won.
                existing = self._find_idempotent(subs[0].owner_key_id, subs[0].idempotency_key)
                if existing is not None:
                    return [(existing, False)]
            raise

    def sync(self) -> None:
        self._db.sync()

    def _find_idempotent(self, owner_key_id: str, key: str) -> Job | None:
        row = self._db.first(_IDEMPOTENT, {"owner": owner_key_id, "key": key})
        return Job.from_mapping(row) if row else None

    def get(self, job_id: str, owner_key_id: str | None = None) -> Job | None:
        row = self._db.first(*_by_id(_GET, _GET_OWNED, job_id, owner_key_id))
        return Job.from_mapping(row) if row else None

    def state(self, job_id: str, owner_key_id: str | None = None) -> JobState | None:
        row = self._db.first(*_by_id(_STATE, _STATE_OWNED, job_id, owner_key_id))
        return JobState.from_mapping(row) if row else None

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

    def progress_of(self, job_id: str) -> JobProgress | None:
        state = self.state(job_id)
        if state is None:
            return None
        last = self._db.first(_LAST_LOG, {"id": job_id})
        return JobProgress(state, None, (last or {}).get("last") or 0)

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
        return self._db.first(_has_queued(tuple(endpoint_ids)), {}) is not None

    def claim(
        self, worker_id: str, endpoint_ids: list[str], lease_seconds: float, hint_seconds: float = 0.0
    ) -> Job | None:
        with self._db.tx(lazy=True) as conn:  # a claim lost to a power loss only runs the job again
            return _claim(conn, worker_id, endpoint_ids, lease_seconds, hint_seconds)

    def expire_leases(self, worker_id: str) -> None:
        with self._db.tx(lazy=True) as conn:  # lost to a power loss: the leases expire on their own
            conn.execute(
                update(jobs)
                .where(jobs.c.worker_id == worker_id, jobs.c.status == IN_PROGRESS)
                .values(lease_until=time.time())
            )

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
        with self._db.tx(lazy=True) as conn:
            params = {"job": job_id, "worker": worker_id, "until": time.time() + lease_seconds}
            beaten = driver.run(conn, _BEAT, params)
            touch_worker(conn, worker_id, job_id)  # a busy worker is a live one
        return beaten == 1

    def log(self, job_id: str, message: str, level: str = "INFO") -> None:
        with self._db.tx(lazy=True) as conn:
            _log(conn, job_id, message, level)

    def append_logs(self, job_id: str, lines: list[tuple[str, str]]) -> bool:
        with self._db.tx(lazy=True) as conn:  # a log line lost to a power loss is only a log line
            _append_logs(conn, job_id, lines)
            row = driver.first(conn, _CANCEL_REQUESTED, {"id": job_id})
            return bool(row and row["cancel_requested"])

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
        done = Finished(
            job, output, failure, inference_time, images_checked=images_checked, images_flagged=images_flagged
        )
        return self.finish_and_claim([done], worker_id)[0][0]

    def finish_and_claim(
        self,
        finished: list[Finished],
        worker_id: str,
        endpoint_ids: list[str] | None = None,
        lease_seconds: float = 0.0,
        limit: int = 1,
        hint_seconds: float = 0.0,
        *,
        sync_later: bool = False,
    ) -> tuple[list[bool], list[Job]]:
        # A sync /run's result goes to its caller in the response; its row need not wait for the disk.
        lazy = not any(f.job.durable for f in finished) or (sync_later and self._db.syncs_later)
        with self._db.tx(lazy=lazy) as conn:
            done = []
            for f in finished:
                if f.logs:
                    _append_logs(conn, f.job.id, f.logs)
                done.append(
                    self._finish(
                        conn,
                        f.job,
                        f.output,
                        f.failure,
                        only_if_status=IN_PROGRESS,
                        worker_id=worker_id,
                        inference_time=f.inference_time,
                        images_checked=f.images_checked,
                        images_flagged=f.images_flagged,
                        columns=f.columns,
                    )
                )
            following: list[Job] = []
            while endpoint_ids and len(following) < limit:
                job = _claim(conn, worker_id, endpoint_ids, lease_seconds, hint_seconds)
                if job is None:
                    break
                following.append(job)
        return done, following

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
        columns: dict[str, Any] | None = None,
    ) -> bool:
        now = time.time()
        # The SET clause is the statement's, plus the keys of `values` that name columns: one statement
        # of four, built once.
        values: dict[str, Any] = dict(
            job=job.id,
            only_if=only_if_status,
            holder=worker_id,
            expired_at=expired_at,  # only if the lease is still expired now (not renewed since it was read)
            finished_now=now,
            status=COMPLETED,
            finished_at=now,
            lease_until=None,
            images_checked=images_checked,
            images_flagged=images_flagged,
        )
        if inference_time is not None:
            values["inference_time"] = inference_time
        values.update(columns if columns is not None else result_columns(output, failure))
        if driver.run(conn, _FINISH[worker_id is not None, expired_at is not None], values) != 1:
            return False
        if job.webhook_url:
            outbox.add(conn, job.id, job.webhook_url)
        if job.runner_hint and worker_id is not None and failure is None:
            _hold_hint(conn, job.runner_hint, worker_id, now)
        return True


def _not_hinted_elsewhere(worker_id: Any, since: Any) -> ColumnElement[bool]:
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


def _submit(conn: Connection, sub: Submission) -> tuple[Job, bool] | QueueFull:
    """One submission inside the submit transaction: an idempotent replay, a refusal, or a new job."""
    if sub.idempotency_key:  # inside the transaction: a replay in the same batch sees the first one
        found = driver.first(conn, _IDEMPOTENT, {"owner": sub.owner_key_id, "key": sub.idempotency_key})
        if found:
            return Job.from_mapping(found), False
    params = {"owner": sub.owner_key_id, "priority": sub.priority, "endpoint": sub.endpoint_id}
    counts = driver.first(conn, _SUBMIT_VIEW, params)
    assert counts is not None  # an aggregate: always one row
    if counts["queued"] >= sub.max_queue_total:
        return QueueFull("the queue is full")
    if counts["mine"] >= sub.max_queue_per_key:
        return QueueFull("this key has too many queued requests")
    if sub.max_endpoint_queue is not None and counts["endpoint"] >= sub.max_endpoint_queue:
        return QueueFull(
            f"the queue of {sub.endpoint_id} is longer than fal_max_queue_length={sub.max_endpoint_queue}"
        )
    row = driver.first(conn, _INSERT, _new_row(sub, time.time(), _virtual_start(counts)))
    assert row is not None  # RETURNING the new row
    return Job.from_mapping(row), True


def handed_job(sub: Submission) -> Job:
    """The job `sub` (with its `job_id` and `worker_id`) will be once stored, for the worker it is handed to
    before that (api/queue.py); its `seq` and `vt`, known only once stored, are 0: a worker never reads them."""
    row = defaultdict(lambda: None, _new_row(sub, time.time(), 0), seq=0)  # the columns it leaves NULL: None
    return Job.from_mapping(row)


def _new_row(sub: Submission, now: float, vt: int) -> dict[str, Any]:
    """A new job's columns, claimed already by `sub.worker_id` when it is handed to that worker."""
    lifetime = sub.output_lifetime
    handed = sub.worker_id is not None
    return dict(
        id=sub.job_id or str(uuid.uuid4()),
        endpoint_id=sub.endpoint_id,
        owner_key_id=sub.owner_key_id,
        status=IN_PROGRESS if handed else IN_QUEUE,
        worker_id=sub.worker_id,
        lease_until=now + sub.lease_seconds if handed else None,
        started_at=now if handed else None,
        attempts=1 if handed else 0,
        priority=sub.priority,
        vt=vt,
        input_json=sub.input_json,
        base_url=sub.base_url,
        webhook_url=sub.webhook_url,
        idempotency_key=sub.idempotency_key,
        created_at=now,
        start_deadline=now + sub.start_timeout if sub.start_timeout else None,
        cancel_requested=False,
        runner_hint=sub.runner_hint,
        no_retry=sub.no_retry,
        store_io=sub.store_io,
        # Its own lifetime for its outputs (NULL with the bit: never); without the bit, the node's clock.
        output_lifetime=lifetime if lifetime and math.isfinite(lifetime) else None,
        retention=0 if lifetime is None else OWN_OUTPUT_LIFETIME,
        durable=sub.durable,
    )


def _by_id(any_owner: Any, owned: Any, job_id: str, owner_key_id: str | None) -> tuple[Any, dict[str, Any]]:
    if owner_key_id is None:
        return any_owner, {"id": job_id}
    return owned, {"id": job_id, "owner": owner_key_id}


def _claim(
    conn: Connection, worker_id: str, endpoint_ids: list[str], lease_seconds: float, hint_seconds: float
) -> Job | None:
    now = time.time()
    params = {
        "worker": worker_id,
        "since": now - hint_seconds,
        "until": now + lease_seconds,
        "now": now,
    }
    row = driver.first(conn, _claim_statement(tuple(endpoint_ids)), params)
    return Job.from_mapping(row) if row else None


def _submit_view() -> Select[int, int, int, Any, Any, Any]:
    """What a submit checks, in one pass over the unfinished jobs: the queue caps, and the virtual times
    `_virtual_start` needs (the newest running job's, the oldest queued one's, this key's last queued one's)."""
    queued, running = jobs.c.status == IN_QUEUE, jobs.c.status == IN_PROGRESS
    mine, same_class = jobs.c.owner_key_id == bindparam("owner"), jobs.c.priority == bindparam("priority")
    return select(
        func.count().filter(queued).label("queued"),
        func.count().filter(queued & mine).label("mine"),
        func.count().filter(queued & (jobs.c.endpoint_id == bindparam("endpoint"))).label("endpoint"),
        func.max(jobs.c.vt).filter(running & same_class).label("running_vt"),
        func.min(jobs.c.vt).filter(queued & same_class).label("queued_vt"),
        func.max(jobs.c.vt).filter(queued & same_class & mine).label("last_vt"),
    ).where(queued | running)  # (not IN (...): store/driver.py runs it)


_SUBMIT_VIEW = _submit_view()


def _virtual_start(counts: Mapping[str, Any]) -> int:
    """A new job's vt: one turn after the key's last queued job of this priority, but not before the queue's
    current turn (the newest running job's vt, else the oldest queued one's), so that an idle key joins the
    current round instead of replaying the rounds it missed."""
    clock = counts["running_vt"] if counts["running_vt"] is not None else counts["queued_vt"]
    last = counts["last_vt"]
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


def _append_logs(conn: Connection, job_id: str, lines: list[tuple[str, str]]) -> None:
    now = time.time()
    driver.run_many(conn, _LOG, [{"job_id": job_id, "ts": now, "level": lv, "message": m} for m, lv in lines])


def _log(conn: Connection, job_id: str, message: str, level: str) -> None:
    _append_logs(conn, job_id, [(message, level)])


@functools.cache
def _claim_statement(endpoint_ids: tuple[str, ...]) -> Update:
    """The claim of the next job of these endpoints, one statement per set of endpoints (a worker's are
    fixed), with no IN (...) list to expand: store/driver.py runs it."""
    return (
        update(jobs)
        .where(
            jobs.c.seq
            == (
                select(jobs.c.seq)
                .where(
                    jobs.c.status == IN_QUEUE,
                    _one_of(endpoint_ids),
                    _not_hinted_elsewhere(bindparam("worker"), bindparam("since")),
                )
                .order_by(jobs.c.priority, jobs.c.vt, jobs.c.seq)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            ),
            jobs.c.status == IN_QUEUE,
        )
        .values(
            status=IN_PROGRESS,
            worker_id=bindparam("worker"),
            lease_until=bindparam("until"),
            started_at=bindparam("now"),
            attempts=jobs.c.attempts + 1,
        )
        .returning(*jobs.c)
    )


@functools.cache
def _has_queued(endpoint_ids: tuple[str, ...]) -> Select[tuple[int]]:
    return select(jobs.c.seq).where(jobs.c.status == IN_QUEUE, _one_of(endpoint_ids)).limit(1)


def _one_of(endpoint_ids: tuple[str, ...]) -> ColumnElement[bool]:
    return or_(*(jobs.c.endpoint_id == endpoint_id for endpoint_id in endpoint_ids))


_FINISH = {
    (holder, expired): update(jobs)
    .where(
        jobs.c.id == bindparam("job"),
        jobs.c.status == bindparam("only_if"),
        *([jobs.c.worker_id == bindparam("holder")] if holder else []),
        *([jobs.c.lease_until < bindparam("expired_at")] if expired else []),
    )
    .values(outputs_expire_at=bindparam("finished_now") + jobs.c.output_lifetime)  # NULL without its own
    for holder in (False, True)
    for expired in (False, True)
}
