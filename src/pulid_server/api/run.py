"""Sync run: `POST /run/{endpoint_id}` queues the request like a submit and answers with its result."""

import asyncio

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from pulid_server import failures
from pulid_server.api.auth import require_key
from pulid_server.api.queue import deliver_result, enqueue, failure_response, poll_delay
from pulid_server.api.state import AppState, app_state
from pulid_server.endpoints import Endpoint
from pulid_server.store import COMPLETED, Job

MAX_POLL_SECONDS = 0.05


async def wait_for_completion(state: AppState, request: Request, job: Job) -> Job | None:
    """Wait until the job completes (woken by a local worker, else polling the store); cancel it and
    return None if the caller goes away."""
    started = asyncio.get_running_loop().time()
    while job.status != COMPLETED:
        waited = asyncio.get_running_loop().time() - started
        await state.completions.wait(
            job.id, poll_delay(waited, MAX_POLL_SECONDS, state.supervisor is not None)
        )
        if await request.is_disconnected():
            await asyncio.to_thread(state.store.queue.cancel, job.id, job.owner_key_id)
            return None
        latest: Job | None = await state.read(state.store.queue.get, job.id, None)
        job = latest or job
    return job


def build_run_router(endpoints: list[Endpoint]) -> APIRouter:
    router = APIRouter(prefix="/run", tags=["run"])
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
        state: AppState = Depends(app_state),
    ) -> JSONResponse:
        job = await enqueue(state, request, endpoint, body, key_id)
        done = await wait_for_completion(state, request, job)
        if done is None:
            return failure_response(failures.request_error(499, "Client disconnected"))
        return await deliver_result(state, done)

    router.add_api_route(
        f"/{endpoint.id}",
        run,
        methods=["POST"],
        response_model=endpoint.output_model,
        summary=f"Run {endpoint.id} and wait for the result",
        operation_id=f"run_{endpoint.id.replace('/', '_').replace('-', '_')}",
    )
