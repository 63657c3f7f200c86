"""The connection to the job store's database: a writer engine and a reader engine, one transaction each.

SQLite (WAL): writers open with `BEGIN IMMEDIATE`, readers with a deferred `BEGIN`, on two pools, so that
status polls never queue for the write lock. PostgreSQL: one pool for both.

Durability is decided here and nowhere else: with `durable` (the default, `Settings.durable_writes`) a
commit returns only once it is on disk, so an acknowledged submit survives a power loss
(SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`). Without it, a power loss may drop the
last moments of commits (never corrupting the database): SQLite `synchronous=NORMAL`, PostgreSQL
`synchronous_commit=off`.

SQLite writers of every process on the machine queue for the write lock in the kernel (`_WriteGate`, a
lock file beside the database), instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 ms... between
tries: under load, API submits and worker completions collide on every job.

Writes that no caller relies on later (`tx(lazy=True)`: a claim, a heartbeat, log lines, and a sync
/run's job and result, which its caller gets in the response itself) never wait for the disk: losing one
to a power loss only runs a job again, drops a log line, or forgets a sync /run whose caller was answered
(or never was), and the next durable commit puts them on disk too (SQLite's WAL is synced as a whole;
PostgreSQL flushes its WAL in order). A process crash (kill -9) loses none of them: a commit is in the
operating system's hands once it returns. On SQLite a durable write may also commit lazily and `sync`
after (the fsync that `synchronous=FULL` makes at each commit), when it has work to do in between: the
submits' group commit tells the workers handed its jobs that they are stored (api/services/submitter.py),
and answers after; a worker announces a queued job's result, then syncs (worker/loop.py), so that a power
loss in that millisecond can only run the job again.
The hot path's statements run on the sqlite3 driver itself (store/driver.py).
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event, select

from pulid_server.failures import is_storage_full
from pulid_server.store import driver
from pulid_server.store.driver import RawReads
from pulid_server.store.records import StorageFull

# A burst of large writes grows SQLite's write-ahead log; past a checkpoint it is cut back to this size
# instead of keeping its peak size on disk for good.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


class Database:
    def __init__(self, url: str, *, durable: bool = True):
        self.url = url
        self.durable = durable
        self.engine = _engine(url, durable=durable)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.read_engine = _engine(url, durable=durable, writer=False) if self.is_sqlite else self.engine
        # SQLite: a writer pool that never syncs (synchronous is a per-connection setting).
        self.lazy_engine = _engine(url, durable=False) if self.is_sqlite and durable else self.engine
        path = self.engine.url.database if self.is_sqlite else None
        on_disk = path if path and path != ":memory:" else None
        self._gate = _WriteGate(on_disk + "-writers" if on_disk else None)
        self._raw = RawReads(on_disk) if on_disk else None
        self._wal = on_disk + "-wal" if on_disk and durable else None

    @contextmanager
    def tx(self, *, lazy: bool = False) -> Iterator[Connection]:
        """A write transaction (committed on exit). `lazy`: its commit need not reach the disk before it
        returns (see the module's docstring). StorageFull when the disk has no room for it."""
        try:
            with self._gate.held(), (self.lazy_engine if lazy else self.engine).begin() as conn:
                if lazy and self.durable and not self.is_sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        except Exception as exc:
            if is_storage_full(exc):
                raise StorageFull("the database has no space left for this write") from exc
            raise

    @property
    def syncs_later(self) -> bool:
        """Whether a lazy commit can be put on disk afterwards by `sync` (SQLite)."""
        return self._wal is not None

    def sync(self) -> None:
        """SQLite: put every commit so far on disk, as `synchronous=FULL` does at each commit (an fsync of
        the write-ahead log), so that lazy commits made before can be acknowledged as durable."""
        if self._wal is None:
            return
        try:
            fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # checkpointed and removed: the commits are in the database file
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def writing(self) -> AbstractContextManager[None]:
        """Hold the machine's SQLite write gate (re-entrant; nothing on other databases)."""
        return self._gate.held()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection that never takes SQLite's write lock."""
        with self.read_engine.connect() as conn:
            yield conn

    def first(self, stmt: Select[Any], params: dict[str, Any]) -> Mapping[str, Any] | None:
        """The first row of a hot read by key (a statement built once), or None. On SQLite it runs on this
        thread's own sqlite3 connection (store/driver.py), on every request."""
        if self._raw is not None:
            return self._raw.first(stmt, params)
        with self.read() as conn:
            return driver.first(conn, stmt, params)

    def ping(self) -> bool:
        with self.read() as conn:
            conn.execute(select(1))
        return True

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
        self.lazy_engine.dispose()
        self._gate.close()
        if self._raw is not None:
            self._raw.close()


class _WriteGate:
    """An exclusive flock on a lock file, held around each SQLite write transaction. Waiters sleep in the
    kernel and the next one wakes as soon as it is released. Re-entrant within a thread; each holder uses
    its own descriptor (a flock belongs to an open file, not to a thread), kept in a pool for the next."""

    def __init__(self, path: str | None):
        self._path = path
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._mine = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._path is None or getattr(self._mine, "held", False):
            yield
            return
        try:
            fd = self._free.get_nowait()
        except queue.Empty:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._mine.held = True
        try:
            yield
        finally:
            self._mine.held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._free.put(fd)

    def close(self) -> None:
        while True:
            try:
                os.close(self._free.get_nowait())
            except queue.Empty:
                return


def _engine(url: str, *, durable: bool, writer: bool = True) -> Engine:
    """A pooled engine. On SQLite, `writer` engines open every transaction with BEGIN IMMEDIATE and
    reader engines with a plain (deferred) BEGIN, so that status polls never queue for the write lock."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        # Per session, whatever the server's default: the operator's choice travels with the nodes.
        commit = "on" if durable else "off"
        connect_args = {} if "options=" in url else {"options": f"-c synchronous_commit={commit}"}
        return create_engine(
            url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
        )
    # Worker processes are spawned (never forked), so pooled connections are never shared across processes.
    # LIFO: the connection used last is used next. Each SQLite connection has its own page cache, and one
    # that sat idle while others wrote must re-read what changed: round-robin over the pool (the default)
    # made every transaction start cold (bench: 2-3x longer commits between 200 ms jobs).
    engine = create_engine(
        url,
        pool_size=8,
        max_overflow=32,
        pool_use_lifo=True,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a deferred read->write upgrade fails with
        # SQLITE_BUSY at once, ignoring busy_timeout. On the driver: SQLAlchemy's execution of it cost more.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if writer else "BEGIN")  # type: ignore[union-attr]

    return engine
