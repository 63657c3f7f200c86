"""The queue's two hottest reads, a request's status and its result, as plain Starlette routes that the app
matches before FastAPI's (api/app.py).

Why: FastAPI's routing and dependency injection cost ~80 of the ~120 µs a status poll or a result read
takes in-process, and more once the CPU's caches are cold (a result fetched after a 200 ms job: ~0.5 ms,
bench/bench_peer.py). These handlers do what FastAPI did for them (the key, the request id's pattern, the
`logs` flag) and answer exactly as before: the same bodies, headers and errors. `documented_router`
declares them for /openapi.json only; it is never mounted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import StringConstraints, TypeAdapter, ValidationError
from starlette.routing import Route

from pulid_server.api.auth import require_key
from pulid_server.api.queue import (
    REQUEST_ID_PATTERN,
    AppPath,
    RequestIdPath,
    deliver_result,
    owned_job,
    status_response,
)
from pulid_server.api.state import app_state

STATUS_PATH = "/queue/{app:path}/requests/{request_id}/status"
RESULT_PATH = "/queue/{app:path}/requests/{request_id}"
_REQUEST_ID: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)])


def routes() -> list[Route]:
    return [Route(STATUS_PATH, _status, methods=["GET"]), Route(RESULT_PATH, _result, methods=["GET"])]


async def _status(request: Request) -> JSONResponse:
    key_id = await require_key(request)  # before the parameters, as FastAPI's dependency ran
    return await status_response(
        app_state(request), request, _request_id(request), request.query_params.get("logs"), key_id
    )


async def _result(request: Request) -> JSONResponse:
    key_id = await require_key(request)
    state = app_state(request)
    return await deliver_result(state, await owned_job(state, _request_id(request), key_id))


def _request_id(request: Request) -> str:
    """The path's request id, checked as FastAPI checks RequestIdPath (the same 422 when it does not fit)."""
    try:
        return _REQUEST_ID.validate_python(request.path_params["request_id"])
    except ValidationError as exc:
        errors: list[dict[str, Any]] = [{**e, "loc": ("path", "request_id")} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def documented_router() -> APIRouter:
    """The two routes as FastAPI declares them, for /openapi.json only (served by `routes`)."""
    router = APIRouter(prefix="/queue", tags=["queue"])

    async def get_status(  # served by _status
        app: str = AppPath,
        request_id: str = RequestIdPath,
        logs: str | None = Query(None, description="1|true to include logs"),
        key_id: str = Depends(require_key),
    ) -> None: ...

    async def get_result(  # served by _result
        app: str = AppPath, request_id: str = RequestIdPath, key_id: str = Depends(require_key)
    ) -> None: ...

    router.add_api_route(
        STATUS_PATH.removeprefix("/queue"), get_status, methods=["GET"], summary="Request status"
    )
    router.add_api_route(
        RESULT_PATH.removeprefix("/queue"), get_result, methods=["GET"], summary="Request result"
    )
    return router
