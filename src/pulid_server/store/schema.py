"""Tables of the job store. One schema for SQLite and PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)

# Bump only for changes that `create_all` cannot make by itself (new columns, changed meanings), and add
# the step to store/migrate.py. New tables and indexes need no bump: they are created at start-up.
SCHEMA_VERSION = 6  # 2: workers.presets; 3: per-key content policy (api_keys), safety checker counts (jobs)
# 4: fal's platform headers and data retention (jobs: runner_hint ... prune_until)
# 5: fair turns across keys (jobs.vt), counted upload grants (upload_grants.uses_left)
# 6: jobs.durable (whether a job's writes wait for the disk: false for a sync /run)
metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long-lived queues.
BigInt = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("secret_hash", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    # content policy overrides (pulid_server.policy); NULL: the node's Settings decide
    Column("safety_mode", String(16)),
    Column("safety_action", String(16)),
)

jobs = Table(
    "jobs",
    metadata,
    # seq orders the queue (FIFO within a priority); id is the public request id.
    Column("seq", BigInt, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("endpoint_id", String(200), nullable=False),
    Column("owner_key_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # IN_QUEUE | IN_PROGRESS | COMPLETED
    Column("priority", Integer, nullable=False, default=0),  # 0 normal, 1 low
    # Virtual start time (fair queuing across keys): within a priority, jobs are claimed by (vt, seq).
    # Set at submit to max(the queue's virtual time, this key's last queued vt + 1); see store/queue.py.
    Column("vt", BigInt, nullable=False, default=0),
    Column("input_json", Text, nullable=False),
    Column("base_url", String(500), nullable=False, default=""),
    Column("webhook_url", Text),
    Column("idempotency_key", String(200)),
    Column("created_at", Float, nullable=False),
    Column("start_deadline", Float),  # X-Fal-Request-Timeout: must start before this time
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("worker_id", String(100)),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("output_json", Text),
    Column("error", Text),
    Column("error_type", String(64)),
    Column("error_status", Integer),
    Column("error_body_json", Text),
    Column("inference_time", Float),
    # images the safety checker saw and flagged (for /metrics); NULL when it did not run
    Column("images_checked", Integer),
    Column("images_flagged", Integer),
    # fal's platform headers (v4): X-Fal-Runner-Hint, x-fal-no-retry, X-Fal-Store-IO: 0
    Column("runner_hint", String(200)),
    Column("no_retry", Boolean, nullable=False, default=False, server_default=false()),
    Column("store_io", Boolean, nullable=False, default=True, server_default=true()),
    # False for a sync /run, whose caller hears of the job only in the response that carries its result:
    # neither its submit nor its result waits for the disk (store/database.py).
    Column("durable", Boolean, nullable=False, default=True, server_default=true()),
    # Retention (v4; store/retention.py). `retention` says which clock the outputs follow and what is gone
    # (bits in store/retention.py). With its own lifetime (X-Fal-Object-Lifecycle-Preference) the outputs
    # expire at `outputs_expire_at` (set at completion from `output_lifetime`; NULL there: never);
    # otherwise after the node's retain_outputs. `payload_expire_at`: when a delivered X-Fal-Store-IO: 0
    # result is due for deletion. `prune_until`: a pruner's claim on the row.
    Column("output_lifetime", Float),
    Column("outputs_expire_at", Float),
    Column("payload_expire_at", Float),
    Column("retention", SmallInteger, nullable=False, default=0, server_default="0"),
    Column("prune_until", Float),
    UniqueConstraint("owner_key_id", "idempotency_key", name="uq_jobs_idempotency"),
)
Index("ix_jobs_fair", jobs.c.status, jobs.c.priority, jobs.c.vt, jobs.c.seq)  # claim order, positions
Index("ix_jobs_owner", jobs.c.owner_key_id, jobs.c.status, jobs.c.priority, jobs.c.vt)  # per-key cap, vt
Index("ix_jobs_lease", jobs.c.status, jobs.c.lease_until)
Index("ix_jobs_finished", jobs.c.finished_at)  # /metrics reads only the jobs finished since its last scrape
# The pruner's ranges: parts on the node's clocks by what is gone and age; parts with their own expiry.
Index("ix_jobs_retention", jobs.c.retention, jobs.c.finished_at)
Index("ix_jobs_outputs_expire", jobs.c.outputs_expire_at)
Index("ix_jobs_payload_expire", jobs.c.payload_expire_at)

job_logs = Table(
    "job_logs",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
)
Index("ix_job_logs_job", job_logs.c.job_id, job_logs.c.id)

# Pending uploads: the capability in an upload URL (JS initiate + PUT) or a CDN token (Python client).
upload_grants = Table(
    "upload_grants",
    metadata,
    Column("token_hash", String(128), primary_key=True),
    Column("owner_key_id", String(64), nullable=False),
    Column("file_key", String(500)),  # set for single-file PUT grants, NULL for CDN tokens
    Column("content_type", String(200)),
    Column("expires_at", Float, nullable=False),
    Column("uses_left", Integer, nullable=False, default=1),  # 1 for a PUT URL, a few for a CDN token
)
Index("ix_upload_grants_expiry", upload_grants.c.expires_at)  # expired grants are deleted in batches

# Uploaded files, for retention: one row per `uploads/...` key (store/retention.py). `state`: 0 stored on
# the node's clock (retain_uploads), 1 stored with its own lifetime (`expire_at`; NULL: never), 2 deleted
# (kept a while so that its URL answers 410, not 404).
uploads = Table(
    "uploads",
    metadata,
    Column("file_key", String(500), primary_key=True),
    Column("owner_key_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", SmallInteger, nullable=False, default=0),
    Column("expire_at", Float),
    Column("prune_until", Float),
)
Index("ix_uploads_retention", uploads.c.state, uploads.c.created_at)
Index("ix_uploads_expire", uploads.c.expire_at)

# X-Fal-Runner-Hint affinity: the worker that last finished a job with this hint (it holds the hint's
# state, e.g. a cached face); other workers leave such jobs to it for a few seconds (store/queue.py).
runner_hints = Table(
    "runner_hints",
    metadata,
    Column("hint", String(200), primary_key=True),
    Column("worker_id", String(100), nullable=False),
    Column("seen_at", Float, nullable=False),
)

# Durable webhook outbox: one row per job, written in the same transaction that completes the job.
webhooks = Table(
    "webhooks",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("state", String(16), nullable=False, default="pending"),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("last_error", Text),
)
Index("ix_webhooks_due", webhooks.c.state, webhooks.c.next_attempt_at)

# Server-wide values every node must share (the webhook signing key).
server_values = Table(
    "server_values",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# Worker processes, as they last reported themselves: a row is written once the worker has loaded its
# endpoints (so a recent row means "a model is loaded"), refreshed while idle and by every job heartbeat.
workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(100), primary_key=True),
    Column("hostname", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("device", String(64), nullable=False, default=""),
    Column("endpoints", Text, nullable=False),  # comma-separated endpoint ids it serves
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("job_id", String(64)),  # the job it is running, if any
    # JSON {endpoint id: model preset it loaded}, e.g. {"fal-ai/pulid": "tiny"}: "auto" may fall back to the
    # random-weight tiny preset, and API nodes say so per endpoint (readiness, playground, schema). (v2)
    Column("presets", Text, nullable=False, default="{}", server_default="{}"),
)
Index("ix_workers_seen", workers.c.last_seen)
