"""Webhook delivery from the durable outbox: fal's payload, signed (signing.py), retries with backoff.

Any node may deliver: rows are claimed with a lease, so each terminal webhook is sent by one node at a
time and retried across restarts until a 2xx, the attempt limit or the end of the retry window (fal's
policy by default: 15 s per attempt, 10 attempts over about two hours).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pulid_server.api.services.signing import StandardWebhooksSigner, WebhookSigner
from pulid_server.config import Settings
from pulid_server.files import FetchError, post_json
from pulid_server.store import Job, WebhookOutbox

log = logging.getLogger("pulid.webhooks")


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


class WebhookDispatcher:
    def __init__(self, outbox: WebhookOutbox, signer: WebhookSigner, settings: Settings):
        self.outbox = outbox
        self.signer = signer
        self.settings = settings
        secret = settings.webhook_secret
        self.standard = StandardWebhooksSigner(secret) if secret else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="webhooks")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.webhook_timeout_seconds + 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.deliver_one()
            except Exception:  # noqa: BLE001 - keep delivering; the row stays leased and is retried
                log.exception("webhook delivery loop error")
                busy = False
            if not busy:
                self._stop.wait(0.2)

    def deliver_one(self) -> bool:
        task = self.outbox.claim_webhook(lease_seconds=self.settings.webhook_timeout_seconds * 2)
        if task is None:
            return False
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
            return True
        next_try = time.time() + retry_delay(task.attempts, self.settings.webhook_retry_base_seconds)
        window_ends = (task.job.finished_at or time.time()) + self.settings.webhook_retry_window_seconds
        gave_up = task.attempts >= self.settings.webhook_max_attempts or next_try > window_ends
        retry_at = None if gave_up else next_try
        log.warning("webhook for %s failed (attempt %d): %s", task.job.id, task.attempts, error)
        self.outbox.webhook_done(task.job.id, delivered=False, error=error, retry_at=retry_at)
        return True
