"""The worker's side of its link to the API process that supervises it (embedded mode): the wake-up pipes,
and dying with that process.

On `wake`, the API writes `!\n` when it queues a job (the idle worker stops waiting and claims it), or
`<the job's fields as a JSON array>\n` when it hands a job straight to this worker: the job is being
stored already claimed by it, and the worker runs it at once, with no claim and no read (a hand-off is
one write, at most PIPE_BUF bytes; a larger job goes through the queue). Then `=<job id>\n` once the
job is stored, or `x<job id>\n` if it was not (refused past a cap, or its write failed): the worker
records the job's end only after the first, and drops the job after the second. It hands one only to a
worker that said it is idle: on `done`, the worker writes `+<events read> <worker id>\n` when it has
nothing to do (events: the lines it has read, so that the API knows the news crossed nothing it sent
since), and a finished job's id, with its result when small (a sync /run or a status stream answers at
once, a /run without reading the result back). The pipes only cut latency: the store stays the source of truth, and a worker without
pipes (`pulid worker`) polls it. The API's side is api/services/doorbell.py.

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
from dataclasses import dataclass, field
from typing import Any

from pulid_server.store import Job
from pulid_server.store.records import field_names

log = logging.getLogger("pulid.worker")
ORPHAN_DRAIN_SECONDS = 60.0
MAX_ANNOUNCED_BYTES = 16 * 1024  # a bigger result (inline images) is read from the store instead
_PR_SET_PDEATHSIG = 1
RING, STORED, DROPPED = b"!", b"=", b"x"  # lines on `wake` (a ring is a line of its own)
IDLE = b"+"  # starts a line on `done`


@dataclass
class Wake:
    """What a wait brought: a ring (a job was queued), and the jobs handed to this worker."""

    rung: bool = False
    handed: list[Job] = field(default_factory=list)


def handoff(job: Job) -> bytes:
    """The line that hands `job` to a worker (JSON escapes newlines)."""
    return json.dumps([getattr(job, name) for name in field_names(Job)]).encode() + b"\n"


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
        self._events = 0  # lines read so far
        self._told_idle: int | None = None  # `_events` when this worker last said it was idle
        self._partial = b""
        self._stored: dict[str, bool] = {}  # handed jobs settled by the API, not asked about yet
        self._early = Wake()  # rings and hand-offs read while waiting for a job's settlement
        if wake_fd is not None:
            os.set_blocking(wake_fd, False)

    def watch_parent(self) -> None:
        """Start the thread that sees the parent let go while a job runs (and, past ORPHAN_DRAIN_SECONDS,
        gives the job back and ends the process)."""
        if self._wake_fd is not None:
            threading.Thread(target=self._watch_hangup, daemon=True, name="doorbell").start()

    def wait(self, timeout: float) -> Wake:
        """What the API sent before `timeout`: a ring, jobs handed to this worker, or nothing."""
        if self._early.rung or self._early.handed:
            early, self._early = self._early, Wake()
            return early
        if self._wake_fd is None or self.parent_gone.is_set():
            self._stopping.wait(timeout)
            return Wake()
        readable, _, _ = select.select([self._wake_fd], [], [], timeout)
        return self._read() if readable else Wake()

    def stored(self, job_id: str, timeout: float) -> bool | None:
        """Whether the job handed to this worker was stored (True) or dropped (False), as the API says;
        None if it said nothing within `timeout` (or is gone): the store knows."""
        deadline = time.monotonic() + timeout
        while job_id not in self._stored and self._wake_fd is not None and not self.parent_gone.is_set():
            readable, _, _ = select.select([self._wake_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            wake = self._read()
            self._early.rung |= wake.rung
            self._early.handed += wake.handed
        return self._stored.pop(job_id, None)

    def drain(self) -> list[Job]:
        """The jobs handed to this worker and not started (it is stopping: they go back to the queue)."""
        early, self._early = self._early.handed, Wake()
        return early + (self._read().handed if self._wake_fd is not None else [])

    def idle(self, worker_id: str) -> None:
        """Tell the API that this worker has nothing to do, once per change (it may hand it a job now)."""
        if self._done_fd is None or self._told_idle == self._events:
            return
        self._told_idle = self._events
        self._send(IDLE + f"{self._events} {worker_id}".encode())

    def _read(self) -> Wake:
        try:
            data = os.read(self._wake_fd, 65536)  # type: ignore[arg-type]  # every ring so far: one wake-up
        except BlockingIOError:
            return Wake()
        except OSError:
            data = b""
        if not data:
            self._parent_went()
            return Wake()
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._events += len(lines)
        wake = Wake()
        for line in lines:
            if line == RING:
                wake.rung = True
            elif line[:1] in (STORED, DROPPED):
                self._stored[line[1:].decode()] = line[:1] == STORED
            else:
                wake.handed.append(Job(*json.loads(line)))
        return wake

    def done(self, job_id: str, columns: dict[str, Any] | None = None, *, only_whole: bool = False) -> bool:
        """Announce a finished job; with its result's `columns` (as stored) when they are small, so that the
        API answers without reading them back. `only_whole`: announce it only with its result. Whether the
        announcement carried the result."""
        if self._done_fd is None:
            return False
        line = job_id.encode()
        record = json.dumps(columns).encode() if columns is not None else b""  # JSON escapes newlines
        whole = 0 < len(record) <= MAX_ANNOUNCED_BYTES
        if whole:
            line += b"\t" + record
        if whole or not only_whole:
            self._send(line)
        return whole

    def _send(self, line: bytes) -> None:
        try:
            os.write(self._done_fd, line + b"\n")  # type: ignore[arg-type]
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
