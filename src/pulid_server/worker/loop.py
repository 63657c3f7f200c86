"""The worker process: claim a job with a lease (or take one the API handed to it, being stored already
claimed by it), run its endpoint, store the result. One job at a time.

Crash safety comes from the store, not from this loop: a heartbeat thread keeps the lease alive while a
job runs; if the process dies (kill -9, CUDA OOM exit) the job is requeued, when its lease expires or, for
a supervised worker, as soon as its API process sees it gone (api/services/doorbell.py).

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
from collections import deque
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
from pulid_server.files import delete_prefix, outputs_prefix
from pulid_server.model import loaded_families
from pulid_server.store import IN_PROGRESS, Finished, Job
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
# Jobs that cost less than this together are claimed, run and recorded in batches of up to BATCH_CLAIM: one
# commit (one sync to disk) per batch instead of one per job, for endpoints that answer in microseconds.
# A batch that took longer is followed by one job at a time, and a job of a batch that turns out slow
# gives the rest of its batch back to the queue at once: a slow model never holds jobs it has not
# started for longer than one job, and other workers get them.
CHEAP_BATCH_SECONDS = 0.005
BATCH_CLAIM = 8


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
        self.doorbell.watch_parent()
        self.channel = JobChannel(
            self.store.queue, self.worker_id, self.settings.lease_seconds, self.settings.heartbeat_seconds
        )
        self.runners: dict[str, tuple[Endpoint, Runner]] = {}
        self.presets: dict[str, str] = {}  # endpoint id -> the model preset its runner loaded, if any
        self.checker: SafetyChecker | None = None
        self._signals = 0
        self._last_reap = 0.0
        self._last_seen = time.monotonic()
        self._announced: set[str] = set()  # sync /run jobs announced before their commit (_run_one)
        self._unsettled: set[str] = set()  # jobs handed to it that the API has not said were stored

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
        claimed: deque[Job] = deque()  # claimed (or handed over by the API), not started yet
        rung = False  # the API queued something: claim without looking first
        look = True  # whether to look for queued jobs (False: the last commit looked already)
        while not self.stopping.is_set():
            try:
                self._maybe_reap()  # also while every commit claims the next jobs
                if not claimed and (look or rung) and (job := self._claim(ids, look_first=not rung)):
                    claimed.append(job)
            except Exception as exc:  # noqa: BLE001 - the store is back later; the model stays loaded
                pause = _longer(pause)
                log.warning("the job store failed (%s); retrying in %.1f s", _reason(exc), pause)
                self.stopping.wait(pause)
                continue
            if not claimed:
                self.doorbell.idle(self.worker_id)
                recent = time.monotonic() - last_job < FAST_POLL_WINDOW_SECONDS
                poll = self.settings.poll_seconds
                wake = self.doorbell.wait(min(FAST_POLL_SECONDS, poll) if recent else poll)
                rung, look = wake.rung, True
                claimed.extend(wake.handed)
                self._unsettled.update(job.id for job in wake.handed)
                continue
            outcome = self._work(claimed, ids)
            rung = look = False
            if outcome.fatal:
                return OOM_EXIT_CODE
            pause = _longer(pause) if outcome.retry else 0.0
            self.stopping.wait(pause)
            last_job = time.monotonic()
        claimed.extend(self.doorbell.drain())
        self._give_back(claimed)
        return 0

    def _claim(self, ids: list[str], look_first: bool) -> Job | None:
        if look_first and not self.store.queue.has_queued(ids):  # idle polls take no write lock
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

    def _work(self, claimed: deque[Job], ids: list[str]) -> Outcome:
        """Run the claimed jobs, then record them in one commit that also claims the next ones (into
        `claimed`). The outcome says whether one was fatal, or is to be retried."""
        finished: list[Finished] = []
        summary = Outcome()
        try:
            while claimed and not summary.fatal:
                job = claimed.popleft()
                if not self._lease_left(job):  # its batch ran long: let it go, never run it twice
                    self._give_back(deque([job]))
                    continue
                outcome, done = self._run_one(job)
                summary.fatal |= outcome.fatal
                summary.retry |= outcome.retry
                if done is not None:
                    finished.append(done)
                    if claimed and (done.inference_time or 0.0) >= CHEAP_BATCH_SECONDS:
                        self._give_back(claimed)  # not cheap after all: to whichever worker is free
        except KeyboardInterrupt:  # a second signal: record what ran, give back the rest
            self._settle(finished, None)
            self._give_back(claimed)
            raise
        if summary.fatal or self.stopping.is_set():
            self._settle(finished, None)
            self._give_back(claimed)
            return summary
        cost = sum(f.inference_time or 0.0 for f in finished)
        claimed.extend(self._settle(finished, ids, BATCH_CLAIM if cost < CHEAP_BATCH_SECONDS else 1))
        return summary

    def _lease_left(self, job: Job) -> bool:
        """Whether a job claimed with others still has half its lease: its heartbeats start only with it."""
        return job.lease_until is None or job.lease_until - time.time() > self.settings.lease_seconds / 2

    def _run_one(self, job: Job) -> tuple[Outcome, Finished | None]:
        """Run a job: its outcome, and what to record (None: given back to the queue already)."""
        endpoint, runner = self.runners[job.endpoint_id]
        self.channel.begin(job.id)
        started = time.perf_counter()
        try:
            outcome = self._run(endpoint, runner, job, self.channel)
        except KeyboardInterrupt:
            self.channel.end()
            self.store.queue.release(job, self.worker_id)
            log.info("job %s returned to the queue", job.id)
            raise
        lines = self.channel.end()  # written with the job's end, before it
        elapsed = time.perf_counter() - started
        if job.id in self._unsettled and not self._was_stored(job):
            self._drop(job)
            return outcome, None
        if not outcome.retry:
            done = Finished(
                job,
                outcome.output,
                outcome.failure,
                elapsed,
                lines,
                images_checked=outcome.images_checked,
                images_flagged=outcome.images_flagged,
            )
            # A sync /run's caller gets its result now; its commit follows (store/database.py: it never
            # waits for the disk). Any other job is announced once its result is committed (on disk just
            # after: _sync).
            if not job.durable and self.doorbell.done(job.id, done.columns, only_whole=True):
                self._announced.add(job.id)
            return outcome, done
        full = failures.STORAGE_FULL

        def give_back() -> bool:
            if lines:
                self.store.queue.append_logs(job.id, lines)
            return self.store.queue.retry_later(job, self.worker_id, full, self.settings.max_attempts)

        self._record(job.id, give_back)
        return outcome, None

    def _was_stored(self, job: Job) -> bool:
        """Whether a job the API handed over (running meanwhile) was stored, as the API says once its commit
        returns; if it says nothing in time (or is gone), whether the store holds it as this worker's."""
        self._unsettled.discard(job.id)
        told = self.doorbell.stored(job.id, self.settings.lease_seconds / 2)
        if told is not None:
            return told
        try:
            row = self.store.queue.get(job.id)
        except Exception as exc:  # noqa: BLE001 - as if it was not: its lease requeues it if it was
            log.warning("job %s: could not read it back (%s)", job.id, _reason(exc))
            return False
        return row is not None and row.status == IN_PROGRESS and row.worker_id == self.worker_id

    def _drop(self, job: Job) -> None:
        """A handed job that was not stored: nothing of it is recorded, and the files it wrote go."""
        log.warning("job %s was handed over but not stored (refused, or its write failed): dropped", job.id)
        try:
            delete_prefix(self.blobs, outputs_prefix(job.id))
        except Exception as exc:  # noqa: BLE001 - left to the disk; no job row points at them
            log.warning("job %s: could not delete its files (%s)", job.id, _reason(exc))

    def _settle(self, finished: list[Finished], ids: list[str] | None, limit: int = 1) -> list[Job]:
        """Record finished jobs and claim up to `limit` next ones of `ids`, in one commit; the jobs claimed."""
        if not finished and not ids:
            return []
        result: list[tuple[list[bool], list[Job]]] = []

        def write() -> bool:
            lease = self.settings.lease_seconds
            hint = self.settings.runner_hint_seconds
            result[:] = [
                self.store.queue.finish_and_claim(
                    finished, self.worker_id, ids, lease, limit, hint, sync_later=True
                )
            ]
            return True

        early = {f.job.id for f in finished} & self._announced
        self._announced -= early
        if not self._record(", ".join(f.job.id for f in finished) or "(claim)", write):
            return []
        done, following = result[0]
        for f, ok in zip(finished, done, strict=True):
            if not ok:
                log.warning("job %s: lease lost before completion; result dropped", f.job.id)
            elif f.job.id not in early:
                self.doorbell.done(f.job.id, f.columns)
        if any(f.job.durable for f in finished):
            self._sync()
        return following

    def _sync(self) -> None:
        """Put the results just announced on disk: their commit is safe from a crash of any process, but
        not yet from a power loss. Announcing first saves the waiting request the fsync (~0.6 ms); a power
        loss in between can only run the job again (store/database.py)."""
        try:
            self.store.queue.sync()
        except Exception as exc:  # noqa: BLE001 - the next durable commit syncs them as well
            log.warning("could not sync the results to disk (%s)", _reason(exc))

    def _give_back(self, claimed: deque[Job]) -> None:
        """Jobs claimed but not started (asked to stop, or a fatal job before them) go back to the queue."""
        while claimed:
            job = claimed.popleft()
            try:
                self.store.queue.release(job, self.worker_id)
            except Exception as exc:  # noqa: BLE001 - its lease requeues it instead
                log.warning("job %s: could not give it back (%s)", job.id, _reason(exc))

    def _record(self, what: str, write: Callable[[], bool]) -> bool:
        """Write jobs' ends (`what`: their ids). A store error is retried while their leases last; past
        that, they are requeued by their leases, as if this worker had died."""
        deadline = time.monotonic() + self.settings.lease_seconds / 2
        pause = 0.0
        while True:
            try:
                if write():
                    return True
                log.warning("job %s: lease lost before completion; result dropped", what)
                return False
            except Exception as exc:  # noqa: BLE001 - retried below
                pause = _longer(pause)
                if time.monotonic() + pause > deadline:
                    log.error(
                        "job %s: its end could not be recorded (%s); its lease will requeue it",
                        what,
                        _reason(exc),
                    )
                    return False
                log.warning("job %s: recording its end failed (%s); retrying", what, _reason(exc))
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
