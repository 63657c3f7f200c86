"""The durable job store (SQLite by default, PostgreSQL for scale-out): a `JobStore` facade whose parts
each own their tables (keys, queue, outbox, uploads, values, cluster)."""

from pulid_server.store.protocol import (
    ClusterView,
    JobQueue,
    JobStore,
    KeyStore,
    ServerValues,
    UploadGrants,
    WebhookOutbox,
)
from pulid_server.store.records import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    PRIORITIES,
    FinishedJob,
    Job,
    LogLine,
    QueueDepth,
    QueueFull,
    WebhookTask,
    WorkerInfo,
)
from pulid_server.store.sql import SqlJobStore, open_job_store

__all__ = [
    "COMPLETED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "PRIORITIES",
    "ClusterView",
    "FinishedJob",
    "Job",
    "JobQueue",
    "JobStore",
    "KeyStore",
    "LogLine",
    "QueueDepth",
    "QueueFull",
    "ServerValues",
    "SqlJobStore",
    "UploadGrants",
    "WebhookOutbox",
    "WebhookTask",
    "WorkerInfo",
    "open_job_store",
]
