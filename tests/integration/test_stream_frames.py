"""What a status stream hands the server, message by message (the app in this process over a real SQLite
store): its last event, COMPLETED, goes out with the stream's end, in one write, so that the client's
next request (the result) waits for one packet, not two."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pulid_server.api.app import create_app
from pulid_server.config import Settings
from tests.asgi import call


def test_the_completed_event_and_the_streams_end_are_one_message(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, extra_endpoints=["tests.fixtures.endpoints"]))

    async def scenario() -> list[dict[str, Any]]:
        async with app.router.lifespan_context(app):
            store = app.state.pulid.store
            key = store.keys.create_key("frames")
            owner = store.keys.authenticate(key)
            job = store.queue.submit(
                endpoint_id="test/echo", owner_key_id=owner, input_json="{}", base_url="x"
            )[0]
            claimed = store.queue.claim("w", ["test/echo"], 30)
            assert claimed is not None and store.queue.complete(claimed, "w", {"value": "x"})
            path = f"/queue/test/echo/requests/{job.id}/status/stream"
            return await call(app, "GET", path, {"host": "x", "authorization": f"Key {key}"})

    start, *body = asyncio.run(scenario())
    assert start["type"] == "http.response.start" and start["status"] == 200
    [last] = body  # no empty message after it
    assert last["more_body"] is False
    assert json.loads(last["body"].decode().removeprefix("data: "))["status"] == "COMPLETED"
