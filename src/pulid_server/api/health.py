"""Liveness, readiness and the webhook-signature public keys (no auth)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pulid_server.api.model_status import loaded_models, random_weight_notices
from pulid_server.api.state import app_state
from pulid_server.config import Settings

router = APIRouter(tags=["health"])


def worker_alive_window(settings: Settings) -> float:
    """A worker silent for longer than this is presumed dead (its job's lease has expired too)."""
    return max(settings.lease_seconds, 3 * settings.heartbeat_seconds)


@router.get("/health/live", summary="The API process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="The store is reachable and (if this node runs workers) one is alive",
    description="Also reports, for information, the workers of the whole deployment that reported within "
    "the lease time (`workers_recent`), the endpoints they have loaded (`endpoints_ready`), the model preset "
    "each endpoint loaded (`models`, e.g. `official` or `tiny`) and, for endpoints that run the tiny model's "
    "random weights, what to do about it (`random_weights`). An API-only node (`--workers 0`) is ready "
    "without workers: requests queue until a worker comes.",
)
async def ready(request: Request) -> JSONResponse:
    state = app_state(request)
    checks: dict[str, Any] = {}
    try:
        checks["store"] = await asyncio.to_thread(state.store.ping)
        workers = await asyncio.to_thread(
            state.store.cluster.recent_workers, worker_alive_window(state.settings)
        )
        checks["workers_recent"] = len(workers)
        checks["endpoints_ready"] = sorted({e for w in workers for e in w.endpoints})
        checks["models"] = loaded_models(workers)
        checks["random_weights"] = random_weight_notices(workers)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["store"] = False
        checks["store_error"] = type(exc).__name__
    if state.supervisor is not None:
        checks["workers_alive"] = state.supervisor.alive()
    ok = checks["store"] is True and checks.get("workers_alive", 1) > 0
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)


@router.get("/.well-known/jwks.json", summary="Public keys that verify webhook signatures")
async def jwks(request: Request) -> dict[str, Any]:
    return app_state(request).signer.jwks()
