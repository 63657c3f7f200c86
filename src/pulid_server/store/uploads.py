"""Upload grants: the capability in an upload URL (JS initiate + PUT) or a CDN token (Python client)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import insert, select

from pulid_server.store.database import Database
from pulid_server.store.keys import hash_secret
from pulid_server.store.schema import upload_grants


class SqlUploadGrants:
    def __init__(self, db: Database):
        self._db = db

    def grant_upload(
        self, owner_key_id: str, ttl: float, file_key: str | None = None, content_type: str | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        with self._db.tx() as conn:
            conn.execute(
                insert(upload_grants).values(
                    token_hash=hash_secret(token),
                    owner_key_id=owner_key_id,
                    file_key=file_key,
                    content_type=content_type,
                    expires_at=time.time() + ttl,
                )
            )
        return token

    def check_upload_grant(self, token: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute(
                select(upload_grants).where(
                    upload_grants.c.token_hash == hash_secret(token),
                    upload_grants.c.expires_at > time.time(),
                )
            ).first()
        return dict(row._mapping) if row else None
