"""The worker's side of its link to the API process that supervises it (embedded mode): the wake-up pipes,
and dying with that process.

The API writes a byte to `wake` when it queues a job (the idle worker stops waiting); the worker writes a
finished job's id and a newline to `done` (a sync /run or a status stream answers at once). They only cut
latency: the store stays the source of truth, and a worker without pipes (`pulid worker`) polls it.
The API's side is api/services/doorbell.py.

A supervised worker must not outlive its API process (a restarted server would start a second one, with
a second copy of the model in GPU memory). Two signs of the parent's death, either one enough:
- the kernel sends SIGHUP when the parent dies (Linux `PR_SET_PDEATHSIG`; once per thread of the parent
  as they exit, so it is a drain request that is not counted, unlike SIGTERM: worker/loop.py);
- the wake pipe reaches end-of-file, seen by a thread that blocks on it (no polling, and no busy loop
  once the pipe is closed): the worker stops claiming, finishes the job it runs and exits; after
  `ORPHAN_DRAIN_SECONDS` it gives that job back to the queue instead (as a second SIGTERM would).
The supervisor itself asks for a drain the same way: it closes the wake pipe.
"""

from __future__ import annotations

import _thread
import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("pulid.worker")
ORPHAN_DRAIN_SECONDS = 60.0
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
    Without pipes: only the timeout."""

    def __init__(self, wake_fd: int | None, done_fd: int | None, stopping: threading.Event):
        self._wake_fd, self._done_fd = wake_fd, done_fd
        self._stopping = stopping
        self._rung = threading.Event()
        self.parent_gone = threading.Event()
        if wake_fd is not None:
            os.set_blocking(wake_fd, True)  # the reader thread sleeps in read() until a byte or EOF
            threading.Thread(target=self._read_wake, daemon=True, name="doorbell").start()

    def wait(self, timeout: float) -> None:
        if self._wake_fd is None:
            self._stopping.wait(timeout)
            return
        self._rung.wait(timeout)
        self._rung.clear()  # one wake-up per batch of submits is enough: the loop reads the store next

    def done(self, job_id: str) -> None:
        if self._done_fd is not None:
            try:
                os.write(self._done_fd, job_id.encode() + b"\n")
            except OSError:  # the API went away; the store still has the result
                pass

    def _read_wake(self) -> None:
        assert self._wake_fd is not None
        while True:
            try:
                data = os.read(self._wake_fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            self._rung.set()
        log.info("the API process closed the doorbell: finishing the current job, then exiting")
        self.parent_gone.set()
        self._stopping.set()
        self._rung.set()
        time.sleep(ORPHAN_DRAIN_SECONDS)  # this daemon thread ends with the process, usually long before
        log.warning(
            "still running %.0f s after the API process let go: giving the job back", ORPHAN_DRAIN_SECONDS
        )
        _thread.interrupt_main()  # KeyboardInterrupt in the loop: the job goes back to the queue
        time.sleep(10)
        os._exit(1)
