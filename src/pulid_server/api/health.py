"""Liveness, readiness and the webhook-signature public keys (no auth)."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pulid_server.api.state import AppState, app_state

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The API process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="The store is reachable and (if this node runs workers) one is alive")
async def ready(state: AppState = Depends(app_state)) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        checks["store"] = await run_in_threadpool(state.store.ping)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["store"] = False
        checks["store_error"] = type(exc).__name__
    if state.supervisor is not None:
        checks["workers_alive"] = state.supervisor.alive()
    ok = checks["store"] is True and checks.get("workers_alive", 1) > 0
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)


@router.get("/.well-known/jwks.json", summary="Public keys that verify webhook signatures")
async def jwks(state: AppState = Depends(app_state)) -> dict[str, Any]:
    return state.signer.jwks()
