"""The hottest routes (a submit, a sync /run, a request's status and its result) as plain Starlette routes,
matched before the FastAPI routes that document them (api/queue.py, api/run.py).

Why: FastAPI's routing, dependency injection and body handling cost ~110 of the ~190 µs of a submit
in-process (~80 of ~120 µs of a status read), and several times that once the CPU's caches are cold:
through them a status-stream client's 200 ms job took ~1.2 ms longer, a /run ~0.4 ms (A/B in one run).
These handlers do what FastAPI does for those routes, in the same order, and answer exactly as the
FastAPI routes would: the body read and parsed as JSON (strictly, api/strict_json.py) only with a JSON
content type, then the key, then the query parameters and the body checked together, with the same 422
errors (tests/integration/test_fast_routes.py sends both the same requests). The answers themselves
come from the same functions.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Route

from pulid_server.api.auth import require_key
from pulid_server.api.queue import REQUEST_ID_PATTERN, result_response_for, status_response, submit_response
from pulid_server.api.run import run_response
from pulid_server.api.strict_json import loads_strict
from pulid_server.endpoints import Endpoint

_REQUEST_ID: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)])
_SUBMIT_QUERY: dict[str, TypeAdapter[Any]] = {  # as api/queue.py declares them
    "fal_webhook": TypeAdapter(str | None),
    "fal_max_queue_length": TypeAdapter(Annotated[int | None, Field(ge=0)]),
}
_MISSING = object()  # no body at all
Handler = Callable[[Request], Awaitable[Response]]


def routes(endpoints: list[Endpoint]) -> list[Route]:
    found = [
        Route("/queue/{app:path}/requests/{request_id}/status", _status, methods=["GET"]),
        Route("/queue/{app:path}/requests/{request_id}", _result, methods=["GET"]),
    ]
    for endpoint in endpoints:
        found.append(Route(f"/queue/{endpoint.id}", _submit(endpoint), methods=["POST"]))
        found.append(Route(f"/run/{endpoint.id}", _run(endpoint), methods=["POST"]))
    return found


async def _status(request: Request) -> Response:
    key_id = await require_key(request)  # before the parameters, as FastAPI runs its dependency
    return await status_response(request, _request_id(request), request.query_params.get("logs"), key_id)


async def _result(request: Request) -> Response:
    key_id = await require_key(request)
    return await result_response_for(request, _request_id(request), key_id)


def _submit(endpoint: Endpoint) -> Handler:
    async def submit(request: Request) -> Response:
        body, key_id, query = await _checked(request, endpoint.input_model, _SUBMIT_QUERY)
        webhook, max_length = query.get("fal_webhook"), query.get("fal_max_queue_length")
        return await submit_response(request, endpoint, body, key_id, webhook, max_length)

    return submit


def _run(endpoint: Endpoint) -> Handler:
    async def run(request: Request) -> Response:
        body, key_id, _ = await _checked(request, endpoint.input_model, {})
        return await run_response(request, endpoint, body, key_id)

    return run


def _request_id(request: Request) -> str:
    """The path's request id, checked as FastAPI checks RequestIdPath (the same 422 when it does not fit)."""
    try:
        return _REQUEST_ID.validate_python(request.path_params["request_id"])
    except ValidationError as exc:
        raise RequestValidationError(_located(exc, ("path", "request_id"))) from None


async def _checked(
    request: Request, model: type[BaseModel], query: dict[str, TypeAdapter[Any]]
) -> tuple[BaseModel, str, dict[str, Any]]:
    """(the body as `model`, the caller's key id, the query parameters given), checked in FastAPI's order:
    the body's JSON first, then the key, then the parameters and the body together (one 422 for all)."""
    body = await _json_body(request)
    key_id = await require_key(request)
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for name, adapter in query.items():
        if (raw := request.query_params.get(name)) is not None:
            try:
                values[name] = adapter.validate_python(raw)
            except ValidationError as exc:
                errors += _located(exc, ("query", name))
    checked = None
    if body is _MISSING:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    else:
        try:
            checked = model.model_validate(body, from_attributes=True)
        except ValidationError as exc:
            errors += _located(exc, ("body",))
    if errors:
        raise RequestValidationError(errors)
    assert checked is not None  # no errors: there was a body, and it passed
    return checked, key_id, values


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads a body parameter: parsed only with a JSON content type (else the bytes,
    which no model accepts); `_MISSING` when empty."""
    try:
        data = await request.body()
    except StarletteHTTPException:  # over the size cap (api/routing.py)
        raise
    except Exception as exc:
        raise HTTPException(400, "There was an error parsing the body") from exc
    if not data:
        return _MISSING
    if not _is_json(request.headers.get("content-type")):
        return data
    try:
        return loads_strict(data)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}]) from exc


def _is_json(content_type: str | None) -> bool:
    if not content_type:  # FastAPI's strict content type: no type, no JSON
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _located(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]
