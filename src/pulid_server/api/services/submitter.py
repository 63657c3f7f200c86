"""Group commit for submits: one thread writes every submit of this API process, and the submits that
arrive while it commits go into its next transaction together (JobQueue.submit_many), so that a burst
of N submits costs one transaction and one sync to disk instead of N. A lone submit waits for nothing:
the thread takes whatever is queued the moment it is free. Each request is answered only after the
commit that holds its job is on disk; meanwhile (`on_stored`, on SQLite) the worker a job was handed to
hears from this thread that it is stored (a hop through the event loop cost a scheduler wake-up), and
records its end while the sync to disk runs.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

from pulid_server.store import Job, JobQueue, Submission

MAX_BATCH = 64  # submissions per transaction: bounds how long the write lock is held
OnStored = Callable[[Job, bool], None]  # (job, created), on the submits thread, before the sync to disk
_Waiter = tuple[Submission, asyncio.Future[tuple[Job, bool]], OnStored | None]


class SubmitBatcher:
    def __init__(self, jobs: JobQueue):
        self._jobs = jobs
        self._pending: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="submits")

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        self._pending.put(None)
        self._thread.join(30)

    async def submit(self, sub: Submission, on_stored: OnStored | None = None) -> tuple[Job, bool]:
        """(job, created), as JobQueue.submit, once on disk; raises QueueFull past a cap, or the store's
        error. `on_stored(job, created)` is called on this batcher's thread once it is committed, maybe before
        it is on disk: it must be quick and thread-safe."""
        future: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._pending.put((sub, future, on_stored))
        return await future

    def _run(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Waiter]) -> None:
        results: list[tuple[Job, bool] | BaseException]
        assert self._loop is not None
        try:
            results = list(self._jobs.submit_many([sub for sub, _, _ in batch], sync_later=True))
            for (_, _, on_stored), result in zip(batch, results, strict=True):
                if on_stored is not None and not isinstance(result, BaseException):
                    on_stored(*result)
            if any(sub.durable for sub, _, _ in batch):
                self._jobs.sync()  # failing, the jobs stay stored (maybe running), as if the answer was lost
        except Exception as exc:  # noqa: BLE001 - each waiting request gets the error (e.g. StorageFull)
            results = [exc] * len(batch)
        self._loop.call_soon_threadsafe(_answer, [future for _, future, _ in batch], results)


def _answer(
    futures: list[asyncio.Future[tuple[Job, bool]]], results: list[tuple[Job, bool] | BaseException]
) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():  # its request was cancelled (client gone); the job is queued all the same
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
