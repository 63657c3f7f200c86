"""The worker's side of its link to the API process that supervises it (embedded mode): the wake-up pipes,
and dying with that process.

The API writes a byte to `wake` when it queues a job (the idle worker stops waiting); the worker writes a
finished job's id to `done`, with its result when small (a sync /run or a status stream answers at once,
a /run without reading the result back). They only cut
latency: the store stays the source of truth, and a worker without pipes (`pulid worker`) polls it.
The API's side is api/services/doorbell.py.

A supervised worker must not outlive its API process (a restarted server would start a second one, with
a second copy of the model in GPU memory). Two signs of the parent's death, either one enough:
- the kernel sends SIGHUP when the parent dies (Linux `PR_SET_PDEATHSIG`; once per thread of the parent
  as they exit, so it is a drain request that is not counted, unlike SIGTERM: worker/loop.py);
- the wake pipe hangs up, seen by a thread that waits for it (no polling, and no busy loop once the
  pipe is closed): the worker stops claiming, finishes the job it runs and exits; after
  `ORPHAN_DRAIN_SECONDS` it gives that job back to the queue instead (as a second SIGTERM would).
The supervisor itself asks for a drain the same way: it closes the wake pipe.
"""

from __future__ import annotations

import _thread
import ctypes
import json
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger("pulid.worker")
ORPHAN_DRAIN_SECONDS = 60.0
MAX_ANNOUNCED_BYTES = 16 * 1024  # a bigger result (inline images) is read from the store instead
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel send SIGHUP when the parent process dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # it died before the line above: nobody will send that signal
        raise SystemExit("the supervising API process is gone")


class WorkerDoorbell:
    """Wait for a wake-up (or a timeout), announce finished jobs, and notice the parent's end.
    Without pipes: only the timeout.

    The loop's own thread waits on the wake pipe (a thread in between cost a scheduler wake-up per job);
    a side thread only waits for the pipe's hang-up (poll with no events: POLLHUP is always reported),
    so that the parent's end is seen while a job runs."""

    def __init__(self, wake_fd: int | None, done_fd: int | None, stopping: threading.Event):
        self._wake_fd, self._done_fd = wake_fd, done_fd
        self._stopping = stopping
        self.parent_gone = threading.Event()
        if wake_fd is not None:
            os.set_blocking(wake_fd, False)

    def watch_parent(self) -> None:
        """Start the thread that sees the parent let go while a job runs (and, past ORPHAN_DRAIN_SECONDS,
        gives the job back and ends the process)."""
        if self._wake_fd is not None:
            threading.Thread(target=self._watch_hangup, daemon=True, name="doorbell").start()

    def wait(self, timeout: float) -> bool:
        """Whether the API rang (a job was queued) before `timeout`."""
        if self._wake_fd is None or self.parent_gone.is_set():
            self._stopping.wait(timeout)
            return False
        readable, _, _ = select.select([self._wake_fd], [], [], timeout)
        if not readable:
            return False
        try:
            data = os.read(self._wake_fd, 4096)  # every ring so far: one wake-up per batch of submits
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._parent_went()
        return bool(data)

    def done(self, job_id: str, columns: dict[str, Any] | None = None) -> None:
        """Announce a finished job; with its result's `columns` (as stored) when they are small, so that the
        API answers without reading them back."""
        if self._done_fd is None:
            return
        line = job_id.encode()
        if columns is not None:
            record = json.dumps(columns).encode()  # no raw newline: JSON escapes them
            if len(record) <= MAX_ANNOUNCED_BYTES:
                line += b"\t" + record
        try:
            os.write(self._done_fd, line + b"\n")
        except OSError:  # the API went away; the store still has the result
            pass

    def _parent_went(self) -> None:
        if not self.parent_gone.is_set():
            log.info("the API process closed the doorbell: finishing the current job, then exiting")
        self.parent_gone.set()
        self._stopping.set()

    def _watch_hangup(self) -> None:
        assert self._wake_fd is not None
        poller = select.poll()
        poller.register(self._wake_fd, 0)
        while not poller.poll():
            pass
        self._parent_went()
        time.sleep(ORPHAN_DRAIN_SECONDS)  # this daemon thread ends with the process, usually long before
        log.warning(
            "still running %.0f s after the API process let go: giving the job back", ORPHAN_DRAIN_SECONDS
        )
        _thread.interrupt_main()  # KeyboardInterrupt in the loop: the job goes back to the queue
        time.sleep(10)
        os._exit(1)
