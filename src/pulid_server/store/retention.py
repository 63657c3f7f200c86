"""Data retention: which finished jobs, output files, payloads and uploads have expired, each claimed by one
pruner at a time (any API node, or `pulid prune`), in short transactions.

A pruner claims a batch (`claim`: a lease in `prune_until`), deletes the batch's files from the blob store
outside any transaction, then `finish`es it: only rows still holding its claim are changed, so when two
nodes prune at once each row is deleted (and counted) once, and a pruner that died mid-batch leaves rows
that the next one takes over once the lease has passed. Queued and running jobs are never candidates:
only COMPLETED jobs have a `finished_at`.

What is gone is kept as bits in `jobs.retention`, so that every range the pruner reads is an index range
(`ix_jobs_retention`: bits, then finished_at) that shrinks as it works: OUTPUTS_GONE and PAYLOAD_GONE,
and OWN_OUTPUT_LIFETIME for outputs that follow the request's own lifetime (`outputs_expire_at`) instead
of the node's clock. A finished job whose outputs outlive the node's job retention keeps its row until
they are gone (their lifetime is the row's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    delete,
    exists,
    insert,
    or_,
    select,
    text,
    update,
)

from pulid_server.store.database import Database
from pulid_server.store.records import COMPLETED, Expired, RetentionPolicy
from pulid_server.store.schema import job_logs, jobs, runner_hints, upload_grants, uploads, webhooks

OUTPUTS_GONE, PAYLOAD_GONE, OWN_OUTPUT_LIFETIME = 1, 2, 4
_ALL_STATES = range(8)
KINDS = ("job", "outputs", "payload", "upload")  # the order of a pass: a deleted job takes all its parts
UPLOAD_STORED, UPLOAD_OWN_LIFETIME, UPLOAD_DELETED = 0, 1, 2
GRANT_GRACE_SECONDS = 3600.0  # expired upload grants stay this long (no use: they are refused already)
HINT_ROW_SECONDS = 3600.0  # runner hint rows older than this are deleted (they no longer route anything)


def _states(*, lacking: int = 0, unless: tuple[int, int] | None = None) -> list[int]:
    """The `retention` values without the bits `lacking`, and (`unless` = (mask, value)) not matching."""
    return [s for s in _ALL_STATES if not s & lacking and (unless is None or s & unless[0] != unless[1])]


@dataclass(frozen=True)
class PruneClaim:
    """A batch one pruner holds until `finish`: the items and the lease value that marks them."""

    kind: str
    token: float
    items: list[Expired] = field(default_factory=list)


class SqlRetention:
    def __init__(self, db: Database):
        self._db = db

    # -- what a request or upload asked for -------------------------------------------------------------

    def record_upload(self, file_key: str, owner_key_id: str, lifetime: float | None = None) -> None:
        now = time.time()
        state = UPLOAD_STORED if lifetime is None else UPLOAD_OWN_LIFETIME
        expire_at = None if lifetime is None or math.isinf(lifetime) else now + lifetime
        with self._db.tx() as conn:
            conn.execute(
                insert(uploads).values(
                    file_key=file_key,
                    owner_key_id=owner_key_id,
                    created_at=now,
                    state=state,
                    expire_at=expire_at,
                )
            )

    def result_delivered(self, job_id: str) -> bool:
        now = time.time()
        with self._db.tx() as conn:
            res = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.store_io.is_(False),
                    jobs.c.status == COMPLETED,
                    jobs.c.payload_expire_at.is_(None),
                    jobs.c.retention.in_(_states(lacking=PAYLOAD_GONE)),
                )
                .values(payload_expire_at=now)
            )
        return res.rowcount == 1

    def forget_request(self, job_id: str) -> bool:
        with self._db.tx() as conn:
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == COMPLETED)
                .values(
                    **_PAYLOAD_CLEARED,
                    retention=jobs.c.retention.op("|")(OUTPUTS_GONE | PAYLOAD_GONE),
                    outputs_expire_at=None,
                )
            )
        return res.rowcount == 1

    # -- what is gone -----------------------------------------------------------------------------------

    def job_retention(self, job_id: str) -> int | None:
        with self._db.read() as conn:
            value = conn.execute(select(jobs.c.retention).where(jobs.c.id == job_id)).scalar()
        return None if value is None else int(value)

    def database_bytes(self) -> int:
        with self._db.read() as conn:
            if self._db.is_sqlite:  # pages in use and free ones: the file's size, short of its WAL
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                return int(pages) * int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())

    def upload_deleted(self, file_key: str) -> bool:
        query = select(uploads.c.state).where(uploads.c.file_key == file_key)
        with self._db.read() as conn:
            return conn.execute(query).scalar() == UPLOAD_DELETED

    # -- pruning ----------------------------------------------------------------------------------------

    def expired(self, kind: str, policy: RetentionPolicy, limit: int) -> list[Expired]:
        now = time.time()
        with self._db.read() as conn:
            return _candidates(conn, kind, policy, now, limit, lock=False)

    def claim(self, kind: str, policy: RetentionPolicy, limit: int, lease_seconds: float) -> PruneClaim:
        now = time.time()
        token = now + lease_seconds
        table = uploads if kind == "upload" else jobs
        key = table.c.file_key if kind == "upload" else table.c.id
        with self._db.tx() as conn:
            found = _candidates(conn, kind, policy, now, limit, lock=True)
            if not found:
                return PruneClaim(kind, token)
            claimed = conn.execute(
                update(table)
                .where(key.in_([e.ref for e in found]), _unclaimed(table, now))
                .values(prune_until=token)
                .returning(key)
            )
            mine = set(claimed.scalars())
        return PruneClaim(kind, token, [e for e in found if e.ref in mine])

    def finish(self, claim: PruneClaim) -> dict[str, int]:
        """Apply a claim whose files are deleted; rows another pruner has taken over are left alone."""
        refs = [e.ref for e in claim.items]
        if not refs:
            return {}
        with self._db.tx() as conn:
            if claim.kind == "upload":
                res = conn.execute(
                    update(uploads)
                    .where(uploads.c.file_key.in_(refs), uploads.c.prune_until == claim.token)
                    .values(state=UPLOAD_DELETED, expire_at=None, prune_until=None)
                )
                return {"uploads": res.rowcount}
            held = (jobs.c.id.in_(refs), jobs.c.prune_until == claim.token, jobs.c.status == COMPLETED)
            if claim.kind == "job":
                deleted = list(conn.execute(delete(jobs).where(*held).returning(jobs.c.id)).scalars())
                logs = conn.execute(delete(job_logs).where(job_logs.c.job_id.in_(deleted))).rowcount
                hooks = conn.execute(delete(webhooks).where(webhooks.c.job_id.in_(deleted))).rowcount
                return {"jobs": len(deleted), "job_logs": logs, "webhooks": hooks}
            values: dict[str, Any] = {"prune_until": None}
            if claim.kind == "outputs":
                values.update(retention=jobs.c.retention.op("|")(OUTPUTS_GONE), outputs_expire_at=None)
            else:
                values.update(**_PAYLOAD_CLEARED, retention=jobs.c.retention.op("|")(PAYLOAD_GONE))
            res = conn.execute(update(jobs).where(*held).values(**values))
            return {"outputs" if claim.kind == "outputs" else "payloads": res.rowcount}

    def housekeeping(self, policy: RetentionPolicy, limit: int) -> dict[str, int]:
        """Delete rows that hold no files: expired upload grants, stale runner hints, and the tombstones of
        deleted uploads once job rows of their age are gone too."""
        now = time.time()
        counts = {
            "upload_grants": self._delete_batch(
                upload_grants,
                upload_grants.c.token_hash,
                upload_grants.c.expires_at < now - GRANT_GRACE_SECONDS,
                limit,
            ),
            "runner_hints": self._delete_batch(
                runner_hints, runner_hints.c.hint, runner_hints.c.seen_at < now - HINT_ROW_SECONDS, limit
            ),
        }
        if math.isfinite(policy.jobs):
            tombstones = (uploads.c.state == UPLOAD_DELETED) & (uploads.c.created_at < now - policy.jobs)
            counts["upload_tombstones"] = self._delete_batch(uploads, uploads.c.file_key, tombstones, limit)
        return counts

    def _delete_batch(self, table: Table, key: Any, condition: ColumnElement[bool], limit: int) -> int:
        with self._db.tx() as conn:
            batch = select(key).where(condition).limit(limit).scalar_subquery()
            return int(conn.execute(delete(table).where(key.in_(batch))).rowcount)


_PAYLOAD_CLEARED: dict[str, Any] = {
    "input_json": "null",
    "output_json": None,
    "error_body_json": None,
    "payload_expire_at": None,
}


def _unclaimed(table: Table, now: float) -> ColumnElement[bool]:
    return or_(table.c.prune_until.is_(None), table.c.prune_until < now)


def _no_pending_webhook() -> ColumnElement[bool]:
    """A delivery still being tried needs its job's payload (its body is built from the row)."""
    return ~exists().where(webhooks.c.job_id == jobs.c.id, webhooks.c.state == "pending")


def _candidates(
    conn: Connection, kind: str, policy: RetentionPolicy, now: float, limit: int, *, lock: bool
) -> list[Expired]:
    """Due items of `kind`, oldest first: one query per clock (the node's, then the item's own)."""
    found: list[Expired] = []
    for query in _due_queries(kind, policy, now):
        if len(found) >= limit:
            break
        query = query.limit(limit - len(found))
        if lock:  # PostgreSQL: skip rows another pruner is claiming right now (SQLite has one writer)
            query = query.with_for_update(skip_locked=True)
        found += [Expired(kind, ref, int(bits)) for ref, bits in conn.execute(query)]
    return found


def _due_queries(kind: str, policy: RetentionPolicy, now: float) -> Sequence[Select[Any]]:
    if kind == "upload":
        free_upload = _unclaimed(uploads, now)
        mine = select(uploads.c.file_key, uploads.c.state)
        own = mine.where(uploads.c.state == UPLOAD_OWN_LIFETIME, uploads.c.expire_at <= now, free_upload)
        if not math.isfinite(policy.uploads):
            return [own.order_by(uploads.c.expire_at)]
        stored = mine.where(
            uploads.c.state == UPLOAD_STORED, uploads.c.created_at <= now - policy.uploads, free_upload
        )
        return [stored.order_by(uploads.c.created_at), own.order_by(uploads.c.expire_at)]
    base = select(jobs.c.id, jobs.c.retention).where(jobs.c.status == COMPLETED, _unclaimed(jobs, now))
    by_age = base.order_by(jobs.c.finished_at)

    def aged(seconds: float, states: list[int]) -> list[Select[Any]]:
        if not math.isfinite(seconds):
            return []
        return [by_age.where(jobs.c.retention.in_(states), jobs.c.finished_at <= now - seconds)]

    if kind == "job":  # a row whose outputs follow their own, later expiry stays until they are gone
        own_pending = (OWN_OUTPUT_LIFETIME | OUTPUTS_GONE, OWN_OUTPUT_LIFETIME)
        return [q.where(_no_pending_webhook()) for q in aged(policy.jobs, _states(unless=own_pending))]
    if kind == "outputs":
        own = base.where(jobs.c.outputs_expire_at <= now).order_by(jobs.c.outputs_expire_at)
        return [*aged(policy.outputs, _states(lacking=OUTPUTS_GONE | OWN_OUTPUT_LIFETIME)), own]
    if kind == "payload":
        delivered = base.where(jobs.c.payload_expire_at <= now).order_by(jobs.c.payload_expire_at)
        on_clock = [
            q.where(_no_pending_webhook()) for q in aged(policy.payloads, _states(lacking=PAYLOAD_GONE))
        ]
        return [*on_clock, delivered]
    raise ValueError(f"unknown retention kind {kind!r}")
