"""The job store: API keys, the queue with leases, logs, results, upload grants and the webhook outbox.

One implementation over SQLAlchemy Core for SQLite (WAL, `BEGIN IMMEDIATE` writes) and PostgreSQL
(`FOR UPDATE SKIP LOCKED` claims). Every method is one short transaction; callers in async code run
them in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Engine, and_, create_engine, event, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from pulid_server.store.cluster import ClusterQueries
from pulid_server.store.migrate import ensure_schema
from pulid_server.store.schema import api_keys, job_logs, jobs, server_values, upload_grants, webhooks

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
_PG_SUBMIT_LOCK = 0x70756C6964 + 1  # advisory lock that makes the queue caps exact across API nodes
PRIORITIES = {"normal": 0, "low": 1}


@dataclass
class Job:
    seq: int
    id: str
    endpoint_id: str
    owner_key_id: str
    status: str
    priority: int
    input_json: str
    base_url: str
    webhook_url: str | None
    idempotency_key: str | None
    created_at: float
    start_deadline: float | None
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    lease_until: float | None
    attempts: int
    cancel_requested: bool
    output_json: str | None
    error: str | None
    error_type: str | None
    error_status: int | None
    error_body_json: str | None
    inference_time: float | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})

    @property
    def input(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.input_json)
        return value


@dataclass
class LogLine:
    id: int
    ts: float
    level: str
    message: str


@dataclass
class Failure:
    """How a job ended badly: replayed by the result route as `error_status` + `body`."""

    message: str
    error_type: str
    status: int
    body: dict[str, Any]


@dataclass
class WebhookTask:
    job: Job
    url: str
    attempts: int


class QueueFull(Exception):
    pass


def _hash_secret(secret: str) -> str:
    # Keys carry >= 128 bits of entropy, so a plain SHA-256 is enough (no bcrypt needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def _engine(url: str, *, writer: bool = True) -> Engine:
    """A pooled engine. On SQLite, `writer` engines open every transaction with BEGIN IMMEDIATE and
    reader engines with a plain (deferred) BEGIN, so that status polls never queue for the write lock."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    # Worker processes are spawned (never forked), so pooled connections are never shared across processes.
    engine = create_engine(
        url, pool_size=8, max_overflow=32, connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a deferred read->write upgrade fails with
        # SQLITE_BUSY at once, ignoring busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class JobStore(ClusterQueries):
    def __init__(self, url: str):
        self.url = url
        self.engine = _engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.read_engine = _engine(url, writer=False) if self.is_sqlite else self.engine
        try:
            ensure_schema(self.engine)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        with self._read() as conn:
            conn.execute(select(1))
        return True

    # -- API keys ---------------------------------------------------------------------------------------

    def create_key(self, name: str = "") -> str:
        key_id, secret = uuid.uuid4().hex, secrets.token_hex(24)
        with self._tx() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id, name=name, secret_hash=_hash_secret(secret), created_at=time.time()
                )
            )
        return f"{key_id}:{secret}"

    def authenticate(self, key: str) -> str | None:
        """Return the key id for a valid, unrevoked `key_id:secret`, else None."""
        key_id, sep, secret = key.partition(":")
        if not sep or not key_id or len(key_id) > 64:
            return None
        with self._read() as conn:
            row = conn.execute(
                select(api_keys.c.secret_hash).where(
                    api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        return key_id if hmac.compare_digest(row.secret_hash, _hash_secret(secret)) else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [
            {
                "key_id": r.key_id,
                "name": r.name,
                "created_at": r.created_at,
                "revoked": r.revoked_at is not None,
            }
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> bool:
        with self._tx() as conn:
            res = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return res.rowcount == 1

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
    ) -> tuple[Job, bool]:
        """Persist a new IN_QUEUE job. Returns (job, created); an idempotent replay returns created=False."""
        if idempotency_key:
            existing = self._find_idempotent(owner_key_id, idempotency_key)
            if existing:
                return existing, False
        now = time.time()
        values = dict(
            id=str(uuid.uuid4()),
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
        )
        try:
            with self._tx() as conn:
                if not self.is_sqlite:
                    # Count-then-insert races between API nodes under READ COMMITTED; one transaction-scoped
                    # lock serializes submits (held for a few ms), as SQLite's single writer already does.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SUBMIT_LOCK})
                queued = select(func.count()).select_from(jobs).where(jobs.c.status == IN_QUEUE)
                if conn.execute(queued).scalar_one() >= max_queue_total:
                    raise QueueFull("the queue is full")
                mine = queued.where(jobs.c.owner_key_id == owner_key_id)
                if conn.execute(mine).scalar_one() >= max_queue_per_key:
                    raise QueueFull("this key has too many queued requests")
                row = conn.execute(insert(jobs).values(**values).returning(*jobs.c)).one()
        except IntegrityError:
            # Two submits raced with the same Idempotency-Key: the other one won.
            existing = self._find_idempotent(owner_key_id, idempotency_key or "")
            if existing is None:
                raise
            return existing, False
        return Job.from_row(row), True

    def _find_idempotent(self, owner_key_id: str, key: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.owner_key_id == owner_key_id, jobs.c.idempotency_key == key)
            ).first()
        return Job.from_row(row) if row else None

    def get(self, job_id: str, owner_key_id: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another key."""
        query = select(jobs).where(jobs.c.id == job_id)
        if owner_key_id is not None:
            query = query.where(jobs.c.owner_key_id == owner_key_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        return Job.from_row(row) if row else None

    def queue_position(self, job: Job) -> int:
        ahead = (
            select(func.count())
            .select_from(jobs)
            .where(
                jobs.c.status == IN_QUEUE,
                jobs.c.endpoint_id == job.endpoint_id,
                or_(
                    jobs.c.priority < job.priority,
                    and_(jobs.c.priority == job.priority, jobs.c.seq < job.seq),
                ),
            )
        )
        with self._read() as conn:
            return int(conn.execute(ahead).scalar_one())

    def logs(self, job_id: str, after_id: int = 0) -> list[LogLine]:
        with self._read() as conn:
            rows = conn.execute(
                select(job_logs.c.id, job_logs.c.ts, job_logs.c.level, job_logs.c.message)
                .where(job_logs.c.job_id == job_id, job_logs.c.id > after_id)
                .order_by(job_logs.c.id)
            ).all()
        return [LogLine(r.id, r.ts, r.level, r.message) for r in rows]

    # -- cancel -----------------------------------------------------------------------------------------

    def cancel(self, job_id: str, owner_key_id: str) -> str:
        """'requested' (queued jobs end at once, running ones stop at the next step), 'completed' or 'not_found'."""
        job = self.get(job_id, owner_key_id)
        if job is None:
            return "not_found"
        if job.status == COMPLETED:
            return "completed"
        failure = Failure("Request was cancelled", "request_cancelled", 400, {})
        with self._tx() as conn:
            if self._finish(conn, job, None, failure, only_if_status=IN_QUEUE):
                return "requested"
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == IN_PROGRESS)
                .values(cancel_requested=True)
            )
        return "requested" if res.rowcount else "completed"

    # -- worker side ------------------------------------------------------------------------------------

    def has_queued(self, endpoint_ids: list[str]) -> bool:
        """Cheap read used by idle workers so that polling takes no write lock."""
        query = (
            select(jobs.c.seq).where(jobs.c.status == IN_QUEUE, jobs.c.endpoint_id.in_(endpoint_ids)).limit(1)
        )
        with self._read() as conn:
            return conn.execute(query).first() is not None

    def claim(self, worker_id: str, endpoint_ids: list[str], lease_seconds: float) -> Job | None:
        """Take the next queued job (priority, then FIFO) with a lease."""
        now = time.time()
        with self._tx() as conn:
            next_seq = (
                select(jobs.c.seq)
                .where(jobs.c.status == IN_QUEUE, jobs.c.endpoint_id.in_(endpoint_ids))
                .order_by(jobs.c.priority, jobs.c.seq)
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
        """Fail queued jobs past their start deadline; requeue (or fail) running jobs whose lease expired."""
        now = time.time()
        with self._read() as conn:
            late = conn.execute(
                select(jobs).where(jobs.c.status == IN_QUEUE, jobs.c.start_deadline < now).limit(100)
            ).all()
            stale = conn.execute(
                select(jobs).where(jobs.c.status == IN_PROGRESS, jobs.c.lease_until < now).limit(100)
            ).all()
        if not late and not stale:
            return
        timeout = Failure("Request timed out before it started", "request_timeout", 504, {})
        crashed = Failure("The worker died while running this request", "worker_crashed", 503, {})
        with self._tx() as conn:
            for row in late:
                self._finish(conn, Job.from_row(row), None, timeout, only_if_status=IN_QUEUE)
            for row in stale:
                job = Job.from_row(row)
                if job.cancel_requested or job.attempts >= max_attempts:
                    failure = crashed
                    if job.cancel_requested:
                        failure = Failure("Request was cancelled", "request_cancelled", 400, {})
                    self._finish(
                        conn,
                        job,
                        None,
                        failure,
                        only_if_status=IN_PROGRESS,
                        worker_id=job.worker_id,
                        expired_at=now,
                    )
                elif self._requeue(conn, job, now):
                    self._log(
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
        """Give a running job back to the queue (graceful shutdown) without counting the attempt."""
        with self._tx() as conn:
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

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease. False when the job is no longer ours (finished, cancelled, reclaimed)."""
        with self._tx() as conn:
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == IN_PROGRESS)
                .values(lease_until=time.time() + lease_seconds)
            )
            self._touch_worker(conn, worker_id, job_id)  # a busy worker is a live one
        return res.rowcount == 1

    def log(self, job_id: str, message: str, level: str = "INFO") -> None:
        with self._tx() as conn:
            self._log(conn, job_id, message, level)

    def append_logs(self, job_id: str, lines: list[tuple[str, str]]) -> bool:
        """Write (message, level) lines in one transaction; return whether the user asked to cancel."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                insert(job_logs),
                [{"job_id": job_id, "ts": now, "level": lv, "message": m} for m, lv in lines],
            )
            return bool(conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    @staticmethod
    def _log(conn: Connection, job_id: str, message: str, level: str) -> None:
        conn.execute(insert(job_logs).values(job_id=job_id, ts=time.time(), level=level, message=message))

    def complete(
        self,
        job: Job,
        worker_id: str,
        output: dict[str, Any] | None,
        failure: Failure | None = None,
        inference_time: float | None = None,
    ) -> bool:
        """Record the end of a job we hold. False if our lease was lost (someone else owns it now)."""
        with self._tx() as conn:
            return self._finish(
                conn,
                job,
                output,
                failure,
                only_if_status=IN_PROGRESS,
                worker_id=worker_id,
                inference_time=inference_time,
            )

    def _finish(
        self,
        conn: Connection,
        job: Job,
        output: dict[str, Any] | None,
        failure: Failure | None,
        *,
        only_if_status: str,
        worker_id: str | None = None,
        inference_time: float | None = None,
        expired_at: float | None = None,
    ) -> bool:
        where = [jobs.c.id == job.id, jobs.c.status == only_if_status]
        if worker_id is not None:
            where.append(jobs.c.worker_id == worker_id)
        if expired_at is not None:  # only if the lease is still expired now (not renewed since it was read)
            where.append(jobs.c.lease_until < expired_at)
        values: dict[str, Any] = dict(status=COMPLETED, finished_at=time.time(), lease_until=None)
        if inference_time is not None:
            values["inference_time"] = inference_time
        if failure is None:
            values["output_json"] = json.dumps(output)
        else:
            body = {"detail": failure.message, "error_type": failure.error_type, **failure.body}
            values.update(
                error=failure.message,
                error_type=failure.error_type,
                error_status=failure.status,
                error_body_json=json.dumps(body),
            )
        res = conn.execute(update(jobs).where(*where).values(**values))
        if res.rowcount != 1:
            return False
        if job.webhook_url:
            conn.execute(
                insert(webhooks).values(
                    job_id=job.id, url=job.webhook_url, state="pending", next_attempt_at=time.time()
                )
            )
        return True

    # -- webhook outbox -----------------------------------------------------------------------------------

    def claim_webhook(self, lease_seconds: float) -> WebhookTask | None:
        now = time.time()
        due_now = (
            webhooks.c.state == "pending",
            webhooks.c.next_attempt_at <= now,
            or_(webhooks.c.lease_until.is_(None), webhooks.c.lease_until < now),
        )
        with self._read() as conn:  # the idle poll must not take SQLite's write lock (it stalls workers)
            if conn.execute(select(webhooks.c.job_id).where(*due_now).limit(1)).first() is None:
                return None
        with self._tx() as conn:
            due = (
                select(webhooks.c.job_id)
                .where(*due_now)
                .order_by(webhooks.c.next_attempt_at)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            row = conn.execute(
                update(webhooks)
                .where(webhooks.c.job_id == due)
                .values(lease_until=now + lease_seconds, attempts=webhooks.c.attempts + 1)
                .returning(webhooks.c.job_id, webhooks.c.url, webhooks.c.attempts)
            ).first()
            if row is None:
                return None
            job_row = conn.execute(select(jobs).where(jobs.c.id == row.job_id)).one()
        return WebhookTask(Job.from_row(job_row), row.url, row.attempts)

    def webhook_done(
        self, job_id: str, *, delivered: bool, error: str | None, retry_at: float | None
    ) -> None:
        state = "delivered" if delivered else ("pending" if retry_at is not None else "dead")
        with self._tx() as conn:
            conn.execute(
                update(webhooks)
                .where(webhooks.c.job_id == job_id)
                .values(
                    state=state, last_error=error, lease_until=None, next_attempt_at=retry_at or time.time()
                )
            )

    def webhook_state(self, job_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(webhooks).where(webhooks.c.job_id == job_id)).first()
        return dict(row._mapping) if row else None

    # -- upload grants --------------------------------------------------------------------------------------

    def grant_upload(
        self, owner_key_id: str, ttl: float, file_key: str | None = None, content_type: str | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        with self._tx() as conn:
            conn.execute(
                insert(upload_grants).values(
                    token_hash=_hash_secret(token),
                    owner_key_id=owner_key_id,
                    file_key=file_key,
                    content_type=content_type,
                    expires_at=time.time() + ttl,
                )
            )
        return token

    def check_upload_grant(self, token: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                select(upload_grants).where(
                    upload_grants.c.token_hash == _hash_secret(token),
                    upload_grants.c.expires_at > time.time(),
                )
            ).first()
        return dict(row._mapping) if row else None

    # -- shared server values & stats ------------------------------------------------------------------------

    def server_value(self, name: str, make: Any) -> str:
        """Get a shared value, creating it with `make()` once (first writer wins across nodes)."""
        with self._read() as conn:
            value = conn.execute(select(server_values.c.value).where(server_values.c.name == name)).scalar()
        if value is not None:
            return str(value)
        try:
            with self._tx() as conn:
                conn.execute(insert(server_values).values(name=name, value=make()))
        except IntegrityError:
            pass
        return self.server_value(name, make)
