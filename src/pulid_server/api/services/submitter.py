"""Group commit for submits: one thread writes every submit of this API process, and the submits that
arrive while it commits go into its next transaction together (JobQueue.submit_many), so that a burst
of N submits costs one transaction and one sync to disk instead of N. A lone submit waits for nothing:
the thread takes whatever is queued the moment it is free. Each request is answered only after the
commit that holds its job.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from pulid_server.store import Job, JobQueue, Submission

MAX_BATCH = 64  # submissions per transaction: bounds how long the write lock is held
_Waiter = tuple[Submission, asyncio.Future[tuple[Job, bool]]]


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

    async def submit(self, sub: Submission) -> tuple[Job, bool]:
        """(job, created), as JobQueue.submit; raises QueueFull past a cap, or the store's error."""
        future: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._pending.put((sub, future))
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
        try:
            results = list(self._jobs.submit_many([sub for sub, _ in batch]))
        except Exception as exc:  # noqa: BLE001 - each waiting request gets the error (e.g. StorageFull)
            results = [exc] * len(batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_answer, [future for _, future in batch], results)


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
