"""Webhook delivery from the durable outbox: fal's payload, Ed25519 signature, retries with backoff.

Any node may deliver: rows are claimed with a lease, so each terminal webhook is sent by one node at a
time and retried across restarts until a 2xx or the attempt limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pulid_server.config import Settings
from pulid_server.files import FetchError, post_json
from pulid_server.store import Job, ServerValues, WebhookOutbox

log = logging.getLogger("pulid.webhooks")
SIGNING_KEY_NAME = "webhook_ed25519_private_key"
USER_ID = "pulid-server"


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


class WebhookSigner:
    """fal-style signature: Ed25519 over `request_id\\nuser_id\\ntimestamp\\nsha256hex(body)`."""

    def __init__(self, values: ServerValues):
        pem = values.server_value(SIGNING_KEY_NAME, _new_private_key_pem)
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    def headers(self, request_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        ts = str(int(now if now is not None else time.time()))
        message = f"{request_id}\n{USER_ID}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": USER_ID,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": self._key.sign(message).hex(),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": self.public_x, "kid": self.kid, "use": "sig"}]}


def _new_private_key_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


def retry_delay(attempt: int, base: float) -> float:
    """5 s, 15 s, 45 s ... capped at 40 min: 10 attempts span about two hours (fal's schedule)."""
    return min(base * 3.0 ** (attempt - 1), 2400.0)


class WebhookDispatcher:
    def __init__(self, outbox: WebhookOutbox, signer: WebhookSigner, settings: Settings):
        self.outbox = outbox
        self.signer = signer
        self.settings = settings
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
        headers = {"Content-Type": "application/json", **self.signer.headers(task.job.id, body)}
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
        retry_at = None
        if task.attempts < self.settings.webhook_max_attempts:
            retry_at = time.time() + retry_delay(task.attempts, self.settings.webhook_retry_base_seconds)
        log.warning("webhook for %s failed (attempt %d): %s", task.job.id, task.attempts, error)
        self.outbox.webhook_done(task.job.id, delivered=False, error=error, retry_at=retry_at)
        return True
