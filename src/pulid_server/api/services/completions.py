"""Coroutines of the API waiting for a job to finish, woken when a supervised worker announces it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict


class CompletionWaiters:
    """Waits keyed by job id; `announce` is called from the doorbell threads."""

    REMEMBERED = 10_000  # recently finished ids, so that a wait starting just after the news returns at once

    def __init__(self) -> None:
        self._events: defaultdict[str, list[asyncio.Event]] = defaultdict(list)
        self._done: OrderedDict[str, None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, job_id: str, timeout: float) -> None:
        """Sleep up to `timeout`, returning early if the job is (or was just) announced as done."""
        if job_id in self._done:
            return
        event = asyncio.Event()
        self._events[job_id].append(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._events.get(job_id)
            if waiters is not None:
                waiters.remove(event)
                if not waiters:
                    del self._events[job_id]

    def announce(self, job_id: str) -> None:
        """Thread-safe: wake every coroutine waiting for `job_id`."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        self._done[job_id] = None
        if len(self._done) > self.REMEMBERED:
            self._done.popitem(last=False)
        for event in self._events.get(job_id, ()):
            event.set()
