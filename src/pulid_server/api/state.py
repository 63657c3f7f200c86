"""What the routes share: settings, the stores and the API-side services (set up by the app's lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from pulid_server.api.inputs import InputStager
from pulid_server.api.services.completions import CompletionWaiters
from pulid_server.api.services.pruner import Pruner
from pulid_server.api.services.signing import WebhookSigner
from pulid_server.api.services.submitter import SubmitBatcher
from pulid_server.api.services.supervisor import Supervisor
from pulid_server.api.services.watch import JobWatch
from pulid_server.config import Settings
from pulid_server.files import BlobStore
from pulid_server.store import JobStore

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    signer: WebhookSigner
    pruner: Pruner
    inputs: InputStager
    watch: JobWatch
    submitter: SubmitBatcher
    supervisor: Supervisor | None = None
    completions: CompletionWaiters = field(default_factory=CompletionWaiters)

    async def read(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run a store read. SQLite (WAL) readers never wait for a lock, so they run inline and skip the
        thread hop (bench: ~30% of the status route's CPU); network databases read in a thread."""
        if self.store.inline_reads:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)


def app_state(request: Request) -> AppState:
    """Called by the routes themselves, not as a FastAPI dependency: each dependency costs every request
    ~10 µs (api/fast_routes.py)."""
    return request.app.state.pulid  # type: ignore[no-any-return]
