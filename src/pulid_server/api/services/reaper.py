"""Expires start deadlines and stale leases from the API process too, so that an API-only node
(or a node whose workers are all busy or dead) still ends late requests on time. The leases of a
supervised worker that died end at its next pass (`worker_gone`), instead of running out."""

from __future__ import annotations

import logging
import threading
from queue import SimpleQueue

from pulid_server.store import JobQueue

log = logging.getLogger("pulid.reaper")


class Reaper:
    def __init__(self, queue: JobQueue, max_attempts: int, every_seconds: float = 1.0):
        self._queue = queue
        self._max_attempts = max_attempts
        self._every = every_seconds
        self._stop = threading.Event()
        self._gone: SimpleQueue[str] = SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reaper")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def worker_gone(self, worker_id: str) -> None:
        """Thread-safe: requeue (or fail, past max_attempts) the jobs of a worker process that is gone."""
        self._gone.put(worker_id)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                while not self._gone.empty():
                    self._queue.expire_leases(self._gone.get())
                self._queue.reap(self._max_attempts)
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next tick
                log.exception("reap failed")
