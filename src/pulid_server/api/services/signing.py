"""Webhook signatures: fal's (one Ed25519 key shared by every node through the store, its JWKS), and
optionally Standard Webhooks' (HMAC-SHA256 with the operator's `whsec_...` secret), for receivers that
verify with that library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pulid_server.store import ServerValues

SIGNING_KEY_NAME = "webhook_ed25519_private_key"
USER_ID = "pulid-server"


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


class StandardWebhooksSigner:
    """Standard Webhooks (standardwebhooks.com): `webhook-signature: v1,<base64 HMAC-SHA256 of
    "{id}.{timestamp}.{body}">` with the secret's bytes. `webhook-id` is the request id: the same on every
    retry of the one webhook a request has, which is what receivers deduplicate on."""

    PREFIX = "whsec_"

    def __init__(self, secret: str):  # checked by Settings: whsec_ and base64
        self._key = base64.b64decode(secret.removeprefix(self.PREFIX))

    def headers(self, request_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        ts = str(int(now if now is not None else time.time()))
        signed = f"{request_id}.{ts}.".encode() + body
        digest = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        return {"webhook-id": request_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{digest}"}


def _new_private_key_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
