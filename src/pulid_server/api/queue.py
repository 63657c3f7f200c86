"""fal's queue API: submit, status (+ SSE stream), result, cancel. Protocol: reference/fal-protocol.md §4."""

import asyncio
import dataclasses
import json
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from pulid_server import failures
from pulid_server.api.auth import require_key
from pulid_server.api.platform import platform_options
from pulid_server.api.services.doorbell import ParentDoorbell
from pulid_server.api.services.watch import Follower, TooManyStreams
from pulid_server.api.state import AppState, app_state
from pulid_server.api.strict_json import StrictJSONRoute
from pulid_server.endpoints import Endpoint
from pulid_server.files import FetchError, validate_url
from pulid_server.policy import blocked_term
from pulid_server.store import (
    COMPLETED,
    IN_QUEUE,
    PAYLOAD_GONE,
    PRIORITIES,
    Job,
    JobProgress,
    JobState,
    LogLine,
    QueueFull,
    Submission,
    handed_job,
)

REQUEST_ID_HEADER = "x-fal-request-id"
KEEPALIVE_SECONDS = 15.0
REQUEST_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"  # \Z-anchored by pydantic's regex engine: no trailing newline
MAX_IDEMPOTENCY_KEY = 200  # characters; longer keys are refused, never cut (two keys must not collide)
AppPath = Path(description="The endpoint's owner/alias as in its submit URL, e.g. `fal-ai/pulid`")
RequestIdPath = Path(pattern=REQUEST_ID_PATTERN, description="The `request_id` the submit returned")


def id_header(request_id: str) -> dict[str, str]:
    """`x-fal-request-id` for a request id the route has validated (never other user text)."""
    return {REQUEST_ID_HEADER: request_id}


def public_base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def request_urls(base: str, job: JobState) -> dict[str, str]:
    """Status/result/cancel URLs on the owner/alias prefix, built from the caller's own scheme and host."""
    app = "/".join(
        job.endpoint_id.split("/")[:3]
        if job.endpoint_id.startswith(("workflows/", "comfy/"))
        else job.endpoint_id.split("/")[:2]
    )
    response_url = f"{base}/queue/{app}/requests/{job.id}"
    return {
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def log_entry(line: LogLine) -> dict[str, Any]:
    ts = datetime.fromtimestamp(line.ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"message": line.message, "level": line.level, "source": "USER", "timestamp": ts}


def status_body(job: JobState, base: str, position: int, logs: list[LogLine] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": job.status, "request_id": job.id}
    if job.status == IN_QUEUE:
        body["queue_position"] = position
    else:
        body["logs"] = None if logs is None else [log_entry(line) for line in logs]
    if job.status == COMPLETED:
        body["metrics"] = {"inference_time": job.inference_time} if job.inference_time is not None else {}
        if job.error is not None:
            body["error"] = job.error
            body["error_type"] = job.error_type
    return {**body, **request_urls(base, job)}


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def parse_start_timeout(value: str | None) -> float | None:
    """X-Fal-Request-Timeout: seconds the request may wait before it starts (Python sends "30.0", JS "30")."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise HTTPException(
            422,
            [
                failures.field_error(
                    ("header", "x-fal-request-timeout"), "must be a positive number of seconds", "value_error"
                )
            ],
        )
    return seconds


def parse_priority(value: str | None) -> int:
    if value is None:
        return 0
    if value not in PRIORITIES:
        raise HTTPException(
            422,
            [failures.field_error(("header", "x-fal-queue-priority"), "must be 'normal' or 'low'", "enum")],
        )
    return PRIORITIES[value]


def parse_idempotency_key(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_IDEMPOTENCY_KEY:
        raise HTTPException(
            422,
            [
                failures.field_error(
                    ("header", "idempotency-key"),
                    f"must be at most {MAX_IDEMPOTENCY_KEY} characters",
                    "too_long",
                )
            ],
        )
    return value or None


async def enqueue(
    state: AppState,
    request: Request,
    endpoint: Endpoint,
    body: BaseModel,
    key_id: str,
    *,
    webhook_url: str | None = None,
    max_queue_length: int | None = None,
    durable: bool = True,
) -> Job:
    """Check the prompt (blocklist) and the queue headers, store the request's images (api/inputs.py), then
    persist the job (before anyone is answered). `max_queue_length`: fal_max_queue_length, 429 when the
    endpoint's queue holds that many already. `durable=False` (sync /run, whose caller gets the result in
    the response): neither the job's commit nor its result's waits for the disk (store/database.py)."""
    if blocked := blocked_term(body, tuple(state.settings.prompt_blocklist)):
        name, term = blocked
        message = f"{name} contains a blocked term ({term!r})"
        raise HTTPException(422, [failures.field_error(("body", name), message, failures.CONTENT_POLICY)])
    if webhook_url is not None:
        try:
            await asyncio.to_thread(
                validate_url, webhook_url, allow_private=state.settings.allow_private_urls
            )
        except FetchError as exc:
            raise HTTPException(
                422, [failures.field_error(("query", "fal_webhook"), str(exc), "value_error")]
            ) from exc
    start_timeout = parse_start_timeout(request.headers.get("x-fal-request-timeout"))
    priority = parse_priority(request.headers.get("x-fal-queue-priority"))
    idempotency_key = parse_idempotency_key(request.headers.get("idempotency-key"))
    platform = platform_options(request.headers, state.settings)
    job_id = str(uuid.uuid4())
    staged = await state.inputs.stage(endpoint, body, key_id, job_id, public_base(request))
    sub = Submission(
        endpoint_id=endpoint.id,
        owner_key_id=key_id,
        input_json=staged.input_json,
        base_url=public_base(request),
        priority=priority,
        webhook_url=webhook_url,
        start_timeout=start_timeout,
        idempotency_key=idempotency_key,
        max_queue_per_key=state.settings.max_queue_per_key,
        max_queue_total=state.settings.max_queue_total,
        max_endpoint_queue=max_queue_length,
        runner_hint=platform.runner_hint,
        no_retry=platform.no_retry,
        store_io=platform.store_io,
        output_lifetime=platform.output_lifetime,
        job_id=job_id,
        durable=durable,
        lease_seconds=state.settings.lease_seconds,
    )
    bell, sub = _hand_to_idle_worker(state, sub)
    stored: list[bool] = []  # [whether it was created], once committed (maybe before it is on disk)

    def on_stored(job: Job, created: bool) -> None:  # on the submits thread
        stored.append(created)
        if bell is not None:
            bell.settle(job_id, created)

    try:
        job, created = await state.submitter.submit(sub, on_stored)  # group commit: api/services/submitter.py
    except BaseException as exc:
        if not stored:  # not queued: its files must not stay behind, nor its worker run it
            if bell is not None:
                bell.settle(job_id, False)
            await state.inputs.discard(staged.keys)
        if isinstance(exc, QueueFull):
            raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from exc
        raise
    if not created:  # an idempotent replay: the first request's own files are the ones it uses
        await state.inputs.discard(staged.keys)
    if bell is None and state.supervisor is not None:
        state.supervisor.ring()
    return job


def _hand_to_idle_worker(state: AppState, sub: Submission) -> tuple[ParentDoorbell | None, Submission]:
    """Hand the job to an idle worker of this node before it is stored: the worker starts it at once, no
    claim and no wait for the commit, and records nothing of it until told whether it was stored
    (ParentDoorbell.settle: refused past a cap, or its write failed, it is dropped). Jobs with a runner hint
    go through the queue, where the hint's worker is preferred; with an Idempotency-Key too, since a replay
    would be a job run for nothing. (The worker that took it, or None; the submission to store.)"""
    if state.supervisor is None or sub.runner_hint is not None or sub.idempotency_key is not None:
        return None, sub
    bell = state.supervisor.reserve_idle(sub.endpoint_id)
    if bell is None:
        return None, sub
    handed = dataclasses.replace(sub, worker_id=bell.worker_id)
    if not bell.hand(handed_job(handed)):
        bell.unreserve()  # a dead worker, or a job too large for one write: the queue takes it
        return None, sub
    return bell, handed


def build_queue_router(endpoints: list[Endpoint]) -> APIRouter:
    router = APIRouter(prefix="/queue", tags=["queue"], route_class=StrictJSONRoute)
    # Submit, status and result are served by api/fast_routes.py; these routes document them and define
    # what they answer. The request routes before the submit routes: they match sooner.
    router.add_api_route(
        "/{app:path}/requests/{request_id}/status", get_status, methods=["GET"], summary="Request status"
    )
    router.add_api_route(
        "/{app:path}/requests/{request_id}/status/stream",
        stream_status,
        methods=["GET"],
        summary="Request status as server-sent events",
    )
    router.add_api_route(
        "/{app:path}/requests/{request_id}/cancel", cancel, methods=["PUT"], summary="Cancel a request"
    )
    router.add_api_route(
        "/{app:path}/requests/{request_id}", get_result, methods=["GET"], summary="Request result"
    )
    for endpoint in endpoints:
        _add_submit_route(router, endpoint)
    router.add_api_route("/{endpoint_id:path}", submit_unknown, methods=["POST"], include_in_schema=False)
    return router


def _add_submit_route(router: APIRouter, endpoint: Endpoint) -> None:
    """POST /queue/{endpoint_id}: a route per endpoint, so its Input appears in /openapi.json."""
    input_model = endpoint.input_model

    async def submit(
        request: Request,
        body: input_model = Body(...),  # type: ignore[valid-type]
        fal_webhook: str | None = Query(
            None, description="URL to POST the result to when the request completes"
        ),
        fal_max_queue_length: int | None = Query(
            None, ge=0, description="Answer 429 instead when the endpoint already has this many queued"
        ),
        key_id: str = Depends(require_key),
    ) -> JSONResponse:
        return await submit_response(request, endpoint, body, key_id, fal_webhook, fal_max_queue_length)

    router.add_api_route(
        f"/{endpoint.id}",
        submit,
        methods=["POST"],
        summary=f"Submit a request to {endpoint.id}",
        description=endpoint.title,
        operation_id=f"submit_{endpoint.id.replace('/', '_').replace('-', '_')}",
    )


async def submit_response(
    request: Request,
    endpoint: Endpoint,
    body: BaseModel,
    key_id: str,
    webhook_url: str | None,
    max_queue_length: int | None,
) -> JSONResponse:
    """POST /queue/{endpoint}: the job queued (or handed to a worker), as fal answers a submit."""
    state = app_state(request)
    job = await enqueue(
        state, request, endpoint, body, key_id, webhook_url=webhook_url, max_queue_length=max_queue_length
    )
    position = await state.read(state.store.queue.queue_position, job) if job.status == IN_QUEUE else 0
    payload = {
        "status": IN_QUEUE,
        "request_id": job.id,
        "gateway_request_id": job.id,
        **request_urls(public_base(request), job),
        "queue_position": position,
    }
    return JSONResponse(payload, headers={REQUEST_ID_HEADER: job.id})


async def owned_job(state: AppState, request_id: str, key_id: str) -> Job:
    job = await state.read(state.store.queue.get, request_id, key_id)
    if job is None:  # another key's request is indistinguishable from a missing one
        raise HTTPException(404, "Request not found", headers=id_header(request_id))
    return job


async def _owned_state(state: AppState, request_id: str, key_id: str) -> JobState:
    job = await state.read(state.store.queue.state, request_id, key_id)
    if job is None:
        raise HTTPException(404, "Request not found", headers=id_header(request_id))
    return job


async def get_status(
    request: Request,
    app: str = AppPath,
    request_id: str = RequestIdPath,
    logs: str | None = Query(None, description="1|true to include logs"),
    key_id: str = Depends(require_key),
) -> JSONResponse:
    return await status_response(request, request_id, logs, key_id)


async def status_response(request: Request, request_id: str, logs: str | None, key_id: str) -> JSONResponse:
    """GET .../status: 202 until COMPLETED, then 200."""
    state = app_state(request)
    job = await _owned_state(state, request_id, key_id)
    with_logs = _flag(logs) and job.status != IN_QUEUE
    position = await state.read(state.store.queue.queue_position, job) if job.status == IN_QUEUE else 0
    lines = await state.read(state.store.queue.logs, job.id) if with_logs else None
    body = status_body(job, public_base(request), position, lines)
    return JSONResponse(
        body, status_code=200 if job.status == COMPLETED else 202, headers={REQUEST_ID_HEADER: job.id}
    )


class _FollowingResponse(StreamingResponse):
    """A status stream that lets go of its followed job however it ends (even before its first byte), and
    sends its last event (COMPLETED) with the stream's end, in one write: the client's next request (the
    result) waits for one packet, not two."""

    def __init__(self, events: AsyncIterator[tuple[str, bool]], follower: Follower, **kwargs: Any):
        super().__init__((), **kwargs)  # the body is `events`: stream_response below sends it
        self._events = events
        self._follower = follower

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = False
        async for event, last in self._events:
            await send({"type": "http.response.body", "body": event.encode(), "more_body": not last})
        if not last:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._follower.close()


async def stream_status(
    request: Request,
    app: str = AppPath,
    request_id: str = RequestIdPath,
    logs: str | None = Query(None, description="1|true to include logs"),
    key_id: str = Depends(require_key),
) -> StreamingResponse:
    state = app_state(request)
    job = await _owned_state(state, request_id, key_id)
    try:
        follower = state.watch.follow(job)
    except TooManyStreams as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5", **id_header(job.id)}) from exc
    return _FollowingResponse(
        _status_events(state, public_base(request), job, follower, _flag(logs)),
        follower,
        media_type="text/event-stream",
        headers={REQUEST_ID_HEADER: job.id, "Cache-Control": "no-store"},
    )


async def _status_events(
    state: AppState, base: str, job: JobState, follower: Follower, with_logs: bool
) -> AsyncIterator[tuple[str, bool]]:
    """(event, whether it is the last): one `data:` event per change (new status, queue position or log
    lines), the last one COMPLETED."""
    seen: JobProgress | None = None
    last_key: tuple[str, int] | None = None
    last_log_id = 0
    while True:
        progress = await follower.next(seen, KEEPALIVE_SECONDS)
        if progress is None:
            yield ": keepalive\n\n", False
            continue
        seen, job = progress, progress.state
        new_logs: list[LogLine] = []
        if with_logs and progress.last_log_id > last_log_id:
            new_logs = await state.read(state.store.queue.logs, job.id, last_log_id)
            last_log_id = new_logs[-1].id if new_logs else last_log_id
        key = (job.status, progress.position or 0)
        if key != last_key or new_logs:
            last_key = key
            logs = new_logs if with_logs and job.status != IN_QUEUE else None
            yield f"data: {json.dumps(status_body(job, base, key[1], logs))}\n\n", job.status == COMPLETED
        if job.status == COMPLETED:
            return


def failure_response(failure: failures.Failure, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """fal's request error: `{detail, error_type}` with X-Fal-Error-Type."""
    all_headers = {**(headers or {}), **failures.error_headers(failure.error_type)}
    return JSONResponse(failure.body(), status_code=failure.status, headers=all_headers)


def result_response(job: Job) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: job.id}
    if job.status != COMPLETED:
        return failure_response(failures.request_error(400, "Request is still in progress"), headers)
    if job.error is not None:
        headers.update(failures.error_headers(job.error_type))
        return JSONResponse(_error_body(job), status_code=job.error_status or 500, headers=headers)
    if job.retention & PAYLOAD_GONE:
        return failure_response(failures.RESULT_DELETED, headers)
    return JSONResponse(json.loads(job.output_json or "null"), headers=headers)


def _error_body(job: Job) -> Any:
    """A failed request's error body; once its payload is deleted, rebuilt from the error kept on its row."""
    if job.error_body_json:
        return json.loads(job.error_body_json)
    error_type = job.error_type or failures.INTERNAL_ERROR.error_type
    return failures.Failure(error_type, job.error_status or 500, job.error or "").body()


async def deliver_result(state: AppState, job: Job) -> JSONResponse:
    """The result, and for an X-Fal-Store-IO: 0 request without a webhook, the mark that it has been
    delivered (the pruner deletes its payload; a webhook's acknowledgement counts instead when it has one)."""
    response = result_response(job)
    if not job.store_io and job.status == COMPLETED and not job.webhook_url:
        await asyncio.to_thread(state.store.retention.result_delivered, job.id)
    return response


async def get_result(
    request: Request,
    app: str = AppPath,
    request_id: str = RequestIdPath,
    key_id: str = Depends(require_key),
) -> JSONResponse:
    return await result_response_for(request, request_id, key_id)


async def result_response_for(request: Request, request_id: str, key_id: str) -> JSONResponse:
    """GET .../requests/{id}: the result, or the error that ended the request."""
    state = app_state(request)
    return await deliver_result(state, await owned_job(state, request_id, key_id))


async def cancel(
    request: Request,
    app: str = AppPath,
    request_id: str = RequestIdPath,
    key_id: str = Depends(require_key),
) -> JSONResponse:
    outcome = await asyncio.to_thread(app_state(request).store.queue.cancel, request_id, key_id)
    headers = id_header(request_id)
    if outcome == "not_found":
        return JSONResponse(
            {"status": "NOT_FOUND", "detail": "Request not found"}, status_code=404, headers=headers
        )
    if outcome == "completed":
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400, headers=headers)
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)


async def submit_unknown(endpoint_id: str, key_id: str = Depends(require_key)) -> JSONResponse:
    raise HTTPException(404, f"Endpoint '{endpoint_id}' not found")
