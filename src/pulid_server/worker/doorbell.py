"""The worker's side of the wake-up pipes to the API process that supervises it (embedded mode).

The API writes a byte to `wake` when it queues a job (the idle worker stops waiting); the worker writes a
finished job's id and a newline to `done` (a sync /run or a status stream answers at once). They only cut
latency: the store stays the source of truth, and a worker without pipes (`pulid worker`) polls it.
The API's side is api/services/doorbell.py.
"""

from __future__ import annotations

import os
import select
import threading


class WorkerDoorbell:
    """Wait for a wake-up (or a timeout), announce finished jobs. Without pipes: only the timeout."""

    def __init__(self, wake_fd: int | None, done_fd: int | None):
        self._wake_fd, self._done_fd = wake_fd, done_fd

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
