"""Expires start deadlines and stale leases from the API process too, so that an API-only node
(or a node whose workers are all busy or dead) still ends late requests on time."""

from __future__ import annotations

import logging
import threading

from pulid_server.store import JobQueue

log = logging.getLogger("pulid.reaper")


class Reaper:
    def __init__(self, queue: JobQueue, max_attempts: int, every_seconds: float = 1.0):
        self._queue = queue
        self._max_attempts = max_attempts
        self._every = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reaper")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._queue.reap(self._max_attempts)
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next tick
                log.exception("reap failed")
