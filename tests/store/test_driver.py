"""store/driver.py: the hot statements run on the sqlite3 driver give what SQLAlchemy gives (SQLite), and
go through SQLAlchemy elsewhere (PostgreSQL) or when they hold an IN (...) list."""

from __future__ import annotations

import time

from sqlalchemy import bindparam, select

from pulid_server.store import COMPLETED, IN_PROGRESS, SqlJobStore, driver
from pulid_server.store.queue import _FINISH, _GET, _LAST_LOG
from pulid_server.store.schema import jobs
from tests.store.test_store import ECHO, submit


def test_a_row_with_booleans_and_constants_reads_as_sqlalchemy_reads_it(store: SqlJobStore) -> None:
    job = submit(store)
    with store.db.tx() as conn:
        expected = dict(conn.execute(_GET, {"id": job.id}).one()._mapping)
        got = driver.first(conn, _GET, {"id": job.id})
        assert got == expected and got is not None
        assert {type(got[name]) for name in ("cancel_requested", "no_retry", "store_io", "durable")} == {bool}
        assert driver.first(conn, _GET, {"id": "missing"}) is None
        assert driver.first(conn, _LAST_LOG, {"id": job.id}) == {"last": None}
    assert store.db.first(_GET, {"id": job.id}) == expected  # a read outside any transaction


def test_an_update_sets_the_columns_its_parameters_name_and_counts_its_rows(store: SqlJobStore) -> None:
    job = submit(store)
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and claimed.status == IN_PROGRESS
    finish = _FINISH[True, False]
    now = time.time()
    params = {"job": job.id, "only_if": IN_PROGRESS, "holder": "w", "finished_now": now, "status": COMPLETED}
    with store.db.tx() as conn:
        assert driver.run(conn, finish, {**params, "output_json": '{"ok": 1}', "inference_time": 0.5}) == 1
        assert driver.run(conn, finish, {**params, "output_json": "{}"}) == 0  # no longer IN_PROGRESS
    done = store.queue.get(job.id)
    assert done is not None and (done.status, done.output_json, done.inference_time) == (
        COMPLETED,
        '{"ok": 1}',
        0.5,
    )


def test_a_statement_with_an_in_list_goes_through_sqlalchemy(store: SqlJobStore) -> None:
    first, second = submit(store), submit(store)
    in_list = select(jobs.c.id).where(jobs.c.id.in_(bindparam("ids", expanding=True))).order_by(jobs.c.seq)
    assert driver.compiled(in_list, frozenset({"ids"})) is None
    constants = select(jobs.c.id).where(jobs.c.status == "IN_QUEUE").order_by(jobs.c.seq)
    compiled = driver.compiled(constants, frozenset())
    assert compiled is not None and list(compiled[2].values()) == ["IN_QUEUE"]
    with store.db.tx() as conn:
        assert driver.first(conn, in_list, {"ids": [second.id, first.id]}) == {"id": first.id}
        assert driver.first(conn, constants, {}) == {"id": first.id}
