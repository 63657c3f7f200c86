"""What the routes share: settings, the job store and the blob store (set up by the app's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from pulid_server.config import Settings
from pulid_server.files import BlobStore
from pulid_server.store import JobStore
from pulid_server.worker.supervisor import Supervisor
from pulid_server.worker.webhooks import WebhookSigner


@dataclass
class AppState:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    signer: WebhookSigner
    supervisor: Supervisor | None = None


def app_state(request: Request) -> AppState:
    return request.app.state.pulid  # type: ignore[no-any-return]
