"""What the API and the workers may ask of the job store, one protocol per concern.

`JobStore` is the facade they hold; each part owns its tables. `SqlJobStore` (sql.py) implements it over
SQLAlchemy Core; another implementation (a faster queue, a test double) only has to match these.
Every method is one short transaction and may block: async callers run it in a thread, except reads
when `JobStore.inline_reads` says they never wait.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Protocol

from pulid_server.failures import Failure
from pulid_server.policy import KeyPolicy
from pulid_server.store.records import (
    Expired,
    Finished,
    FinishedJob,
    Job,
    JobProgress,
    JobState,
    LogLine,
    QueueDepth,
    QueueFull,
    RetentionPolicy,
    Submission,
    WebhookTask,
    WorkerInfo,
)
from pulid_server.store.retention import PruneClaim


class KeyStore(Protocol):
    """API keys (`key_id:secret`); only a hash of the secret is kept. Each key may override the node's
    content policy (safety checker mode and action)."""

    def create_key(self, name: str = "", policy: KeyPolicy = KeyPolicy()) -> str:
        """A new key, `key_id:secret`; the secret is not stored and cannot be shown again."""
        ...

    def authenticate(self, key: str) -> str | None:
        """The key id of a valid, unrevoked `key_id:secret`, else None."""
        ...

    def list_keys(self) -> list[dict[str, Any]]:
        """`{key_id, name, created_at, revoked, safety_mode, safety_action}` of every key, oldest first
        (never secrets)."""
        ...

    def key_policy(self, key_id: str) -> KeyPolicy:
        """The key's overrides (revoked keys too); no overrides for an unknown key."""
        ...

    def set_key_policy(self, key_id: str, policy: KeyPolicy) -> bool:
        """Replace the key's overrides (None fields: the node's Settings decide). False for an unknown key."""
        ...

    def revoke_key(self, key_id: str) -> bool:
        """False when no active key has this id."""
        ...


class JobQueue(Protocol):
    """Jobs and their logs: submit, claim with a lease, heartbeat, cancel, complete, reap."""

    def submit(
        self,
        *,
        endpoint_id: str,
        owner_key_id: str,
        input_json: str,
        base_url: str,
        priority: int = 0,
        webhook_url: str | None = None,
        start_timeout: float | None = None,
        idempotency_key: str | None = None,
        max_queue_per_key: int = 10**9,
        max_queue_total: int = 10**9,
        max_endpoint_queue: int | None = None,
        runner_hint: str | None = None,
        no_retry: bool = False,
        store_io: bool = True,
        output_lifetime: float | None = None,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Persist a new IN_QUEUE job: (job, created). An idempotent replay returns (the first job, False).
        Raises QueueFull past a cap (exact across API nodes), or when `max_endpoint_queue` jobs of its
        endpoint are queued already (fal_max_queue_length). fal's platform headers: `runner_hint` (see
        `claim`), `no_retry` (a lost worker fails it instead of requeueing it), `store_io` False (its
        payload is deleted once delivered: `Retention.result_delivered`), `output_lifetime` (seconds its
        output files are kept, math.inf: forever; None: the node's retention). `job_id`: the id to give
        it (the caller may have stored files under it already); a new UUID when None. Its place in the
        queue is fair across keys (see `claim`)."""
        ...

    def submit_many(
        self, subs: list[Submission], *, sync_later: bool = False
    ) -> list[tuple[Job, bool] | QueueFull]:
        """`submit` each, in order, committed together (group commit: one sync to disk for all). A
        submission past a cap gets its QueueFull in its place in the list; the others are queued.
        `sync_later`: the commit may return before it is on disk, and `sync` must follow before any
        durable submission is acknowledged (so that the jobs can be handed to workers meanwhile)."""
        ...

    def sync(self) -> None:
        """Put every commit so far on disk (after a `sync_later` commit)."""
        ...

    def get(self, job_id: str, owner_key_id: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another key."""
        ...

    def state(self, job_id: str, owner_key_id: str | None = None) -> JobState | None:
        """Like `get`, but only the small columns a status answer needs."""
        ...

    def queue_position(self, job: JobState) -> int:
        """Queued jobs of its endpoint that will be claimed before it (in `claim`'s order)."""
        ...

    def progress_of(self, job_id: str) -> JobProgress | None:
        """`progress` of one job that is not queued (no position): two reads by key."""
        ...

    def progress(self, job_ids: list[str], *, positions: bool = True) -> list[JobProgress]:
        """For status streams: state, queue position (when `positions`) and newest log line id of each
        existing job among `job_ids`, in one read."""
        ...

    def logs(self, job_id: str, after_id: int = 0) -> list[LogLine]:
        """The job's log lines with id > `after_id`, in order."""
        ...

    def cancel(self, job_id: str, owner_key_id: str) -> str:
        """'requested' (queued jobs end at once, running ones stop at the next step), 'completed' or 'not_found'."""
        ...

    def has_queued(self, endpoint_ids: list[str]) -> bool:
        """Cheap read used by idle workers so that polling takes no write lock."""
        ...

    def claim(
        self, worker_id: str, endpoint_ids: list[str], lease_seconds: float, hint_seconds: float = 0.0
    ) -> Job | None:
        """Take the next queued job with a lease; never the same job twice. Order: priority, then turns
        across keys (each key's jobs FIFO, keys taking turns), so that no key can hold the whole queue. A
        job whose runner hint another worker used within `hint_seconds` is left to that worker."""
        ...

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease. False when the job is no longer ours (finished, cancelled, reclaimed)."""
        ...

    def release(self, job: Job, worker_id: str) -> None:
        """Give a running job back to the queue (graceful shutdown) without counting the attempt."""
        ...

    def retry_later(self, job: Job, worker_id: str, failure: Failure, max_attempts: int) -> bool:
        """Give a job we hold back to the queue, its attempt counted (e.g. its outputs could not be stored);
        once it has had `max_attempts`, complete it with `failure` instead. False if it was not ours."""
        ...

    def log(self, job_id: str, message: str, level: str = "INFO") -> None: ...

    def append_logs(self, job_id: str, lines: list[tuple[str, str]]) -> bool:
        """Write (message, level) lines at once; return whether the user asked to cancel."""
        ...

    def complete(
        self,
        job: Job,
        worker_id: str,
        output: dict[str, Any] | None,
        failure: Failure | None = None,
        inference_time: float | None = None,
        images_checked: int | None = None,
        images_flagged: int | None = None,
    ) -> bool:
        """Record the end of a job we hold (and its webhook, in the same transaction). False if our lease
        was lost (someone else owns it now). `images_checked/flagged`: the safety checker's counts, if
        it ran."""
        ...

    def finish_and_claim(
        self,
        finished: list[Finished],
        worker_id: str,
        endpoint_ids: list[str] | None = None,
        lease_seconds: float = 0.0,
        limit: int = 1,
        hint_seconds: float = 0.0,
        *,
        sync_later: bool = False,
    ) -> tuple[list[bool], list[Job]]:
        """`complete` each of `finished` (after writing its last log lines), and `claim` up to `limit` next
        jobs of `endpoint_ids` (none when None; `hint_seconds` as in `claim`), all in one transaction:
        ([completed, per job], the jobs claimed, in claim order). A busy worker commits once per batch of
        jobs, not three times per job. `sync_later`: the commit may return before it is on disk (safe from
        a process crash, not yet from a power loss), and `sync` follows (once the results are announced)."""
        ...

    def expire_leases(self, worker_id: str) -> None:
        """End the leases of a worker known to be gone, so that the next `reap` requeues its jobs now."""
        ...

    def reap(self, max_attempts: int) -> None:
        """Fail queued jobs past their start deadline; requeue (or, after `max_attempts` or with
        `no_retry`, fail) running jobs whose lease expired. Safe to run on every node at once."""
        ...


class WebhookOutbox(Protocol):
    """One row per completed job that has a webhook URL, delivered by any API node under a lease."""

    def claim_webhook(self, lease_seconds: float, skip: Collection[str] = ()) -> WebhookTask | None:
        """The next due delivery, leased to the caller; None when nothing is due. `skip`: URL prefixes
        (destinations the caller is busy with) whose rows are left for later."""
        ...

    def webhook_done(
        self, job_id: str, *, delivered: bool, error: str | None, retry_at: float | None
    ) -> None:
        """Record an attempt: delivered, to retry at `retry_at`, or dead (neither)."""
        ...

    def webhook_state(self, job_id: str) -> dict[str, Any] | None:
        """The outbox row of a job (state, attempts, last_error...), or None."""
        ...


class UploadGrants(Protocol):
    """Short-lived upload capabilities: a single-use PUT URL for one file, or a CDN token for a few."""

    def grant_upload(
        self,
        owner_key_id: str,
        ttl: float,
        file_key: str | None = None,
        content_type: str | None = None,
        uses: int = 1,
    ) -> str:
        """A new token good for `uses` uploads within `ttl` seconds (only its hash is kept)."""
        ...

    def use_upload_grant(self, token: str, *, file: bool) -> dict[str, Any] | None:
        """Take one use of an unexpired grant, a PUT URL's (`file`) or a CDN token's, whose key is not
        revoked: its `owner_key_id`, `file_key`, `content_type` and `expires_at`; None when there is no
        such grant or no use left."""
        ...

    def refund_upload_grant(self, token: str) -> None:
        """Give back the use taken for an upload that failed."""
        ...


class Retention(Protocol):
    """What is kept how long: finished jobs, their payloads and output files, uploads (store/retention.py).
    Pruners claim expired items in batches (one pruner per item), delete their files, then `finish`."""

    def record_upload(self, file_key: str, owner_key_id: str, lifetime: float | None = None) -> None:
        """Remember an uploaded file, to expire after `lifetime` seconds (math.inf: never; None: the node's
        retain_uploads)."""
        ...

    def result_delivered(self, job_id: str) -> bool:
        """An X-Fal-Store-IO: 0 job's result was delivered: its payload is due now. False for other jobs."""
        ...

    def forget_request(self, job_id: str) -> bool:
        """Mark a finished job's payload and outputs deleted (their files already are). False when it is
        not finished."""
        ...

    def job_retention(self, job_id: str) -> int | None:
        """The job's retention bits (what is gone: OUTPUTS_GONE, PAYLOAD_GONE), or None for no such job."""
        ...

    def upload_deleted(self, file_key: str) -> bool:
        """Whether this uploaded file was deleted by retention."""
        ...

    def database_bytes(self) -> int:
        """The database's size on disk (SQLite: its file without the WAL; PostgreSQL: pg_database_size)."""
        ...

    def expired(self, kind: str, policy: RetentionPolicy, limit: int) -> list[Expired]:
        """What `claim` would take now (for a dry run), claiming nothing."""
        ...

    def claim(self, kind: str, policy: RetentionPolicy, limit: int, lease_seconds: float) -> PruneClaim:
        """Up to `limit` expired items of `kind` (store.retention.KINDS), leased to the caller."""
        ...

    def finish(self, claim: PruneClaim) -> dict[str, int]:
        """Apply a claim whose files are deleted: rows deleted or cleared, by table (or part)."""
        ...

    def housekeeping(self, policy: RetentionPolicy, limit: int) -> dict[str, int]:
        """Delete a batch of rows that hold no files (expired grants, stale hints, old tombstones)."""
        ...


class ServerValues(Protocol):
    """Values every node must share (the webhook signing key)."""

    def server_value(self, name: str, make: Callable[[], str]) -> str:
        """Get a shared value, creating it with `make()` once (first writer wins across nodes)."""
        ...


class ClusterView(Protocol):
    """The whole deployment as the store sees it: live workers, queue depth, finished jobs."""

    def register_worker(
        self,
        worker_id: str,
        endpoint_ids: list[str],
        device: str = "",
        presets: dict[str, str] | None = None,
    ) -> None:
        """Called once a worker has loaded its endpoints; `presets` names the model preset each one loaded
        (endpoint id -> `official`, `tiny`...), so API nodes can say which endpoints run random weights."""
        ...

    def worker_seen(self, worker_id: str, job_id: str | None = None) -> None: ...

    def unregister_worker(self, worker_id: str) -> None: ...

    def recent_workers(self, within_seconds: float) -> list[WorkerInfo]:
        """Workers that reported in the last `within_seconds` (use the lease: older means presumed dead)."""
        ...

    def queue_depths(self) -> list[QueueDepth]:
        """Unfinished jobs by status, endpoint and priority."""
        ...

    def webhook_counts(self) -> dict[str, int]:
        """Outbox rows by state."""
        ...

    def finished_since(
        self, after: tuple[float, int], until: float, limit: int = 5000
    ) -> Iterator[FinishedJob]:
        """Jobs with (finished_at, seq) > `after` and finished_at <= `until`, in that order, in pages."""
        ...


class JobStore(Protocol):
    """The facade the API and the workers use."""

    @property
    def keys(self) -> KeyStore: ...

    @property
    def queue(self) -> JobQueue: ...

    @property
    def outbox(self) -> WebhookOutbox: ...

    @property
    def uploads(self) -> UploadGrants: ...

    @property
    def values(self) -> ServerValues: ...

    @property
    def cluster(self) -> ClusterView: ...

    @property
    def retention(self) -> Retention: ...

    @property
    def inline_reads(self) -> bool:
        """True when reads never wait for a lock or the network (SQLite in WAL mode), so that async code
        may run them on the event loop instead of in a thread."""
        ...

    def ping(self) -> bool:
        """True, or an exception when the database cannot be reached."""
        ...

    def close(self) -> None: ...
