"""The hot path's statements on SQLite, run on the sqlite3 driver itself.

SQLAlchemy's execution layers (parameter processing, result objects, events, the pool around a read) cost
~15x a statement by key on SQLite: 73 µs against 4 µs for a read by primary key, and most of a job's
submit and completion. The statements of a job's hot path are built once (store/queue.py, keys.py); here
each is compiled once per set of parameter names to SQL and run on the DB-API connection, inside the
caller's SQLAlchemy transaction (`first`, `run`, `run_many`) or, for reads, on a connection per thread
(`RawReads`). On PostgreSQL the same calls go through SQLAlchemy.

Only for statements built once (they are cache keys) with every column given (a Python-side column default
would be SQLAlchemy's to fill: such a statement runs through SQLAlchemy instead).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Boolean, Connection, Select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import UpdateBase

_DIALECT = sqlite.dialect(paramstyle="named")
Statement = Select[*tuple[Any, ...]] | UpdateBase  # built once
# SQL, the result's (column name, is boolean), and the values the statement holds (its constants)
_Compiled = tuple[str, list[tuple[str, bool]], dict[str, Any]]
_compiled: dict[tuple[Statement, frozenset[str]], _Compiled | None] = {}


def compiled(stmt: Statement, names: frozenset[str]) -> _Compiled | None:
    """`stmt` as SQLite SQL with :named parameters `names`; None if SQLAlchemy must run it (Python-side
    defaults to fill, or an IN (...) list to expand)."""
    key = (stmt, names)
    if key not in _compiled:
        done = stmt.compile(dialect=_DIALECT, column_keys=sorted(names))
        prefetch = getattr(done, "insert_prefetch", None) or getattr(done, "update_prefetch", None)
        if prefetch or any(bind.expanding for bind in done.binds.values()):
            _compiled[key] = None
        else:
            columns = [(c.name, isinstance(c.type, Boolean)) for c in stmt.exported_columns]
            constants = {  # (bind_names: each parameter once, by the name the SQL gives it)
                name: bind.effective_value
                for bind, name in done.bind_names.items()
                if name not in names and not bind.required
            }
            _compiled[key] = (str(done), columns, constants)
    return _compiled[key]


def mapping(columns: list[tuple[str, bool]], row: Sequence[Any]) -> dict[str, Any]:
    """A row as SQLAlchemy would give it: SQLite keeps booleans as 0/1."""
    return {name: bool(v) if is_bool and v is not None else v for (name, is_bool), v in zip(columns, row)}


def first(conn: Connection, stmt: Statement, params: dict[str, Any]) -> Mapping[str, Any] | None:
    """The first row `stmt` gives on `conn` (inside its transaction, if one is open), or None."""
    sql = _on_driver(conn, stmt, params)
    if sql is None:
        row = conn.execute(stmt, params).first()
        return dict(row._mapping) if row is not None else None
    found = _dbapi(conn).execute(sql[0], _with_constants(sql, params)).fetchone()
    return mapping(sql[1], found) if found is not None else None


def run(conn: Connection, stmt: Statement, params: dict[str, Any]) -> int:
    """Run `stmt` inside `conn`'s transaction; the rows it changed."""
    sql = _on_driver(conn, stmt, params)
    if sql is None:
        return int(conn.execute(stmt, params).rowcount)
    return _dbapi(conn).execute(sql[0], _with_constants(sql, params)).rowcount


def run_many(conn: Connection, stmt: Statement, rows: list[dict[str, Any]]) -> None:
    """Run `stmt` once per row (all with the same keys) inside `conn`'s transaction."""
    if not rows:
        return
    sql = _on_driver(conn, stmt, rows[0])
    if sql is None:
        conn.execute(stmt, rows)
        return
    _dbapi(conn).executemany(sql[0], [_with_constants(sql, row) for row in rows])


def _on_driver(conn: Connection, stmt: Statement, params: dict[str, Any]) -> _Compiled | None:
    """`stmt` compiled for the driver, or None where SQLAlchemy runs it (PostgreSQL, or see `compiled`)."""
    return compiled(stmt, frozenset(params)) if conn.dialect.name == "sqlite" else None


def _with_constants(sql: _Compiled, params: dict[str, Any]) -> dict[str, Any]:
    return {**sql[2], **params} if sql[2] else params


def _dbapi(conn: Connection) -> sqlite3.Connection:
    return conn.connection.dbapi_connection  # type: ignore[return-value]


class RawReads:
    """Single-statement reads through one sqlite3 connection per thread (autocommit: each statement reads
    one consistent snapshot of the WAL)."""

    def __init__(self, path: str):
        self._path = path
        self._mine = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def first(self, stmt: Statement, params: dict[str, Any]) -> dict[str, Any] | None:
        sql = compiled(stmt, frozenset(params))
        assert sql is not None, "a read by key: no IN (...) list"
        row = self._connection().execute(sql[0], _with_constants(sql, params)).fetchone()
        return mapping(sql[1], row) if row is not None else None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._mine, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
            with self._lock:
                self._opened.append(conn)
            self._mine.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
