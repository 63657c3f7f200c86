"""File storage as both fal clients speak it, plus downloads of stored files.

- JS (and the Python fallback): `POST /rest/storage/upload/initiate` -> {upload_url, file_url}; then a raw
  `PUT upload_url` (no auth: the URL itself is the capability).
- Python: `POST /rest/storage/auth/token` -> a short-lived CDN token; `POST /cdn/files/upload` with
  `Authorization: Bearer <token>` -> {access_url}.
- `GET /files/{key}`: stored files (uploads and outputs) by their unguessable URL.

An upload URL works once (a stored file is never replaced: it is served as immutable); a CDN token for
`CDN_TOKEN_UPLOADS` files. Both stop working when their key is revoked. Upload routes take bodies up to
`max_file_bytes` (the other routes, `max_body_bytes`).
"""

import asyncio
import mimetypes
import re
import secrets
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from pulid_server import failures
from pulid_server.api.auth import require_key
from pulid_server.api.platform import parse_lifecycle
from pulid_server.api.queue import failure_response, public_base
from pulid_server.api.state import AppState, app_state
from pulid_server.api.strict_json import StrictJSONRoute
from pulid_server.files import BlobKeyError
from pulid_server.store import OUTPUTS_GONE, PAYLOAD_GONE

UPLOAD_TTL_SECONDS = 3600.0
# fal-client keeps one token until it expires and, once it is spent, uploads through initiate + PUT.
CDN_TOKEN_UPLOADS = 100
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}


class InitiateUpload(BaseModel):
    file_name: str | None = Field(None, max_length=255)
    content_type: str = Field("application/octet-stream", max_length=200)


def new_upload_key(file_name: str | None, content_type: str) -> str:
    ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    name = SAFE_NAME.sub("_", file_name or "")[:100].strip("._") or f"upload{ext}"
    return f"uploads/{secrets.token_urlsafe(16)}/{name}"


def upload_lifetime(request: Request, state: AppState) -> float | None:
    """X-Fal-Object-Lifecycle on an upload (JS initiate; the Python client also sends it as
    X-Fal-Object-Lifecycle-Preference): the file's own lifetime, within the node's retain_files_max."""
    for header in ("x-fal-object-lifecycle", "x-fal-object-lifecycle-preference"):
        if (value := request.headers.get(header)) is not None:
            return state.settings.file_lifetime(parse_lifecycle(value, header))
    return None


async def record_upload(request: Request, state: AppState, key: str, key_id: str) -> None:
    """Remember the file for retention before it is stored: a file is never on disk without its row."""
    lifetime = upload_lifetime(request, state)
    await asyncio.to_thread(state.store.retention.record_upload, key, key_id, lifetime)


def build_storage_router() -> APIRouter:
    router = APIRouter(tags=["storage"], route_class=StrictJSONRoute)
    router.add_api_route(
        "/rest/storage/upload/initiate",
        initiate_upload,
        methods=["POST"],
        summary="Start an upload (returns a single-use PUT URL and the file URL)",
    )
    router.add_api_route(
        "/files/upload/{token}",
        put_upload,
        methods=["PUT"],
        summary="Upload target of an initiated upload (once)",
    )
    router.add_api_route(
        "/rest/storage/auth/token",
        cdn_token,
        methods=["POST"],
        summary="Short-lived token for CDN uploads (Python client)",
    )
    router.add_api_route(
        "/cdn/files/upload",
        cdn_upload,
        methods=["POST"],
        summary="Upload a file with a CDN token (Python client)",
    )
    router.add_api_route(
        "/files/{key:path}",
        download,
        methods=["GET"],
        summary="Download a stored file",
        response_class=Response,
    )
    return router


async def initiate_upload(
    request: Request,
    body: InitiateUpload,
    key_id: str = Depends(require_key),
) -> dict[str, str]:
    state = app_state(request)
    key = new_upload_key(body.file_name, body.content_type)
    await record_upload(request, state, key, key_id)
    token = await asyncio.to_thread(
        state.store.uploads.grant_upload, key_id, UPLOAD_TTL_SECONDS, key, body.content_type
    )
    base = public_base(request)
    return {"upload_url": f"{base}/files/upload/{token}", "file_url": f"{base}/files/{key}"}


async def _store_upload(
    state: AppState, request: Request, key: str, content_type: str, token: str | None
) -> None:
    """Store the body under `key`; the use of the grant `token` taken for it is given back if that fails."""
    try:
        data = await request.body()
        await asyncio.to_thread(state.blobs.put, key, data, content_type)
    except BaseException:
        if token is not None:
            await asyncio.to_thread(state.store.uploads.refund_upload_grant, token)
        raise


async def put_upload(token: str, request: Request) -> dict[str, str]:
    state = app_state(request)
    grant = await asyncio.to_thread(state.store.uploads.use_upload_grant, token, file=True)
    if grant is None:
        raise HTTPException(404, "Unknown, used or expired upload URL")
    content_type = request.headers.get("content-type") or grant["content_type"] or "application/octet-stream"
    await _store_upload(state, request, grant["file_key"], content_type, token)
    return {"status": "ok"}


async def cdn_token(request: Request, key_id: str = Depends(require_key)) -> dict[str, str]:
    state = app_state(request)
    token = await asyncio.to_thread(
        state.store.uploads.grant_upload, key_id, UPLOAD_TTL_SECONDS, None, None, CDN_TOKEN_UPLOADS
    )
    expires = datetime.now(UTC) + timedelta(seconds=UPLOAD_TTL_SECONDS)
    return {
        "token": token,
        "token_type": "Bearer",
        "base_url": f"{public_base(request)}/cdn",
        "expires_at": expires.isoformat(),  # must carry +00:00: the client compares aware datetimes
    }


async def cdn_upload(request: Request) -> JSONResponse:
    state = app_state(request)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    grant = (
        await asyncio.to_thread(state.store.uploads.use_upload_grant, token, file=False) if token else None
    )
    # an API key works too, for clients that skip the token step
    owner = grant["owner_key_id"] if grant is not None else await require_key(request)
    content_type = request.headers.get("content-type") or "application/octet-stream"
    key = new_upload_key(request.headers.get("x-fal-file-name"), content_type)
    await record_upload(request, state, key, owner)
    await _store_upload(state, request, key, content_type, token if grant else None)
    return JSONResponse({"access_url": f"{public_base(request)}/files/{key}"})


def expired_file(state: AppState, key: str) -> bool:
    """Whether retention deleted this file (a 410 then, not a 404): an upload's row says so; a request's
    output or input file, its job's retention bits (while the job's row is kept)."""
    folder, _, rest = key.partition("/")
    if folder == "uploads":
        return state.store.retention.upload_deleted(key)
    bits = state.store.retention.job_retention(rest.partition("/")[0])
    return bits is not None and bool(bits & (OUTPUTS_GONE if folder == "outputs" else PAYLOAD_GONE))


async def download(key: str, request: Request) -> Response:
    state = app_state(request)
    if not key.startswith(("uploads/", "outputs/", "inputs/")):
        raise HTTPException(404, "File not found")
    try:
        url = await asyncio.to_thread(state.blobs.download_url, key)
        blob = None if url else await asyncio.to_thread(state.blobs.get, key)
    except BlobKeyError:  # not a key we could have made: no such file
        raise HTTPException(404, "File not found") from None
    if url:
        return RedirectResponse(url, status_code=307)
    if blob is None:
        if await state.read(expired_file, state, key):
            return failure_response(failures.FILE_EXPIRED)
        raise HTTPException(404, "File not found")
    headers = {"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
    media_type = blob.content_type
    if media_type not in INLINE_TYPES:  # user-chosen types (text/html...) must not render on our origin
        media_type = "application/octet-stream"
        headers["Content-Disposition"] = "attachment"
    return Response(blob.data, media_type=media_type, headers=headers)
