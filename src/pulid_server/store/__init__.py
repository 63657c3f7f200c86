"""The durable job store (SQLite by default, PostgreSQL for scale-out): a `JobStore` facade whose parts
each own their tables (keys, queue, outbox, uploads, values, cluster, retention)."""

from pulid_server.store.protocol import (
    ClusterView,
    JobQueue,
    JobStore,
    KeyStore,
    Retention,
    ServerValues,
    UploadGrants,
    WebhookOutbox,
)
from pulid_server.store.records import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    PRIORITIES,
    Expired,
    FinishedJob,
    Job,
    LogLine,
    QueueDepth,
    QueueFull,
    RetentionPolicy,
    WebhookTask,
    WorkerInfo,
)
from pulid_server.store.retention import OUTPUTS_GONE, PAYLOAD_GONE, PruneClaim
from pulid_server.store.sql import SqlJobStore, open_job_store

__all__ = [
    "COMPLETED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "OUTPUTS_GONE",
    "PAYLOAD_GONE",
    "PRIORITIES",
    "ClusterView",
    "Expired",
    "FinishedJob",
    "Job",
    "JobQueue",
    "JobStore",
    "KeyStore",
    "LogLine",
    "PruneClaim",
    "QueueDepth",
    "QueueFull",
    "Retention",
    "RetentionPolicy",
    "ServerValues",
    "SqlJobStore",
    "UploadGrants",
    "WebhookOutbox",
    "WebhookTask",
    "WorkerInfo",
    "open_job_store",
]
