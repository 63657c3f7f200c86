"""Wake-ups between an API process and the worker processes it supervises (embedded mode).

Two pipes per worker: the API rings `wake` when it queues a job (the idle worker stops waiting), and the
worker writes a finished job's id to `done` (a sync /run or a status stream answers at once). They only
cut latency: the store stays the source of truth, and workers on other machines (`pulid worker`), which
have no pipes, fall back to polling it.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable

WAKE_FD_ENV, DONE_FD_ENV = "PULID_WAKE_FD", "PULID_DONE_FD"


class WorkerDoorbell:
    """The worker's side: wait for a wake-up (or a timeout), announce finished jobs."""

    def __init__(self, wake_fd: int | None, done_fd: int | None):
        self._wake_fd, self._done_fd = wake_fd, done_fd

    @classmethod
    def from_env(cls) -> WorkerDoorbell:
        def fd(name: str) -> int | None:
            value = os.environ.get(name, "")
            return int(value) if value.isdigit() else None

        return cls(fd(WAKE_FD_ENV), fd(DONE_FD_ENV))

    def wait(self, timeout: float, stopping: threading.Event) -> None:
        if self._wake_fd is None:
            stopping.wait(timeout)
            return
        readable, _, _ = select.select([self._wake_fd], [], [], timeout)
        if readable:
            try:
                os.read(self._wake_fd, 4096)  # drain: one wake-up per batch of submits is enough
            except BlockingIOError:
                pass

    def done(self, job_id: str) -> None:
        if self._done_fd is not None:
            try:
                os.write(self._done_fd, job_id.encode() + b"\n")
            except OSError:  # the API went away; the store still has the result
                pass


class ParentDoorbell:
    """The supervisor's side for one worker: ring its wake pipe, read its done pipe in a thread."""

    def __init__(self, on_done: Callable[[str], None]):
        self.wake_read, self.wake_write = os.pipe()
        self.done_read, self.done_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        os.set_blocking(self.wake_read, False)
        self._on_done = on_done
        threading.Thread(target=self._read_done, daemon=True, name="doorbell").start()

    def child_env(self) -> dict[str, str]:
        return {WAKE_FD_ENV: str(self.wake_read), DONE_FD_ENV: str(self.done_write)}

    def child_fds(self) -> tuple[int, int]:
        return self.wake_read, self.done_write

    def spawned(self) -> None:
        """Close the child's ends here, so that the done reader sees EOF when the worker dies."""
        os.close(self.wake_read)
        os.close(self.done_write)

    def ring(self) -> None:
        try:
            os.write(self.wake_write, b"!")
        except OSError:  # full pipe (the worker is awake anyway) or a worker that just died
            pass

    def _read_done(self) -> None:
        with os.fdopen(self.done_read, "rb") as stream:
            for line in stream:
                self._on_done(line.decode().strip())

    def close(self) -> None:
        try:
            os.close(self.wake_write)
        except OSError:
            pass


class CompletionWaiters:
    """API side: coroutines waiting for a job id; woken from the doorbell threads."""

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
