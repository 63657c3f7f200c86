"""Python client for pulid-server, mirroring fal-client 1.0.3's surface (sync and async).

    from pulid_server.client import SyncClient
    with SyncClient() as client:                     # env PULID_URL, PULID_KEY (or FAL_KEY)
        out = client.subscribe("fal-ai/pulid", {"prompt": "...", "reference_images": [{"image_url": Path("me.jpg")}]})

Local `Path`s and PIL images anywhere in the arguments are uploaded and replaced by their URLs.
"""

from pulid_server.client._core import DEFAULT_URL, Retry, RetryPolicy
from pulid_server.client.aio import AsyncClient, AsyncRequestHandle
from pulid_server.client.errors import (
    PulidClientError,
    PulidConnectionError,
    PulidHTTPError,
    PulidTimeoutError,
    RequestFailed,
)
from pulid_server.client.files import encode, encode_file, encode_image
from pulid_server.client.status import Completed, InProgress, Queued, Status
from pulid_server.client.sync import SyncClient, SyncRequestHandle

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncRequestHandle",
    "Completed",
    "InProgress",
    "PulidClientError",
    "PulidConnectionError",
    "PulidHTTPError",
    "PulidTimeoutError",
    "Queued",
    "RequestFailed",
    "Retry",
    "RetryPolicy",
    "Status",
    "SyncClient",
    "SyncRequestHandle",
    "encode",
    "encode_file",
    "encode_image",
]
