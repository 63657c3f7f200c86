"""The wake-up and done pipes between the API (api/services/doorbell.py) and a supervised worker
(worker/doorbell.py), as real pipes: rings, announcements with and without a result, the parent's end,
and jobs handed to an idle worker."""

from __future__ import annotations

import asyncio
import json
import os
import select
import threading
from typing import Any

from pulid_server.api.services.doorbell import ParentDoorbell
from pulid_server.store import IN_PROGRESS, Job
from pulid_server.worker.doorbell import MAX_ANNOUNCED_BYTES, WorkerDoorbell


def job(job_id: str, input_json: str = '{"prompt": "a cat!\\n"}') -> Job:
    """A job as the API hands it to a worker."""
    return Job(
        **dict.fromkeys(("inference_time", "error", "error_type", "webhook_url", "idempotency_key"), None),
        **dict.fromkeys(
            ("start_deadline", "finished_at", "output_json", "error_status", "error_body_json"), None
        ),
        seq=7,
        id=job_id,
        endpoint_id="test/echo",
        owner_key_id="k",
        status=IN_PROGRESS,
        priority=0,
        vt=0,
        input_json=input_json,
        base_url="http://127.0.0.1",
        created_at=1.5,
        started_at=1.5,
        worker_id="w-1",
        lease_until=61.5,
        attempts=1,
        cancel_requested=False,
    )


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
        idle = worker.wait(0.01).rung  # nothing queued: times out
        parent.ring()
        parent.ring()
        rung = worker.wait(5.0).rung
        drained = not worker.wait(0.01).rung  # both rings were one wake-up
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


def test_a_job_is_handed_only_to_a_worker_whose_idle_news_crossed_nothing_sent() -> None:
    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        parent = ParentDoorbell(lambda _job_id, _result: None, asyncio.get_running_loop())
        wake_fd, done_fd = parent.child_fds()
        worker = WorkerDoorbell(wake_fd, done_fd, threading.Event())

        async def news() -> None:  # the loop reads the done pipe
            await asyncio.sleep(0.05)

        seen["before"] = parent.reserve()  # the worker has said nothing yet
        worker.idle("w-1")
        worker.idle("w-1")  # said once per change: the second one writes nothing
        # No turn of the loop in between: reserve reads the news itself (a submit right behind a result).
        seen["reserved"] = parent.reserve() and parent.worker_id == "w-1"
        seen["twice"] = parent.reserve()  # taken until handed a job or let go
        parent.unreserve()
        seen["again"] = parent.reserve()
        seen["sent"] = parent.hand(job("job-1"))
        seen["busy"] = parent.reserve()
        wake = worker.wait(5.0)
        seen["wake"] = (wake.rung, wake.handed)
        parent.ring()  # a job queued while job-1 runs...
        parent.settle("job-1", True)  # ... and job-1 stored: the worker may record its end
        seen["stored"] = worker.stored("job-1", 5.0)
        seen["early ring"] = worker.wait(0.0).rung  # read while waiting for job-1's word, kept for the loop
        parent.settle("job-9", False)  # refused, or its write failed: the worker drops it
        seen["dropped"] = (worker.stored("job-9", 5.0), worker.stored("job-0", 0.01))
        worker.idle("w-1")  # idle again once that job is done
        parent.ring()  # ... but a job was queued meanwhile, which the worker has not read
        await news()
        seen["stale"] = parent.reserve()
        seen["rung"] = (worker.wait(5.0).rung, worker.drain())
        worker.idle("w-1")
        await news()
        seen["fresh"] = parent.reserve()
        seen["large"] = parent.hand(job("job-big", json.dumps({"prompt": "x" * select.PIPE_BUF})))
        parent.hand(job("job-2"))
        seen["drained"] = worker.drain()  # a stopping worker gives these back to the queue
        os.close(wake_fd)  # the worker died: a hand-off fails, and the API queues the job instead
        seen["dead"] = parent.hand(job("job-3"))
        parent.close()
        return seen

    seen = asyncio.run(scenario())
    assert not seen["before"] and seen["reserved"] and not seen["twice"] and seen["again"]
    # The job arrives whole (no read of the store), a "!" and an escaped newline in its input included.
    assert seen["sent"] and not seen["busy"] and seen["wake"] == (False, [job("job-1")])
    assert seen["stored"] is True and seen["early ring"] and seen["dropped"] == (False, None)
    assert not seen["stale"] and seen["rung"] == (True, []) and seen["fresh"]
    # A job too large for one pipe write is not sent (the API queues it): only job-2 is drained.
    assert not seen["large"] and seen["drained"] == [job("job-2")] and not seen["dead"]
