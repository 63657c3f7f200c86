"""API keys: `key_id:secret`, stored as a hash of the secret and compared in constant time, and each key's
content policy overrides (NULL columns leave the node's Settings in charge)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from pulid_server.policy import KeyPolicy
from pulid_server.store.database import Database
from pulid_server.store.schema import api_keys

# Every request reads this: built once (building a statement costs more than running it on SQLite).
_POLICY = select(api_keys.c.safety_mode, api_keys.c.safety_action).where(
    api_keys.c.key_id == bindparam("key_id")
)  # every job reads it (worker/loop.py)
_SECRET_HASH = select(api_keys.c.secret_hash).where(
    api_keys.c.key_id == bindparam("key_id"), api_keys.c.revoked_at.is_(None)
)


def hash_secret(secret: str) -> str:
    # Keys and tokens carry >= 128 bits of entropy, so a plain SHA-256 is enough (no bcrypt needed).
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlKeyStore:
    def __init__(self, db: Database):
        self._db = db

    def create_key(self, name: str = "", policy: KeyPolicy = KeyPolicy()) -> str:
        key_id, secret = uuid.uuid4().hex, secrets.token_hex(24)
        with self._db.tx() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    name=name,
                    secret_hash=hash_secret(secret),
                    created_at=time.time(),
                    safety_mode=policy.safety_mode,
                    safety_action=policy.safety_action,
                )
            )
        return f"{key_id}:{secret}"

    def authenticate(self, key: str) -> str | None:
        key_id, sep, secret = key.partition(":")
        if not sep or not key_id or len(key_id) > 64:
            return None
        row = self._db.first(_SECRET_HASH, {"key_id": key_id})
        if row is None:
            return None
        return key_id if hmac.compare_digest(row["secret_hash"], hash_secret(secret)) else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self._db.read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [
            {
                "key_id": r.key_id,
                "name": r.name,
                "created_at": r.created_at,
                "revoked": r.revoked_at is not None,
                "safety_mode": r.safety_mode,
                "safety_action": r.safety_action,
            }
            for r in rows
        ]

    def key_policy(self, key_id: str) -> KeyPolicy:
        row = self._db.first(_POLICY, {"key_id": key_id})
        return KeyPolicy.parse(row["safety_mode"], row["safety_action"]) if row else KeyPolicy()

    def set_key_policy(self, key_id: str, policy: KeyPolicy) -> bool:
        with self._db.tx() as conn:
            res = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(safety_mode=policy.safety_mode, safety_action=policy.safety_action)
            )
        return res.rowcount == 1

    def revoke_key(self, key_id: str) -> bool:
        with self._db.tx() as conn:
            res = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return res.rowcount == 1
