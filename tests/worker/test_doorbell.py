"""The wake-up and done pipes between the API (api/services/doorbell.py) and a supervised worker
(worker/doorbell.py), as real pipes: rings, announcements with and without a result, the parent's end."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pulid_server.api.services.doorbell import ParentDoorbell
from pulid_server.worker.doorbell import MAX_ANNOUNCED_BYTES, WorkerDoorbell


def test_rings_and_announcements_cross_the_pipes_and_a_closed_pipe_stops_the_worker() -> None:
    async def scenario() -> tuple[list[Any], bool, bool, bool, bool]:
        announced: list[tuple[str, dict[str, Any] | None]] = []
        arrived = asyncio.Event()

        def on_done(job_id: str, result: dict[str, Any] | None) -> None:  # on the loop: no thread between
            announced.append((job_id, result))
            if len(announced) == 3:
                arrived.set()

        parent = ParentDoorbell(on_done, asyncio.get_running_loop())
        wake_fd, done_fd = parent.child_fds()
        stopping = threading.Event()
        worker = WorkerDoorbell(wake_fd, done_fd, stopping)
        idle = worker.wait(0.01)  # nothing queued: times out
        parent.ring()
        parent.ring()
        rung = worker.wait(5.0)
        drained = not worker.wait(0.01)  # both rings were one wake-up
        worker.done("a", {"output_json": '{"value": "x"}'})
        worker.done("b", {"output_json": "x" * MAX_ANNOUNCED_BYTES})  # too big: the API reads the store
        worker.done("c")
        await asyncio.wait_for(arrived.wait(), 5.0)
        parent.close()  # the API lets go (a drain, or its end); watch_parent's thread is not started here
        worker.wait(5.0)  # (it would end this process ORPHAN_DRAIN_SECONDS later)
        return announced, idle, rung and drained, worker.parent_gone.is_set(), stopping.is_set()

    announced, idle, rung, gone, stopping = asyncio.run(scenario())
    assert not idle and rung
    assert announced == [("a", {"output_json": '{"value": "x"}'}), ("b", None), ("c", None)]
    assert gone and stopping
