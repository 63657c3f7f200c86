"""Keys take turns in the queue, and status streams are shared reads, capped per key (issue #12)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.servers import Server


@contextmanager
def stream(
    client: httpx.Client, status_url: str
) -> Iterator[tuple[httpx.Response, Iterator[dict[str, Any]]]]:
    with client.stream("GET", status_url + "/stream", timeout=30) as r:
        events = (json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: "))
        yield r, events


def test_a_key_with_a_backlog_cannot_hold_the_whole_queue(fresh_server: Server) -> None:
    fresh_server.workers = 0  # nothing runs: the queue only fills
    srv = fresh_server.start()
    with srv.client() as flood, srv.client(srv.new_key()) as late:
        backlog = [flood.post("/queue/test/echo", json={}).json() for _ in range(4)]
        newcomer = late.post("/queue/test/echo", json={}).json()
        assert newcomer["queue_position"] == 1  # behind the flood's first job only
        positions = [flood.get(s["status_url"]).json()["queue_position"] for s in backlog]
        assert positions == [0, 2, 3, 4]
        with stream(late, newcomer["status_url"]) as (_, events):
            assert next(events)["queue_position"] == 1
            flood.put(backlog[0]["cancel_url"])  # the queue moves: the stream says so
            assert next(events)["queue_position"] == 0


def test_status_streams_are_capped_per_key(fresh_server: Server) -> None:
    fresh_server.workers = 0
    fresh_server.env = {"PULID_MAX_STREAMS_PER_KEY": "2"}
    srv = fresh_server.start()
    with srv.client() as a, srv.client(srv.new_key()) as b:
        jobs = [a.post("/queue/test/echo", json={}).json() for _ in range(3)]
        other = b.post("/queue/test/echo", json={}).json()
        with stream(a, jobs[0]["status_url"]) as (first, _), stream(a, jobs[1]["status_url"]) as (second, _):
            assert first.status_code == second.status_code == 200
            third = a.get(jobs[2]["status_url"] + "/stream")
            assert third.status_code == 429 and third.headers["retry-after"]
            with stream(b, other["status_url"]) as (theirs, events):  # another key is not affected
                assert theirs.status_code == 200 and next(events)["status"] == "IN_QUEUE"
        deadline = time.monotonic() + 10  # closed streams give their places back
        while True:
            with stream(a, jobs[2]["status_url"]) as (r, _):
                if r.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)
