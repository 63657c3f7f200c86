"""`SqlJobStore`: the `JobStore` facade over one SQL database (SQLite or PostgreSQL), one part per concern."""

from __future__ import annotations

from pulid_server.store.cluster import SqlClusterView
from pulid_server.store.database import Database
from pulid_server.store.keys import SqlKeyStore
from pulid_server.store.migrate import ensure_schema
from pulid_server.store.outbox import SqlWebhookOutbox
from pulid_server.store.protocol import JobStore
from pulid_server.store.queue import SqlJobQueue
from pulid_server.store.retention import SqlRetention
from pulid_server.store.uploads import SqlUploadGrants
from pulid_server.store.values import SqlServerValues


class SqlJobStore:
    """Creates the schema if needed (safe when many nodes start at once), then serves every part."""

    def __init__(self, url: str, *, durable: bool = True):
        self.db = Database(url, durable=durable)
        try:
            with self.db.writing():  # SQLite: a fresh file's first connections switch it to WAL one at a time
                ensure_schema(self.db.engine)
        except BaseException:
            self.db.close()
            raise
        self.keys = SqlKeyStore(self.db)
        self.queue = SqlJobQueue(self.db)
        self.outbox = SqlWebhookOutbox(self.db)
        self.uploads = SqlUploadGrants(self.db)
        self.values = SqlServerValues(self.db)
        self.cluster = SqlClusterView(self.db)
        self.retention = SqlRetention(self.db)

    @property
    def inline_reads(self) -> bool:
        return self.db.is_sqlite  # WAL readers never wait for a lock and never leave the machine

    def ping(self) -> bool:
        return self.db.ping()

    def close(self) -> None:
        self.db.close()


def open_job_store(url: str, *, durable: bool = True) -> JobStore:
    """The job store for a database URL (`sqlite:///...` or `postgresql://...`); `durable`: see database.py."""
    return SqlJobStore(url, durable=durable)
