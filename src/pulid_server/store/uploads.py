"""Upload grants: the capability in an upload URL (JS initiate + PUT) or a CDN token (Python client).

A grant is good for `uses_left` uploads (one for a PUT URL, so that a stored file can never be replaced),
until it expires, and only while the key that asked for it is not revoked. Each upload takes one use
before it reads the body and gives it back if the upload fails.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import exists, insert, update

from pulid_server.store.database import Database
from pulid_server.store.keys import hash_secret
from pulid_server.store.schema import api_keys, upload_grants


class SqlUploadGrants:
    def __init__(self, db: Database):
        self._db = db

    def grant_upload(
        self,
        owner_key_id: str,
        ttl: float,
        file_key: str | None = None,
        content_type: str | None = None,
        uses: int = 1,
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
                    uses_left=uses,
                )
            )
        return token

    def use_upload_grant(self, token: str, *, file: bool) -> dict[str, Any] | None:
        key_active = exists().where(
            api_keys.c.key_id == upload_grants.c.owner_key_id, api_keys.c.revoked_at.is_(None)
        )
        with self._db.tx() as conn:
            row = conn.execute(
                update(upload_grants)
                .where(
                    upload_grants.c.token_hash == hash_secret(token),
                    upload_grants.c.expires_at > time.time(),
                    upload_grants.c.uses_left > 0,
                    upload_grants.c.file_key.is_not(None) if file else upload_grants.c.file_key.is_(None),
                    key_active,
                )
                .values(uses_left=upload_grants.c.uses_left - 1)
                .returning(
                    upload_grants.c.owner_key_id,
                    upload_grants.c.file_key,
                    upload_grants.c.content_type,
                    upload_grants.c.expires_at,
                )
            ).first()
        return dict(row._mapping) if row else None

    def refund_upload_grant(self, token: str) -> None:
        with self._db.tx() as conn:
            conn.execute(
                update(upload_grants)
                .where(upload_grants.c.token_hash == hash_secret(token))
                .values(uses_left=upload_grants.c.uses_left + 1)
            )
