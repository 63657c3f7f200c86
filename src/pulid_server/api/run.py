"""Sync run: `POST /run/{endpoint_id}` queues the request like a submit and answers with its result."""

import asyncio
import dataclasses

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from pulid_server import failures
from pulid_server.api.auth import require_key
from pulid_server.api.queue import deliver_result, enqueue, failure_response
from pulid_server.api.state import AppState, app_state
from pulid_server.api.strict_json import StrictJSONRoute
from pulid_server.endpoints import Endpoint
from pulid_server.store import COMPLETED, Job, JobState

MAX_POLL_SECONDS = 0.05
# The wait re-reads the store after a pause proportional to the time waited so far, so a result is seen
# at most ~4 % late (a fixed 100 ms pause added 50 ms on average to a 200 ms job), and long jobs still
# cost one read per MAX_POLL_SECONDS.
POLL_FRACTION = 0.04
MIN_POLL_SECONDS = 0.002


def poll_delay(waited: float, cap: float, pushed: bool) -> float:
    """How long the wait sleeps before re-reading the store. When this node supervises workers
    (`pushed`), their completions wake the wait at once, so only jobs of remote workers are polled for,
    every `cap` seconds; re-reading every few ms would cost more CPU than the requests themselves."""
    return cap if pushed else min(cap, max(MIN_POLL_SECONDS, POLL_FRACTION * waited))


async def wait_for_completion(state: AppState, request: Request, job: Job) -> Job | None:
    """Wait until the job completes (woken by a local worker, else polling the store); cancel it and
    return None if the caller goes away."""
    started = asyncio.get_running_loop().time()
    while True:
        waited = asyncio.get_running_loop().time() - started
        pause = poll_delay(waited, MAX_POLL_SECONDS, state.supervisor is not None)
        announced = await state.completions.wait(job.id, pause)
        if not announced and await request.is_disconnected():
            await asyncio.to_thread(state.store.queue.cancel, job.id, job.owner_key_id)
            return None
        if announced and (result := state.completions.result(job.id)) is not None:
            return dataclasses.replace(job, status=COMPLETED, **result)  # handed over by its worker
        # Announced: its whole row at once. Else the light columns, until it is done.
        read = state.store.queue.get if announced else state.store.queue.state
        latest: JobState | None = await state.read(read, job.id, None)
        if latest is not None and latest.status == COMPLETED:
            if isinstance(latest, Job):
                return latest
            finished: Job | None = await state.read(state.store.queue.get, job.id, None)
            return finished or job


async def run_response(request: Request, endpoint: Endpoint, body: BaseModel, key_id: str) -> Response:
    """POST /run/{endpoint}: the result, once the job is done (a 499 if the client went away first)."""
    state = app_state(request)
    job = await enqueue(state, request, endpoint, body, key_id, durable=False)
    done = await wait_for_completion(state, request, job)
    if done is None:
        return failure_response(failures.request_error(499, "Client disconnected"))
    return await deliver_result(state, done)


def build_run_router(endpoints: list[Endpoint]) -> APIRouter:
    """The /run routes: served by api/fast_routes.py; these document them and define what they answer."""
    router = APIRouter(prefix="/run", tags=["run"], route_class=StrictJSONRoute)
    for endpoint in endpoints:
        _add_run_route(router, endpoint)

    @router.post("/{endpoint_id:path}", include_in_schema=False)
    async def run_unknown(endpoint_id: str, key_id: str = Depends(require_key)) -> JSONResponse:
        raise HTTPException(404, f"Endpoint '{endpoint_id}' not found")

    return router


def _add_run_route(router: APIRouter, endpoint: Endpoint) -> None:
    input_model = endpoint.input_model

    async def run(
        request: Request,
        body: input_model = Body(...),  # type: ignore[valid-type]
        key_id: str = Depends(require_key),
    ) -> Response:
        return await run_response(request, endpoint, body, key_id)

    router.add_api_route(
        f"/{endpoint.id}",
        run,
        methods=["POST"],
        response_model=endpoint.output_model,
        summary=f"Run {endpoint.id} and wait for the result",
        operation_id=f"run_{endpoint.id.replace('/', '_').replace('-', '_')}",
    )
