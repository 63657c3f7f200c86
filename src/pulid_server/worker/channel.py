"""The side thread between the model and the store: keeps the running job's lease alive and writes its log
lines. One per worker process, serving one job at a time (`begin` ... `end`).

The model's thread only queues a line and reads a flag, so it never waits on the database between
denoising steps (bench: a synchronous write per step added ~1 ms to each 50 ms step). The cancel flag
comes back with each write, so a cancel is seen at most one step later than a synchronous check would.
Nothing waits on this thread at a job's start or end: `end` hands back the lines it has not written yet,
and the job's completion writes them in its own transaction (a thread started and joined per job cost
a scheduler wake-up each way, milliseconds on a busy machine). A line waits `LINGER_SECONDS` before it
is written, so that the last step's line goes with the completion instead of delaying it.
"""

from __future__ import annotations

import logging
import threading
import time

from pulid_server.store import JobQueue

log = logging.getLogger("pulid.worker")
LINGER_SECONDS = 0.01
LogLines = list[tuple[str, str]]  # (message, level)


class JobChannel:
    def __init__(self, jobs: JobQueue, worker_id: str, lease_seconds: float, heartbeat_seconds: float):
        self._jobs, self._worker_id = jobs, worker_id
        self._lease, self._every = lease_seconds, heartbeat_seconds
        self._news = threading.Condition()  # guards the fields below
        self._job_id: str | None = None
        self._lines: LogLines = []
        self._since = 0.0  # when the oldest unwritten line came
        self._next_beat = 0.0
        self._cancelled = threading.Event()
        self._writing = threading.Lock()  # held while lines or a beat of the current job are written
        threading.Thread(target=self._loop, daemon=True, name="job-channel").start()

    def begin(self, job_id: str) -> None:
        # No notify: the thread, idle, wakes every `_every` seconds, before this job's first beat is due.
        with self._news:
            self._job_id, self._lines = job_id, []
            self._cancelled.clear()
            self._next_beat = time.monotonic() + self._every

    def log(self, message: str, level: str = "INFO") -> None:
        with self._news:
            if not self._lines:
                self._since = time.monotonic()
            self._lines.append((message, level))
            self._news.notify()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def end(self) -> LogLines:
        """Stop serving the current job; the lines not written yet, in order, for its completion to write.
        Waits only for a write already under way (so that its lines come first)."""
        with self._writing, self._news:
            rest, self._lines, self._job_id = self._lines, [], None
        return rest

    def _loop(self) -> None:
        while True:
            with self._news:
                while (due := self._due()) > 0:
                    self._news.wait(due)
            with self._writing:
                with self._news:
                    job_id, batch, self._lines = self._job_id, self._lines, []
                    beat = job_id is not None and time.monotonic() >= self._next_beat
                    if beat:
                        self._next_beat = time.monotonic() + self._every
                if job_id is not None:
                    self._write(job_id, batch, beat)

    def _due(self) -> float:
        """Seconds until there is something to write (<= 0: now), or to look again. Holds `_news`."""
        if self._job_id is None:
            return self._every
        due = self._next_beat
        if self._lines:
            due = min(due, self._since + LINGER_SECONDS)
        return due - time.monotonic()

    def _write(self, job_id: str, batch: LogLines, beat: bool) -> None:
        try:
            if batch and self._jobs.append_logs(job_id, batch):
                self._cancelled.set()
            if beat:
                self._jobs.heartbeat(job_id, self._worker_id, self._lease)
        except Exception:  # noqa: BLE001 - a failed write or beat is retried; the lease has slack
            log.exception("job %s: store write failed", job_id)
