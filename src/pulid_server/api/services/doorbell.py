"""The API's side of the wake-up pipes to one supervised worker process (embedded mode).

`ring` writes a ring to the worker's `wake` pipe when a job is queued; `hand` writes a job about to be
stored already claimed by this worker, which it runs at once, without a claim or a read (only while the
worker is `idle`, as it said last, with nothing sent since), and `settle` whether it was stored. They are
called from any thread (the event loop rings and hands off, the submits thread settles). What the worker
writes to its `done` pipe (finished job ids, one per line, and that it is idle) is read by the API's
event loop when one is given (no thread in between: each hop is a scheduler wake-up on a busy machine),
else by a thread. The worker's side, and the format: worker/doorbell.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from pulid_server.store import Job
from pulid_server.worker.doorbell import DROPPED, IDLE, RING, STORED, handoff


class ParentDoorbell:
    """Ring one worker's wake pipe; read its done pipe (on `loop`, else in a thread), calling
    `on_done(job_id, result columns or None)` there, and `on_gone(worker_id)` once the worker is gone."""

    def __init__(
        self,
        on_done: Callable[[str, dict[str, Any] | None], None],
        loop: asyncio.AbstractEventLoop | None = None,
        on_gone: Callable[[str], None] = lambda worker_id: None,
    ):
        self.wake_read, self.wake_write = os.pipe()
        self.done_read, self.done_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        os.set_blocking(self.wake_read, False)
        self._on_done, self._on_gone = on_done, on_gone
        self.worker_id = ""  # as the worker said when it was idle
        self.idle = False  # it said so, and nothing was sent to it since
        self._sent = 0  # lines written: rings, hand-offs, settlements
        self._reserved_at = 0
        self._lock = threading.Lock()  # guards the three above: writers and the done reader are threads
        self._loop = loop  # reads the done pipe (None: a thread does, or the pipe is closed)
        if loop is None:
            threading.Thread(target=self._read_done, daemon=True, name="doorbell").start()
        else:
            os.set_blocking(self.done_read, False)
            self._partial = b""
            # add_reader is not thread-safe, and workers are restarted from the supervisor's thread
            loop.call_soon_threadsafe(loop.add_reader, self.done_read, self._readable, loop)

    def child_fds(self) -> tuple[int, int]:
        """(wake_fd, done_fd): the ends the worker process inherits."""
        return self.wake_read, self.done_write

    def spawned(self) -> None:
        """Close the child's ends here, so that the done reader sees EOF when the worker dies."""
        os.close(self.wake_read)
        os.close(self.done_write)

    def ring(self) -> None:
        self._send(RING + b"\n")  # a full pipe (the worker is awake anyway) or a worker just dead: dropped

    def reserve(self) -> bool:
        """Take this idle worker for a job about to be stored as claimed by it (then `hand` it the job, or
        `unreserve` if it could not be handed). On the event loop, reads the worker's news first: when a
        client submits right behind its last result, the worker's idle line is often there, unread."""
        if not self.idle and self._loop is not None:
            self._readable(self._loop)
        with self._lock:
            if not self.idle or not self.worker_id:
                return False
            self.idle, self._reserved_at = False, self._sent
            return True

    def unreserve(self) -> None:
        with self._lock:
            self.idle = self._sent == self._reserved_at  # still idle, unless something was sent meanwhile

    def hand(self, job: Job) -> bool:
        """Send a job about to be stored as claimed by this worker (then `settle` it); False if it could not
        be sent (a dead worker, or a job too large to be written whole at once)."""
        line = handoff(job)
        return len(line) <= select.PIPE_BUF and self._send(line)

    def settle(self, job_id: str, stored: bool) -> None:
        """Tell the worker whether the job handed to it was stored (it records its end only then), or not
        (it drops it)."""
        self._send((STORED if stored else DROPPED) + job_id.encode() + b"\n")

    def _send(self, line: bytes) -> bool:
        with self._lock:
            try:
                os.write(self.wake_write, line)  # at most PIPE_BUF: written whole or not at all
            except OSError:
                return False
            self._sent += 1
            self.idle = False
            return True

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data = os.read(self.done_read, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone
            self._gone()
            loop.remove_reader(self.done_read)
            os.close(self.done_read)
            self._loop = None
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._announce(line)

    def _read_done(self) -> None:
        with os.fdopen(self.done_read, "rb") as stream:
            for line in stream:
                self._announce(line.rstrip(b"\n"))
        self._gone()

    def _gone(self) -> None:
        """The worker process is gone (every one of its threads: the pipe's last writer). Jobs it was handed
        in its last moments, or was running, are requeued now rather than when their leases run out."""
        if self.worker_id:
            self._on_gone(self.worker_id)
        self.worker_id, self.idle = "", False

    def _announce(self, line: bytes) -> None:
        """`job_id`, `job_id<TAB>result columns as JSON`, or `+<events read> <worker id>` (worker/doorbell.py)."""
        if line.startswith(IDLE):
            events, _, worker_id = line[1:].decode().partition(" ")
            with self._lock:
                self.worker_id, self.idle = worker_id, int(events) == self._sent
            return
        job_id, _, record = line.partition(b"\t")
        self._on_done(job_id.decode().strip(), json.loads(record) if record else None)

    def close(self) -> None:
        try:
            os.close(self.wake_write)
        except OSError:
            pass
