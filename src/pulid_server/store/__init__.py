"""The durable job store (SQLite by default, PostgreSQL for scale-out)."""

from pulid_server.store.cluster import FinishedJob, QueueDepth, WorkerInfo
from pulid_server.store.jobs import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    PRIORITIES,
    Failure,
    Job,
    JobStore,
    LogLine,
    QueueFull,
    WebhookTask,
)

__all__ = [
    "COMPLETED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "PRIORITIES",
    "Failure",
    "FinishedJob",
    "Job",
    "JobStore",
    "LogLine",
    "QueueDepth",
    "QueueFull",
    "WebhookTask",
    "WorkerInfo",
]
