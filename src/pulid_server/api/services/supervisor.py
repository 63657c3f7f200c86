"""Runs worker processes beside the API (`pulid serve --workers N`) and restarts them when they die.

The model lives in these child processes so that a crash, an OOM or a kill -9 costs one job attempt
(requeued by its lease), never the API. Each child gets its WorkerConfig (these settings, the endpoints
of its group, its doorbell pipes and this process's pid) as JSON on stdin, and dies with this process
(worker/doorbell.py). `count` processes serve each group of endpoints (worker_groups.py: by default one
group per model family).

Stopping drains: closing a worker's wake pipe asks it to finish its job and exit, which is not a signal,
so a Ctrl-C that reached the worker too (its first signal) still lets the job finish. Only after
`drain_seconds` do signals follow: SIGTERM twice (the second gives the job back to the queue), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pulid_server import endpoints
from pulid_server.api.services.doorbell import ParentDoorbell
from pulid_server.api.services.worker_groups import plan_worker_groups
from pulid_server.config import Settings
from pulid_server.worker.config import WorkerConfig

log = logging.getLogger("pulid.supervisor")


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        count: int,
        drain_seconds: float = 30.0,
        on_done: Callable[[str, dict[str, Any] | None], None] = lambda job_id, result: None,
        on_gone: Callable[[str], None] = lambda worker_id: None,
        groups: list[list[str]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.settings = settings
        self.loop = loop  # reads the workers' done pipes (api/services/doorbell.py)
        if groups is None:
            endpoints.load_builtin_and_extra(settings.extra_endpoints)
            groups = plan_worker_groups(settings, endpoints.all_endpoints())
        # one Settings per process: the node's, serving only its group's endpoints
        self.slots = [
            settings.model_copy(update={"worker_endpoints": g}) for g in groups for _ in range(count)
        ]
        self.count = len(self.slots)
        self.drain_seconds = drain_seconds
        self.on_done, self.on_gone = on_done, on_gone
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self.bells: list[ParentDoorbell | None] = [None] * self.count
        self._bells_lock = threading.Lock()  # a closed pipe's fd number may be reused: never ring it
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="worker-supervisor")

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)
        self._thread.start()

    def _spawn(self, i: int) -> None:
        bell = ParentDoorbell(self.on_done, self.loop, self.on_gone)
        with self._bells_lock:
            old, self.bells[i] = self.bells[i], bell
            if old is not None:
                old.close()
        wake_fd, done_fd = bell.child_fds()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulid_server.worker"], stdin=subprocess.PIPE, pass_fds=(wake_fd, done_fd)
        )
        self.procs[i] = proc
        bell.spawned()
        assert proc.stdin is not None
        try:  # a few KB: fits the pipe buffer, so this never waits on the child
            with proc.stdin:
                config = WorkerConfig(self.slots[i], wake_fd, done_fd, parent_pid=os.getpid())
                proc.stdin.write(config.to_json().encode())
        except BrokenPipeError:  # it died at once; the watcher restarts it
            pass
        log.info("worker %d started (pid %d): %s", i, proc.pid, ", ".join(self.slots[i].worker_endpoints))

    def ring(self) -> None:
        """A job was queued: wake idle workers now instead of at their next poll."""
        with self._bells_lock:
            for bell in self.bells:
                if bell is not None:
                    bell.ring()

    def reserve_idle(self, endpoint_id: str) -> ParentDoorbell | None:
        """An idle worker of `endpoint_id`, reserved for a job to hand to it (ParentDoorbell.reserve)."""
        with self._bells_lock:
            for slot, bell in zip(self.slots, self.bells, strict=True):
                if bell is not None and endpoint_id in slot.worker_endpoints and bell.reserve():
                    return bell
        return None

    def _watch(self) -> None:
        backoff = [0.0] * self.count
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None:
                    continue
                log.warning("worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.returncode)
                self.restarts += 1
                backoff[i] = min(max(backoff[i] * 2, 0.5), 30.0)
                if self._stop.wait(backoff[i]):
                    return
                self._spawn(i)

    def alive(self) -> int:
        return sum(1 for p in self.procs if p is not None and p.poll() is None)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def stop(self) -> None:
        """Drain: close the wake pipes (finish the current job), wait `drain_seconds`, then SIGTERM twice
        (the job goes back to the queue) and at last SIGKILL."""
        self._stop.set()
        with self._bells_lock:
            for bell in self.bells:
                if bell is not None:
                    bell.close()
            self.bells = [None] * self.count
        live = [p for p in self.procs if p is not None and p.poll() is None]
        deadline = time.monotonic() + self.drain_seconds
        for p in live:
            _wait(p, deadline - time.monotonic())
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            late = [p for p in live if p.poll() is None]
            for p in late:
                p.send_signal(sig)
            deadline = time.monotonic() + grace
            for p in late:
                _wait(p, deadline - time.monotonic())


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        proc.wait(max(0.0, seconds))
    except subprocess.TimeoutExpired:
        pass
