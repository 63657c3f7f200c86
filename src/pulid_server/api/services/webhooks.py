"""Webhook delivery from the durable outbox: fal's payload, signed (signing.py), retries with backoff.

Any node may deliver: rows are claimed with a lease, so each terminal webhook is sent by one node at a
time and retried across restarts until a 2xx, the attempt limit or the end of the retry window (fal's
policy by default: 15 s per attempt, 10 attempts over about two hours).

Deliveries run side by side on `DELIVERY_THREADS` threads, at most `PER_DESTINATION` at a time to one
destination (scheme://host:port as the URL spells it): rows for a destination that has that many in
flight are left in the outbox and the next ones claimed past them, so a slow or dead receiver delays
only its own webhooks, never another key's.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

from pulid_server.api.services.signing import StandardWebhooksSigner, WebhookSigner
from pulid_server.config import Settings
from pulid_server.files import FetchError, post_json
from pulid_server.store import Job, WebhookOutbox, WebhookTask

log = logging.getLogger("pulid.webhooks")
DELIVERY_THREADS = 16
PER_DESTINATION = 2


def webhook_body(job: Job) -> dict[str, Any]:
    """The payload fal sends: {request_id, gateway_request_id, status: OK|ERROR, payload, error}."""
    if job.error is None:
        return {
            "request_id": job.id,
            "gateway_request_id": job.id,
            "status": "OK",
            "payload": json.loads(job.output_json or "null"),
            "error": None,
        }
    return {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "ERROR",
        "payload": json.loads(job.error_body_json or "null"),
        "error": job.error,
    }


def retry_delay(attempt: int, base: float) -> float:
    """5 s, 15 s, 45 s ... capped at 40 min: 10 attempts span about two hours (fal's schedule)."""
    return min(base * 3.0 ** (attempt - 1), 2400.0)


def destination(url: str) -> str:
    """`scheme://host:port` as written at the start of `url` (a prefix of it, for claim_webhook's skip)."""
    start = url.find("//") + 2 if "//" in url else 0
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    return url[: min(ends, default=len(url))]


class WebhookDispatcher:
    def __init__(
        self,
        outbox: WebhookOutbox,
        signer: WebhookSigner,
        settings: Settings,
        threads: int = DELIVERY_THREADS,
        per_destination: int = PER_DESTINATION,
    ):
        self.outbox = outbox
        self.signer = signer
        self.settings = settings
        secret = settings.webhook_secret
        self.standard = StandardWebhooksSigner(secret) if secret else None
        self._threads = threads
        self._per_destination = per_destination
        self._busy: Counter[str] = Counter()  # deliveries in flight by destination
        self._slots = threading.Condition()
        self._tasks: queue.SimpleQueue[WebhookTask | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._claimer = threading.Thread(target=self._claim_loop, daemon=True, name="webhooks")
        self._senders = [
            threading.Thread(target=self._send_loop, daemon=True, name=f"webhook-{i}") for i in range(threads)
        ]

    def start(self) -> None:
        for t in (self._claimer, *self._senders):
            t.start()

    def stop(self) -> None:
        """Stop claiming; deliveries in flight finish on their own (their rows stay leased until then)."""
        self._stop.set()
        with self._slots:
            self._slots.notify_all()
        self._claimer.join(timeout=5)
        for _ in self._senders:
            self._tasks.put(None)

    def _claim_loop(self) -> None:
        lease = self.settings.webhook_timeout_seconds * 2
        while not self._stop.is_set():
            with self._slots:  # a free delivery thread first
                while sum(self._busy.values()) >= self._threads and not self._stop.is_set():
                    self._slots.wait(1.0)
                skip = [d for d, n in self._busy.items() if n >= self._per_destination]
            try:
                task = self.outbox.claim_webhook(lease_seconds=lease, skip=skip)
            except Exception:  # noqa: BLE001 - keep delivering; the store may be back at the next try
                log.exception("claiming a webhook failed")
                task = None
            if task is None:
                self._stop.wait(0.2)
                continue
            with self._slots:
                self._busy[destination(task.url)] += 1
            self._tasks.put(task)

    def _send_loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                self.deliver(task)
            except Exception:  # noqa: BLE001 - the row stays leased and is retried when the lease ends
                log.exception("webhook delivery for %s failed", task.job.id)
            finally:
                with self._slots:
                    where = destination(task.url)
                    self._busy[where] -= 1
                    if self._busy[where] <= 0:
                        del self._busy[where]
                    self._slots.notify()

    def deliver(self, task: WebhookTask) -> None:
        """Send one claimed webhook and record the attempt: delivered, to retry later, or dead."""
        body = json.dumps(webhook_body(task.job)).encode()
        now = time.time()
        headers = {"Content-Type": "application/json", **self.signer.headers(task.job.id, body, now)}
        if self.standard is not None:
            headers.update(self.standard.headers(task.job.id, body, now))
        error: str | None = None
        try:
            status = post_json(
                task.url,
                body,
                headers,
                timeout=self.settings.webhook_timeout_seconds,
                allow_private=self.settings.allow_private_urls,
            )
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except FetchError as exc:
            error = str(exc)
        if error is None:
            self.outbox.webhook_done(task.job.id, delivered=True, error=None, retry_at=None)
            return
        next_try = time.time() + retry_delay(task.attempts, self.settings.webhook_retry_base_seconds)
        window_ends = (task.job.finished_at or time.time()) + self.settings.webhook_retry_window_seconds
        gave_up = task.attempts >= self.settings.webhook_max_attempts or next_try > window_ends
        retry_at = None if gave_up else next_try
        log.warning("webhook for %s failed (attempt %d): %s", task.job.id, task.attempts, error)
        self.outbox.webhook_done(task.job.id, delivered=False, error=error, retry_at=retry_at)
