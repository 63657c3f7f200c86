"""Coroutines of the API waiting for a job to finish, woken when a supervised worker announces it (with its
result, when small: a sync /run answers without reading it back)."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, defaultdict
from typing import Any


class CompletionWaiters:
    """Waits keyed by job id; `announce` may be called from any thread."""

    REMEMBERED = 10_000  # recently finished ids, so that a wait starting just after the news returns at once
    # Announced results kept for a wait to take: a job handed to an idle worker can finish before its request
    # waits for it. Bounded (a result is at most worker/doorbell.py's MAX_ANNOUNCED_BYTES).
    RESULTS_KEPT = 256

    def __init__(self) -> None:
        self._waiters: defaultdict[str, list[asyncio.Future[bool]]] = defaultdict(list)
        self._done: OrderedDict[str, None] = OrderedDict()
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()  # announced, not taken yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop's thread."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Sleep up to `timeout`, returning early (True) if the job is (or was just) announced as done."""
        if job_id in self._done:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters[job_id].append(future)
        timer = loop.call_later(timeout, _settle, future, False)
        try:
            return await future
        finally:
            timer.cancel()
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[job_id]

    def result(self, job_id: str) -> dict[str, Any] | None:
        """The result columns announced with the job (worker/doorbell.py), once; None if not announced."""
        return self._results.pop(job_id, None)

    def announce(self, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Thread-safe: wake every coroutine waiting for `job_id`."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:  # the loop's own reader (api/services/doorbell.py)
            self._wake(job_id, result)
        else:
            self._loop.call_soon_threadsafe(self._wake, job_id, result)

    def _wake(self, job_id: str, result: dict[str, Any] | None) -> None:
        self._done[job_id] = None
        if len(self._done) > self.REMEMBERED:
            self._done.popitem(last=False)
        if result is not None:
            self._results[job_id] = result
            if len(self._results) > self.RESULTS_KEPT:
                self._results.popitem(last=False)
        for future in self._waiters.get(job_id, ()):
            _settle(future, True)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
