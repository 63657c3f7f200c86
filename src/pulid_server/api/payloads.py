"""fal's "delete request payloads": a finished request's input, output and files, deleted on demand.

- `DELETE /v1/models/requests/{id}/payloads` (fal's Platform API, `api.fal.ai/v1`) -> `{cdn_delete_results}`
- `PUT /rest/requests/delete_io/{id}` (its older form, `rest.alpha.fal.ai`) -> `{CDN_DELETE_RESULTS}`

Each result is `{link, exception}` for one output file. As on fal, the files a request only refers to
(uploads) stay: other requests may use them. The request itself stays, so its status still answers and
its result is a 410. fal asks for an admin key; here the key that submitted the request does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from pulid_server.api.auth import require_key
from pulid_server.api.queue import RequestIdPath, id_header
from pulid_server.api.state import AppState, app_state
from pulid_server.store import COMPLETED

router = APIRouter(tags=["queue"])


async def _delete(state: AppState, request_id: str, key_id: str) -> list[dict[str, Any]]:
    job = await state.read(state.store.queue.get, request_id, key_id)
    if job is None:
        raise HTTPException(404, "Request not found", headers=id_header(request_id))
    if job.status != COMPLETED:
        raise HTTPException(400, "Request is still in progress: cancel it first", headers=id_header(job.id))
    base = (state.settings.public_url or job.base_url).rstrip("/")
    return await asyncio.to_thread(state.pruner.delete_request, job.id, base)


@router.delete(
    "/v1/models/requests/{request_id}/payloads",
    summary="Delete a finished request's payloads and output files",
)
async def delete_payloads(
    request: Request, request_id: str = RequestIdPath, key_id: str = Depends(require_key)
) -> dict[str, Any]:
    return {"cdn_delete_results": await _delete(app_state(request), request_id, key_id)}


@router.put("/rest/requests/delete_io/{request_id}", summary="The same, as fal's older delete_io route")
async def delete_io(
    request: Request, request_id: str = RequestIdPath, key_id: str = Depends(require_key)
) -> dict[str, Any]:
    return {"CDN_DELETE_RESULTS": await _delete(app_state(request), request_id, key_id)}
