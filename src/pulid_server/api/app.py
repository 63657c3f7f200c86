"""The FastAPI app factory: routers, fal routing middleware, and a lifespan that owns the store and the
API-side services (api/services/: webhook delivery, reaper and, in embedded mode, the supervised workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pulid_server import __version__, endpoints, failures, web
from pulid_server.api import health, metrics, payloads, storage
from pulid_server.api.model_status import openapi_with_notices, random_weight_notices
from pulid_server.api.queue import REQUEST_ID_HEADER, build_queue_router, failure_response
from pulid_server.api.routing import BodyTooLarge, FalRoutingMiddleware
from pulid_server.api.run import build_run_router
from pulid_server.api.services.completions import CompletionWaiters
from pulid_server.api.services.pruner import Pruner
from pulid_server.api.services.reaper import Reaper
from pulid_server.api.services.signing import WebhookSigner
from pulid_server.api.services.supervisor import Supervisor
from pulid_server.api.services.webhooks import WebhookDispatcher
from pulid_server.api.state import AppState
from pulid_server.config import Settings
from pulid_server.store import open_job_store

log = logging.getLogger("pulid.api")


def create_app(settings: Settings | None = None, *, workers: int = 0) -> FastAPI:
    """Build the API. `workers` > 0 also runs that many supervised worker processes (embedded mode)."""
    settings = settings or Settings()
    endpoints.load_builtin_and_extra(settings.extra_endpoints)
    registered = endpoints.all_endpoints()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_job_store(settings.resolved_database_url())
        blobs = settings.blob_store()
        signer = WebhookSigner(store.values)
        dispatcher = WebhookDispatcher(store.outbox, signer, settings)
        reaper = Reaper(store.queue, settings.max_attempts)
        pruner = Pruner(store, blobs, settings.retention_policy(), settings.prune_every_seconds)
        completions = CompletionWaiters()
        completions.bind(asyncio.get_running_loop())
        supervisor = Supervisor(settings, workers, on_done=completions.announce) if workers > 0 else None
        app.state.pulid = AppState(settings, store, blobs, signer, pruner, supervisor, completions)
        dispatcher.start()
        reaper.start()
        pruner.start()
        if supervisor:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor:
                supervisor.stop()
            pruner.stop()
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
    app.include_router(build_queue_router(registered))
    app.include_router(build_run_router(registered))
    app.include_router(storage.router)
    app.include_router(payloads.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    app.add_middleware(FalRoutingMiddleware, max_body_bytes=settings.max_body_bytes)

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

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        message = f"Request body is larger than {settings.max_body_bytes} bytes"
        return failure_response(failures.request_error(413, message))

    @app.exception_handler(HTTPException)
    async def _refused(_request: Request, exc: HTTPException) -> JSONResponse:
        """The API's refusals as fal's request errors; a 422 listing fields keeps its `{detail: [...]}`."""
        if isinstance(exc.detail, list):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return failure_response(failures.request_error(exc.status_code, str(exc.detail)), exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        failure = failures.INTERNAL_ERROR
        headers = {**failures.error_headers(failure.error_type), REQUEST_ID_HEADER: ""}
        return JSONResponse(failure.body(), failure.status, headers=headers)

    return app
