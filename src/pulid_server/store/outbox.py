"""The durable webhook outbox: one row per completed job that has a webhook URL.

The row is written in the transaction that completes the job (`add`, called by the queue), so exactly one
terminal webhook exists per job; any API node delivers it, holding a lease on the row while it tries.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from pulid_server.store import driver
from pulid_server.store.database import Database
from pulid_server.store.records import COMPLETED, Job, WebhookTask
from pulid_server.store.schema import jobs, webhooks

_ADD = insert(webhooks)


def add(conn: Connection, job_id: str, url: str) -> None:
    """Queue the delivery for a job, inside the caller's transaction."""
    row = {"job_id": job_id, "url": url, "state": "pending", "next_attempt_at": time.time(), "attempts": 0}
    driver.run(conn, _ADD, row)


class SqlWebhookOutbox:
    def __init__(self, db: Database):
        self._db = db

    def claim_webhook(self, lease_seconds: float, skip: Collection[str] = ()) -> WebhookTask | None:
        now = time.time()
        due_now = (
            webhooks.c.state == "pending",
            webhooks.c.next_attempt_at <= now,
            or_(webhooks.c.lease_until.is_(None), webhooks.c.lease_until < now),
            *(~webhooks.c.url.startswith(prefix, autoescape=True) for prefix in skip),
        )
        with self._db.read() as conn:  # the idle poll must not take SQLite's write lock (it stalls workers)
            if conn.execute(select(webhooks.c.job_id).where(*due_now).limit(1)).first() is None:
                return None
        with self._db.tx() as conn:
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
            job_row = conn.execute(select(jobs).where(jobs.c.id == row.job_id)).first()
            if job_row is None:  # its job was deleted (retention shorter than the delivery window)
                conn.execute(delete(webhooks).where(webhooks.c.job_id == row.job_id))
                return None
        return WebhookTask(Job.from_row(job_row), row.url, row.attempts)

    def webhook_done(
        self, job_id: str, *, delivered: bool, error: str | None, retry_at: float | None
    ) -> None:
        state = "delivered" if delivered else ("pending" if retry_at is not None else "dead")
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(
                update(webhooks)
                .where(webhooks.c.job_id == job_id)
                .values(state=state, last_error=error, lease_until=None, next_attempt_at=retry_at or now)
            )
            if delivered:  # X-Fal-Store-IO: 0: an acknowledged webhook is the delivery of the result
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.store_io.is_(False), jobs.c.status == COMPLETED)
                    .values(payload_expire_at=now)
                )

    def webhook_state(self, job_id: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute(select(webhooks).where(webhooks.c.job_id == job_id)).first()
        return dict(row._mapping) if row else None
