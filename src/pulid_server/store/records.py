"""What the job store hands out: rows as dataclasses, the job states and the queue's errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from pulid_server.failures import Failure

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
PRIORITIES = {"normal": 0, "low": 1}


class QueueFull(Exception):
    """A submit past `max_queue_total` or `max_queue_per_key` queued jobs."""


class StorageFull(Exception):
    """A write the database refused for lack of space (a full disk or quota); the driver's error is its cause."""


@dataclass
class Submission:
    """One request to queue (JobQueue.submit_many); the fields are `submit`'s arguments."""

    endpoint_id: str
    owner_key_id: str
    input_json: str
    base_url: str
    priority: int = 0
    webhook_url: str | None = None
    start_timeout: float | None = None
    idempotency_key: str | None = None
    max_queue_per_key: int = 10**9
    max_queue_total: int = 10**9
    max_endpoint_queue: int | None = None
    runner_hint: str | None = None
    no_retry: bool = False
    store_io: bool = True
    output_lifetime: float | None = None
    job_id: str | None = None
    # False when nobody is told of the job before its result (sync /run): neither its submit nor its result
    # waits for the disk (jobs.durable; store/database.py).
    durable: bool = True
    # Stored already claimed by this worker, with a lease of `lease_seconds` (handed to an idle worker of
    # this node: api/services/doorbell.py); None: queued.
    worker_id: str | None = None
    lease_seconds: float = 0.0


@dataclass
class Finished:
    """A job a worker ran, to record (JobQueue.finish_and_claim): its output, or the failure that ended it,
    and the log lines not written yet."""

    job: Job
    output: dict[str, Any] | None = None
    failure: Failure | None = None
    inference_time: float | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (message, level)
    images_checked: int | None = None  # the safety checker's counts, if it ran
    images_flagged: int | None = None

    @functools.cached_property
    def columns(self) -> dict[str, Any]:
        """Its result as stored (`result_columns`), encoded once for the store and the API's doorbell."""
        return result_columns(self.output, self.failure)


def result_columns(output: dict[str, Any] | None, failure: Failure | None) -> dict[str, Any]:
    """The columns of a job's result, as the store keeps them: the output's JSON, or the failure's."""
    if failure is None:
        return {"output_json": json.dumps(output)}
    return {
        "error": failure.message,
        "error_type": failure.error_type,
        "error_status": failure.status,
        "error_body_json": json.dumps(failure.body()),
    }


@dataclass
class JobState:
    """What status reads need: a few small columns, never the input, output or error body."""

    seq: int
    id: str
    endpoint_id: str
    owner_key_id: str
    status: str
    priority: int
    vt: int
    inference_time: float | None
    error: str | None
    error_type: str | None

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Self:
        return cls(*(m[name] for name in field_names(cls)))  # type: ignore[arg-type]


@functools.cache
def field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names in order (cached: rows are made by the thousand)."""
    return tuple(f.name for f in fields(cls))


@dataclass
class Job(JobState):
    """A whole job row."""

    input_json: str
    base_url: str
    webhook_url: str | None
    idempotency_key: str | None
    created_at: float
    start_deadline: float | None
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    lease_until: float | None
    attempts: int
    cancel_requested: bool
    output_json: str | None
    error_status: int | None
    error_body_json: str | None
    runner_hint: str | None = None
    no_retry: bool = False
    store_io: bool = True
    retention: int = 0  # what of it is gone, and which clock its outputs follow (store/retention.py)
    durable: bool = True  # whether its writes wait for the disk (False: a sync /run)

    @property
    def input(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.input_json)
        return value


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of data is kept, in seconds (math.inf: forever): output files (unless a request
    gave its own lifetime), uploaded files (unless the upload did), request payloads (input, output, error
    body and the request's input files) and finished jobs with their logs and webhook rows."""

    outputs: float
    uploads: float
    payloads: float
    jobs: float


@dataclass(frozen=True)
class Expired:
    """Data a pruner claimed: `kind` is "job" (the whole finished job), "outputs", "payload" (of job `ref`)
    or "upload" (file key `ref`). `retention`: the job's bits when claimed (what was gone already)."""

    kind: str
    ref: str
    retention: int = 0


@dataclass
class JobProgress:
    """What a status stream watches, read for many jobs at once (JobQueue.progress)."""

    state: JobState
    position: int | None  # queued jobs claimed before it (None: not queued, or positions not asked for)
    last_log_id: int  # 0 when it has no log lines


@dataclass
class LogLine:
    id: int
    ts: float
    level: str
    message: str


@dataclass
class WebhookTask:
    job: Job
    url: str
    attempts: int


@dataclass
class WorkerInfo:
    worker_id: str
    hostname: str
    pid: int
    device: str
    endpoints: list[str]
    started_at: float
    last_seen: float
    job_id: str | None
    presets: dict[str, str] = field(default_factory=dict)  # endpoint id -> model preset it loaded


@dataclass
class FinishedJob:
    seq: int
    endpoint_id: str
    error_type: str | None
    created_at: float
    started_at: float | None
    finished_at: float
    images_checked: int | None = None  # by the safety checker; None when it did not run
    images_flagged: int | None = None


@dataclass
class QueueDepth:
    status: str
    endpoint_id: str
    priority: int
    count: int
