"""`Authorization: Key <key_id:secret>` (fal) or `Bearer <key_id:secret>` on every non-public route."""

from __future__ import annotations

from fastapi import HTTPException, Request

from pulid_server.api.state import app_state


async def require_key(request: Request) -> str:
    """The caller's key id. 401 without a valid, unrevoked key."""
    state = app_state(request)
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() not in ("key", "bearer") or not credentials.strip():
        raise HTTPException(401, "Missing API key: send 'Authorization: Key <key_id:secret>'")
    key_id = await state.read(state.store.keys.authenticate, credentials.strip())
    if key_id is None:
        raise HTTPException(401, "Invalid or revoked API key")
    return key_id
