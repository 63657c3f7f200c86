"""The worker process: claim a job with a lease, run its endpoint, store the result. One job at a time.

Crash safety comes from the store, not from this loop: a heartbeat thread keeps the lease alive while a
job runs; if the process dies (kill -9, CUDA OOM exit) the lease expires and the job is requeued.
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
from pulid_server.store import Job, open_job_store
from pulid_server.worker.channel import JobChannel
from pulid_server.worker.config import WorkerConfig
from pulid_server.worker.context import WorkerJobContext
from pulid_server.worker.doorbell import WorkerDoorbell
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


@dataclass
class Outcome:
    output: dict[str, Any] | None = None
    failure: Failure | None = None
    fatal: bool = False  # stop this process after recording the job (e.g. GPU OOM)
    images_checked: int | None = None  # by the safety checker; None when it did not run
    images_flagged: int | None = None


@dataclass
class Worker:
    config: WorkerConfig
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    def __post_init__(self) -> None:
        self.settings = self.config.settings
        self.store = open_job_store(self.settings.resolved_database_url())
        self.blobs = self.settings.blob_store()
        self.stopping = threading.Event()
        self.doorbell = WorkerDoorbell(self.config.wake_fd, self.config.done_fd)
        self.runners: dict[str, tuple[Endpoint, Runner]] = {}
        self.presets: dict[str, str] = {}  # endpoint id -> the model preset its runner loaded, if any
        self.checker: SafetyChecker | None = None
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
            if self.stopping.is_set():  # second signal: give the job back now
                raise KeyboardInterrupt
            log.info("signal %s: finishing the current job, claiming no more", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def run_forever(self) -> int:
        ids = list(self.runners)
        # Seen by /health/ready and /metrics on every API node; the row exists once the models are loaded.
        self.store.cluster.register_worker(self.worker_id, ids, self.settings.device, self.presets)
        try:
            return self._loop(ids)
        finally:
            self.store.cluster.unregister_worker(self.worker_id)

    def _loop(self, ids: list[str]) -> int:
        last_job = -FAST_POLL_WINDOW_SECONDS
        while not self.stopping.is_set():
            self._maybe_reap()
            job = None
            if self.store.queue.has_queued(ids):
                job = self.store.queue.claim(
                    self.worker_id, ids, self.settings.lease_seconds, self.settings.runner_hint_seconds
                )
            if job is None:
                recent = time.monotonic() - last_job < FAST_POLL_WINDOW_SECONDS
                self.doorbell.wait(
                    min(FAST_POLL_SECONDS, self.settings.poll_seconds)
                    if recent
                    else self.settings.poll_seconds,
                    self.stopping,
                )
                continue
            if self.process(job).fatal:
                return OOM_EXIT_CODE
            last_job = time.monotonic()
        return 0

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
        if not self.store.queue.complete(
            job,
            self.worker_id,
            outcome.output,
            outcome.failure,
            inference_time=elapsed,
            images_checked=outcome.images_checked,
            images_flagged=outcome.images_flagged,
        ):
            log.warning("job %s: lease lost before completion; result dropped", job.id)
        else:
            self.doorbell.done(job.id)
        return outcome

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
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            ctx.log(f"{type(exc).__name__}: {exc}", "ERROR")
            return Outcome(failure=failures.model_error(exc))


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def run(config: WorkerConfig) -> int:
    """Run a worker process until SIGTERM (`pulid worker`, or spawned by `pulid serve`); its exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = Worker(config)
    worker.install_signal_handlers()
    worker.load()
    try:
        return worker.run_forever()
    except KeyboardInterrupt:
        return 0
