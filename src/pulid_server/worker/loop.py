"""The worker process: claim a job with a lease, run its endpoint, store the result. One job at a time.

Crash safety comes from the store, not from this loop: a heartbeat thread keeps the lease alive while a
job runs; if the process dies (kill -9, CUDA OOM exit) the lease expires and the job is requeued.

Stopping: the first SIGTERM or SIGINT, or the supervising API process letting go of the doorbell or dying
(SIGHUP; worker/doorbell.py), stops claiming and lets the running job finish; a second SIGTERM or SIGINT
gives that job back to the queue at once. Only those two are counted: when Ctrl-C reaches the whole
process group, the worker's SIGINT and its supervisor's drain request are one request, and the job
still finishes.

A store error (a full or unreachable database) never ends the process: the loop retries with backoff
and the model stays loaded, instead of crash-looping through model loads. A job whose outputs cannot be
stored for lack of space goes back to the queue (after `max_attempts`, it fails with `storage_full`),
and the worker waits before it claims again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from pulid_server import endpoints, failures
from pulid_server.endpoints import (
    RANDOM_WEIGHT_PRESETS,
    Endpoint,
    JobCancelled,
    Runner,
    UserInputError,
    loaded_preset,
    random_weights_notice,
)
from pulid_server.failures import Failure
from pulid_server.model import loaded_families
from pulid_server.store import Job
from pulid_server.worker.channel import JobChannel
from pulid_server.worker.config import WorkerConfig
from pulid_server.worker.context import WorkerJobContext
from pulid_server.worker.doorbell import WorkerDoorbell, die_with_parent
from pulid_server.worker.safety import ImageScreen, load_checker

if TYPE_CHECKING:
    from pulid_server.model.safety import SafetyChecker

log = logging.getLogger("pulid.worker")
OOM_EXIT_CODE = 75  # the supervisor restarts the process; the CUDA context may be poisoned
# Callers often submit their next job within milliseconds of a result (sequential clients, busy queues):
# poll fast for a short while after a job, then every `poll_seconds`, so that an idle worker costs little.
# bench/bench_service.py: the 50 ms idle poll alone added ~40 ms to every sequential job.
FAST_POLL_SECONDS = 0.005
FAST_POLL_WINDOW_SECONDS = 1.0
BACKOFF_START_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 30.0


@dataclass
class Outcome:
    output: dict[str, Any] | None = None
    failure: Failure | None = None
    fatal: bool = False  # stop this process after recording the job (e.g. GPU OOM)
    images_checked: int | None = None  # by the safety checker; None when it did not run
    images_flagged: int | None = None
    retry: bool = False  # its outputs could not be stored: give it back, and pause before the next claim


@dataclass
class Worker:
    config: WorkerConfig
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    def __post_init__(self) -> None:
        self.settings = self.config.settings
        self.store = self.settings.job_store()
        self.blobs = self.settings.blob_store()
        self.stopping = threading.Event()
        self.doorbell = WorkerDoorbell(self.config.wake_fd, self.config.done_fd, self.stopping)
        self.runners: dict[str, tuple[Endpoint, Runner]] = {}
        self.presets: dict[str, str] = {}  # endpoint id -> the model preset its runner loaded, if any
        self.checker: SafetyChecker | None = None
        self._signals = 0
        self._last_reap = 0.0
        self._last_seen = time.monotonic()

    def load(self) -> None:
        endpoints.load_builtin_and_extra(self.settings.extra_endpoints)
        wanted = self.settings.worker_endpoints or [e.id for e in endpoints.all_endpoints()]
        for endpoint_id in wanted:
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                raise SystemExit(f"unknown endpoint {endpoint_id!r}")
            log.info("loading %s", endpoint_id)
            runner = endpoint.load_runner(self.settings)
            self.runners[endpoint_id] = (endpoint, runner)
            if preset := loaded_preset(runner):
                self.presets[endpoint_id] = preset
            if preset in RANDOM_WEIGHT_PRESETS:
                log.warning(random_weights_notice(endpoint_id, endpoint.family))
        self.checker = load_checker(self.settings)
        if self.checker is not None:
            log.info("safety checker %s (%s) loaded", self.checker.name, self.settings.safety_model)
        families = ", ".join(loaded_families()) or "none"
        log.info(
            "worker %s ready: %s (model families loaded: %s)",
            self.worker_id,
            ", ".join(self.runners),
            families,
        )

    def install_signal_handlers(self) -> None:
        def on_term(signum: int, _frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:  # second signal: give the job back now
                raise KeyboardInterrupt
            log.info("signal %s: finishing the current job, claiming no more", signum)
            self.stopping.set()

        def on_hangup(_signum: int, _frame: Any) -> None:  # the supervising API process died
            if not self.stopping.is_set():
                log.info("the API process is gone: finishing the current job, claiming no more")
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hangup)

    def run_forever(self) -> int:
        ids = list(self.runners)

        def register() -> None:  # seen by /health/ready and /metrics once the models are loaded
            self.store.cluster.register_worker(self.worker_id, ids, self.settings.device, self.presets)

        if not self._until_done(register, "registering this worker"):
            return 0
        try:
            return self._loop(ids)
        finally:
            try:
                self.store.cluster.unregister_worker(self.worker_id)
            except Exception as exc:  # noqa: BLE001 - its row ages out of every view on its own
                log.warning("could not unregister this worker: %s", _reason(exc))

    def _loop(self, ids: list[str]) -> int:
        last_job = -FAST_POLL_WINDOW_SECONDS
        pause = 0.0  # before the next claim, after a store or storage failure
        while not self.stopping.is_set():
            try:
                job = self._claim(ids)
            except Exception as exc:  # noqa: BLE001 - the store is back later; the model stays loaded
                pause = _longer(pause)
                log.warning("the job store failed (%s); retrying in %.1f s", _reason(exc), pause)
                self.stopping.wait(pause)
                continue
            if job is None:
                recent = time.monotonic() - last_job < FAST_POLL_WINDOW_SECONDS
                poll = self.settings.poll_seconds
                self.doorbell.wait(min(FAST_POLL_SECONDS, poll) if recent else poll)
                continue
            outcome = self.process(job)
            if outcome.fatal:
                return OOM_EXIT_CODE
            pause = _longer(pause) if outcome.retry else 0.0
            self.stopping.wait(pause)
            last_job = time.monotonic()
        return 0

    def _claim(self, ids: list[str]) -> Job | None:
        self._maybe_reap()
        if not self.store.queue.has_queued(ids):
            return None
        return self.store.queue.claim(
            self.worker_id, ids, self.settings.lease_seconds, self.settings.runner_hint_seconds
        )

    def _until_done(self, action: Callable[[], object], what: str) -> bool:
        """Run a store write until it succeeds (True) or the worker is asked to stop (False)."""
        pause = 0.0
        while not self.stopping.is_set():
            try:
                action()
                return True
            except Exception as exc:  # noqa: BLE001 - retried with backoff
                pause = _longer(pause)
                log.warning("%s failed (%s); retrying in %.1f s", what, _reason(exc), pause)
                self.stopping.wait(pause)
        return False

    def _maybe_reap(self) -> None:
        if time.monotonic() - self._last_reap > 1.0:
            self._last_reap = time.monotonic()
            self.store.queue.reap(self.settings.max_attempts)
        if time.monotonic() - self._last_seen > self.settings.heartbeat_seconds:
            self._last_seen = time.monotonic()
            self.store.cluster.worker_seen(self.worker_id)  # idle beat; job heartbeats refresh it while busy

    def process(self, job: Job) -> Outcome:
        endpoint, runner = self.runners[job.endpoint_id]
        channel = JobChannel(
            self.store.queue,
            job.id,
            self.worker_id,
            self.settings.lease_seconds,
            self.settings.heartbeat_seconds,
        )
        channel.start()
        started = time.perf_counter()
        try:
            outcome = self._run(endpoint, runner, job, channel)
        except KeyboardInterrupt:
            channel.close()
            self.store.queue.release(job, self.worker_id)
            log.info("job %s returned to the queue", job.id)
            raise
        channel.close()  # its log lines land before the job completes
        elapsed = time.perf_counter() - started
        if outcome.retry:
            full = failures.STORAGE_FULL
            self._record(
                job,
                lambda: self.store.queue.retry_later(job, self.worker_id, full, self.settings.max_attempts),
            )
        elif self._record(
            job,
            lambda: self.store.queue.complete(
                job,
                self.worker_id,
                outcome.output,
                outcome.failure,
                inference_time=elapsed,
                images_checked=outcome.images_checked,
                images_flagged=outcome.images_flagged,
            ),
        ):
            self.doorbell.done(job.id)
        return outcome

    def _record(self, job: Job, write: Callable[[], bool]) -> bool:
        """Write a job's end. A store error is retried while the job's lease lasts; past that, the job is
        requeued by its lease, as if this worker had died."""
        deadline = time.monotonic() + self.settings.lease_seconds / 2
        pause = 0.0
        while True:
            try:
                if write():
                    return True
                log.warning("job %s: lease lost before completion; result dropped", job.id)
                return False
            except Exception as exc:  # noqa: BLE001 - retried below
                pause = _longer(pause)
                if time.monotonic() + pause > deadline:
                    log.error(
                        "job %s: its end could not be recorded (%s); its lease will requeue it",
                        job.id,
                        _reason(exc),
                    )
                    return False
                log.warning("job %s: recording its end failed (%s); retrying", job.id, _reason(exc))
                time.sleep(pause)

    def _run(self, endpoint: Endpoint, runner: Runner, job: Job, channel: JobChannel) -> Outcome:
        ctx = WorkerJobContext(job, channel, self.blobs, self.settings)
        if self.presets.get(job.endpoint_id) in RANDOM_WEIGHT_PRESETS:
            ctx.log(random_weights_notice(endpoint.id, endpoint.family), "WARN")
        outcome = self._attempt(endpoint, runner, job, ctx)
        if ctx.screen.ran:
            outcome.images_checked, outcome.images_flagged = ctx.screen.checked, sum(ctx.screen.flags)
        return outcome

    def _attempt(self, endpoint: Endpoint, runner: Runner, job: Job, ctx: WorkerJobContext) -> Outcome:
        try:
            inputs = endpoint.input_model.model_validate(job.input)
            key = self.store.keys.key_policy(job.owner_key_id)
            ctx.screen = ImageScreen.for_job(self.settings, self.checker, key, inputs, ctx.log)
            result = runner(inputs, ctx)
            output = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            return Outcome(output=ctx.screen.annotate(output))
        except JobCancelled:
            ctx.log("cancelled", "WARN")
            return Outcome(failure=failures.REQUEST_CANCELLED)
        except UserInputError as exc:
            failure = failures.user_input(exc.message, exc.loc, exc.error_type)
            ctx.log(failure.message, "ERROR")
            return Outcome(failure=failure)
        except ValidationError as exc:
            return Outcome(failure=failures.invalid_input(exc))
        except Exception as exc:  # noqa: BLE001 - any model error ends this job, not the worker
            if _is_oom(exc):
                ctx.log("out of GPU memory; restarting the worker", "ERROR")
                return Outcome(failure=failures.GPU_OOM, fatal=True)
            if failures.is_storage_full(exc):
                log.error("job %s: no space to store its outputs; it goes back to the queue", job.id)
                ctx.log("out of storage space; the request will be retried", "WARN")
                return Outcome(retry=True)
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            ctx.log(f"{type(exc).__name__}: {exc}", "ERROR")
            return Outcome(failure=failures.model_error(exc))


def _longer(pause: float) -> float:
    return min(max(pause * 2, BACKOFF_START_SECONDS), BACKOFF_MAX_SECONDS)


def _reason(exc: BaseException) -> str:
    """A one-line reason for the log (driver errors can span many lines)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def run(config: WorkerConfig) -> int:
    """Run a worker process until SIGTERM (`pulid worker`, or spawned by `pulid serve`); its exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if config.parent_pid is not None:
        die_with_parent(config.parent_pid)
    worker = Worker(config)
    worker.install_signal_handlers()
    worker.load()
    try:
        return worker.run_forever()
    except KeyboardInterrupt:
        return 0
