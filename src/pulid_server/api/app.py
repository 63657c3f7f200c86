"""The FastAPI app factory: routers, fal routing middleware, error handlers, and a lifespan that owns the
stores and the API-side services (api/services/: webhook delivery, reaper, status-stream watch and, in
embedded mode, the supervised workers)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pulid_server import __version__, endpoints, failures, web
from pulid_server.api import fast_routes, health, metrics, payloads
from pulid_server.api.inputs import InputStager
from pulid_server.api.model_status import openapi_with_notices, random_weight_notices
from pulid_server.api.queue import REQUEST_ID_HEADER, build_queue_router, failure_response
from pulid_server.api.routing import FalRoutingMiddleware
from pulid_server.api.run import build_run_router
from pulid_server.api.services.completions import CompletionWaiters
from pulid_server.api.services.pruner import Pruner
from pulid_server.api.services.reaper import Reaper
from pulid_server.api.services.signing import WebhookSigner
from pulid_server.api.services.submitter import SubmitBatcher
from pulid_server.api.services.supervisor import Supervisor
from pulid_server.api.services.watch import JobWatch
from pulid_server.api.services.webhooks import WebhookDispatcher
from pulid_server.api.state import AppState
from pulid_server.api.storage import build_storage_router
from pulid_server.config import Settings
from pulid_server.store import StorageFull

log = logging.getLogger("pulid.api")


def create_app(settings: Settings | None = None, *, workers: int = 0) -> FastAPI:
    """Build the API. `workers` > 0 also runs that many supervised worker processes (embedded mode)."""
    settings = settings or Settings()
    endpoints.load_builtin_and_extra(settings.extra_endpoints)
    registered = endpoints.all_endpoints()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = settings.job_store()
        blobs = settings.blob_store()
        signer = WebhookSigner(store.values)
        dispatcher = WebhookDispatcher(store.outbox, signer, settings)
        reaper = Reaper(store.queue, settings.max_attempts)
        pruner = Pruner(store, blobs, settings.retention_policy(), settings.prune_every_seconds)
        completions = CompletionWaiters()
        completions.bind(asyncio.get_running_loop())
        watch = JobWatch(store.queue, settings.max_streams_per_key, inline=store.inline_reads)
        inputs = InputStager(settings, blobs)
        submitter = SubmitBatcher(store.queue)

        def on_done(job_id: str, result: dict[str, Any] | None) -> None:  # a supervised worker finished a job
            completions.announce(job_id, result)
            watch.announce(job_id)

        loop = asyncio.get_running_loop()
        supervisor = None
        if workers > 0:
            supervisor = Supervisor(settings, workers, on_done=on_done, on_gone=reaper.worker_gone, loop=loop)
        app.state.pulid = AppState(
            settings, store, blobs, signer, pruner, inputs, watch, submitter, supervisor, completions
        )
        dispatcher.start()
        reaper.start()
        pruner.start()
        watch.start()
        submitter.start()
        if supervisor:
            supervisor.start()
        # What exists now lives as long as the process: keep it out of full garbage collections, which
        # otherwise walk it all. And run those 10x less often than Python's default: each one walks every
        # object of every open connection (~200 per status stream, 0.5 s with 2,000 streams), a stall of
        # every request in flight (bench/bench_hostile.py). Young collections stay as they are.
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        try:
            yield
        finally:
            if supervisor:
                supervisor.stop()
            pruner.stop()
            await watch.stop()
            submitter.stop()
            inputs.close()
            reaper.stop()
            dispatcher.stop()
            store.close()

    app = FastAPI(
        title="pulid-server",
        version=__version__,
        description="Self-hosted PuLID behind fal's queue API. Authenticate with `Authorization: Key <key_id:secret>`.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    # The hottest routes, matched before the FastAPI routes that document them (api/fast_routes.py).
    app.router.routes.extend(fast_routes.routes(registered))
    app.include_router(build_queue_router(registered))
    app.include_router(build_run_router(registered))
    app.include_router(build_storage_router())
    app.include_router(payloads.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    app.add_middleware(
        FalRoutingMiddleware, max_body_bytes=settings.max_body_bytes, max_file_bytes=settings.max_file_bytes
    )

    def notices() -> dict[str, str]:
        # FastAPI calls app.openapi() inline in its async route: one read of the small, indexed workers
        # table on a rarely fetched document. A failing store must not take the schema down with it.
        state: AppState | None = getattr(app.state, "pulid", None)
        try:
            workers = (
                state.store.cluster.recent_workers(health.worker_alive_window(settings)) if state else []
            )
        except Exception:  # noqa: BLE001
            return {}
        return random_weight_notices(workers)

    app.openapi = openapi_with_notices(app.openapi, notices)  # type: ignore[method-assign]

    @app.exception_handler(HTTPException)
    async def _refused(_request: Request, exc: HTTPException) -> JSONResponse:
        """The API's refusals as fal's request errors; a 422 listing fields keeps its `{detail: [...]}`."""
        if isinstance(exc.detail, list):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return failure_response(failures.request_error(exc.status_code, str(exc.detail)), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each field's input, which may not encode (NaN) or be megabytes.
        return JSONResponse({"detail": failures.request_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StorageFull)
    @app.exception_handler(OSError)
    async def _out_of_space(request: Request, exc: Exception) -> JSONResponse:
        if not failures.is_storage_full(exc):
            raise exc  # any other OSError is an internal error (below)
        # A clear, retryable answer, one log line: no paths, no driver messages, no traceback per request.
        log.error("out of storage space on %s %s", request.method, request.url.path)
        return failure_response(failures.STORAGE_FULL, {REQUEST_ID_HEADER: ""})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return failure_response(failures.INTERNAL_ERROR, {REQUEST_ID_HEADER: ""})

    return app
