"""The job store, the same tests on SQLite and on a real PostgreSQL 15 (see conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text, update

from pulid_server.failures import Failure
from pulid_server.policy import KeyPolicy
from pulid_server.store import COMPLETED, IN_PROGRESS, IN_QUEUE, Finished, Job, QueueFull, SqlJobStore
from pulid_server.store.migrate import SchemaTooNew
from pulid_server.store.schema import SCHEMA_VERSION, metadata, server_values, workers

ECHO = "test/echo"
FAILED = Failure("internal_error", 500, "boom")


def submit(store: SqlJobStore, owner: str = "k1", endpoint: str = ECHO, **kw: Any) -> Job:
    job, created = store.queue.submit(
        endpoint_id=endpoint, owner_key_id=owner, input_json="{}", base_url="http://x", **kw
    )
    assert created
    return job


def fetch(store: SqlJobStore, job: Job) -> Job:
    got = store.queue.get(job.id)
    assert got is not None
    return got


def drain(store: SqlJobStore, worker: str = "w", endpoints: tuple[str, ...] = (ECHO,)) -> list[str]:
    order = []
    for _ in range(100):
        job = store.queue.claim(worker, list(endpoints), 30)
        if job is None:
            return order
        order.append(job.id)
        assert store.queue.complete(job, worker, {"ok": True})
    raise AssertionError("queue never drained")


def test_claims_by_priority_then_fifo(store: SqlJobStore) -> None:
    n0, l1, n2, l3 = submit(store), submit(store, priority=1), submit(store), submit(store, priority=1)
    other = submit(store, endpoint="test/image")
    assert drain(store) == [n0.id, n2.id, l1.id, l3.id]
    assert fetch(store, other).status == IN_QUEUE  # a worker only claims the endpoints it serves
    job = fetch(store, n0)
    assert (job.status, job.attempts, job.worker_id, job.output_json) == (COMPLETED, 1, "w", '{"ok": true}')
    assert job.started_at is not None and job.finished_at is not None and job.finished_at >= job.started_at


def test_queue_positions(store: SqlJobStore) -> None:
    n0, l1, n2, l3 = submit(store), submit(store, priority=1), submit(store), submit(store, priority=1)
    other = submit(store, endpoint="test/image")
    assert [store.queue.queue_position(j) for j in (n0, n2, l1, l3)] == [0, 1, 2, 3]
    assert store.queue.queue_position(other) == 0  # positions count within one endpoint
    first = store.queue.claim("w", [ECHO], 30)
    assert first is not None and first.id == n0.id
    assert [store.queue.queue_position(j) for j in (n2, l1, l3)] == [0, 1, 2]
    late = submit(store)  # a normal job jumps ahead of the queued low ones
    assert [store.queue.queue_position(j) for j in (n2, late, l1, l3)] == [0, 1, 2, 3]


def test_lease_expiry_requeues_then_fails_after_max_attempts(store: SqlJobStore) -> None:
    job = submit(store)
    first = store.queue.claim("w1", [ECHO], 0.2)
    assert first is not None and first.attempts == 1
    store.queue.reap(max_attempts=2)
    assert fetch(store, job).status == IN_PROGRESS  # lease still valid
    time.sleep(0.3)
    store.queue.reap(max_attempts=2)
    requeued = fetch(store, job)
    assert (requeued.status, requeued.worker_id, requeued.attempts) == (IN_QUEUE, None, 1)
    assert [line.message for line in store.queue.logs(job.id)] == ["worker lost; requeued (attempt 1 of 2)"]
    second = store.queue.claim("w2", [ECHO], 0.2)
    assert second is not None and second.attempts == 2
    # The first worker is back from the dead: its lease is gone and so is its result.
    assert not store.queue.heartbeat(job.id, "w1", 30)
    assert not store.queue.complete(first, "w1", {"late": True})
    time.sleep(0.3)
    store.queue.reap(max_attempts=2)
    failed = fetch(store, job)
    assert (failed.status, failed.error_type, failed.error_status, failed.attempts) == (
        COMPLETED,
        "worker_crashed",
        503,
        2,
    )
    assert store.queue.claim("w3", [ECHO], 1) is None


def test_heartbeat_keeps_the_lease(store: SqlJobStore) -> None:
    job = submit(store)
    assert store.queue.claim("w1", [ECHO], 0.3) is not None
    for _ in range(8):
        time.sleep(0.1)
        assert store.queue.heartbeat(job.id, "w1", 0.3)
        store.queue.reap(max_attempts=3)
    assert not store.queue.heartbeat(job.id, "other", 0.3)
    held = fetch(store, job)
    assert (held.status, held.worker_id, held.attempts) == (IN_PROGRESS, "w1", 1)
    assert held.lease_until is not None and held.lease_until > time.time()


def test_release_returns_the_job_without_counting_the_attempt(store: SqlJobStore) -> None:
    job = submit(store)
    claimed = store.queue.claim("w1", [ECHO], 30)
    assert claimed is not None
    store.queue.release(claimed, "w1")
    back = fetch(store, job)
    assert (back.status, back.attempts, back.worker_id) == (IN_QUEUE, 0, None)


def test_cancel_queued_and_running(store: SqlJobStore) -> None:
    queued, running = submit(store), submit(store, priority=1)
    assert store.queue.cancel(queued.id, "someone-else") == "not_found"
    assert store.queue.cancel(queued.id, "k1") == "requested"
    done = fetch(store, queued)
    assert (done.status, done.error_type, done.error_status) == (COMPLETED, "request_cancelled", 400)
    assert store.queue.cancel(queued.id, "k1") == "completed"

    claimed = store.queue.claim("w1", [ECHO], 0.2)
    assert claimed is not None and claimed.id == running.id
    assert not store.queue.get(running.id).cancel_requested  # type: ignore[union-attr]
    assert store.queue.cancel(running.id, "k1") == "requested"
    assert store.queue.append_logs(running.id, [("step 1/4", "INFO")])  # the running job learns of it
    assert fetch(store, running).status == IN_PROGRESS  # the worker stops it at its next step
    time.sleep(0.3)  # ... or, if the worker died, the reaper ends it as cancelled, not requeued
    store.queue.reap(max_attempts=3)
    ended = fetch(store, running)
    assert (ended.status, ended.error_type) == (COMPLETED, "request_cancelled")


def test_start_deadline_ends_queued_jobs_with_request_timeout(store: SqlJobStore) -> None:
    late = submit(store, start_timeout=0.1)
    patient = submit(store, start_timeout=60)
    time.sleep(0.2)
    store.queue.reap(max_attempts=3)
    job = fetch(store, late)
    assert (job.status, job.error_type, job.error_status) == (COMPLETED, "request_timeout", 504)
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and claimed.id == patient.id


def test_idempotency_key(store: SqlJobStore) -> None:
    job = submit(store, idempotency_key="abc")
    again, created = store.queue.submit(
        endpoint_id=ECHO, owner_key_id="k1", input_json="{}", base_url="", idempotency_key="abc"
    )
    assert (again.id, created) == (job.id, False)
    other = submit(store, owner="k2", idempotency_key="abc")  # keys are scoped to their owner
    assert other.id != job.id
    with ThreadPoolExecutor(8) as pool:  # racing replays create one job
        results = list(
            pool.map(
                lambda _: store.queue.submit(
                    endpoint_id=ECHO, owner_key_id="k3", input_json="{}", base_url="", idempotency_key="race"
                ),
                range(16),
            )
        )
    assert len({j.id for j, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_queue_caps(store: SqlJobStore) -> None:
    submit(store, max_queue_per_key=2)
    submit(store, max_queue_per_key=2)
    with pytest.raises(QueueFull, match="this key"):
        submit(store, max_queue_per_key=2)
    submit(store, owner="k2", max_queue_per_key=2)
    with pytest.raises(QueueFull, match="queue is full"):
        submit(store, owner="k3", max_queue_total=3)
    drain(store)  # caps count queued jobs only
    submit(store, max_queue_per_key=2)


def test_queue_cap_holds_under_concurrent_submits(store_url: str) -> None:
    def try_submit(_: int) -> bool:
        try:
            submit(stores[threading.get_ident() % len(stores)], max_queue_total=5)
            return True
        except QueueFull:
            return False

    stores = [SqlJobStore(store_url) for _ in range(4)]  # like separate API nodes
    try:
        with ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(try_submit, range(40)))
        assert accepted == 5
        assert sum(d.count for d in stores[0].cluster.queue_depths()) == 5
    finally:
        for s in stores:
            s.close()


def test_logs_in_order_and_paged(store: SqlJobStore) -> None:
    job = submit(store)
    for i in range(5):
        store.queue.log(job.id, f"line {i}", "WARN" if i == 2 else "INFO")
    lines = store.queue.logs(job.id)
    assert [(line.message, line.level) for line in lines] == [
        ("line 0", "INFO"),
        ("line 1", "INFO"),
        ("line 2", "WARN"),
        ("line 3", "INFO"),
        ("line 4", "INFO"),
    ]
    assert [line.message for line in store.queue.logs(job.id, after_id=lines[2].id)] == ["line 3", "line 4"]
    assert store.queue.logs("nope") == []


def _finish_with_webhook(store: SqlJobStore) -> Job:
    job = submit(store, webhook_url="http://hook.example/x")
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and store.queue.complete(claimed, "w", {"ok": 1})
    return job


def test_outbox_claim_retry_and_dead(store: SqlJobStore) -> None:
    job = _finish_with_webhook(store)
    task = store.outbox.claim_webhook(lease_seconds=30)
    assert task is not None and (task.job.id, task.url, task.attempts) == (job.id, "http://hook.example/x", 1)
    assert task.job.status == COMPLETED
    assert store.outbox.claim_webhook(lease_seconds=30) is None  # leased to the first claimer
    store.outbox.webhook_done(job.id, delivered=False, error="HTTP 500", retry_at=time.time() - 1)
    retry = store.outbox.claim_webhook(lease_seconds=30)
    assert retry is not None and retry.attempts == 2
    store.outbox.webhook_done(job.id, delivered=False, error="HTTP 500", retry_at=None)
    state = store.outbox.webhook_state(job.id)
    assert state is not None and (state["state"], state["attempts"], state["last_error"]) == (
        "dead",
        2,
        "HTTP 500",
    )
    assert store.outbox.claim_webhook(lease_seconds=30) is None
    assert store.cluster.webhook_counts() == {"dead": 1}


def test_outbox_delivery_and_lease_expiry(store: SqlJobStore) -> None:
    job = _finish_with_webhook(store)
    assert store.outbox.claim_webhook(lease_seconds=0.1) is not None
    time.sleep(0.2)  # the node that claimed it died: another one takes it over
    again = store.outbox.claim_webhook(lease_seconds=30)
    assert again is not None and again.attempts == 2
    store.outbox.webhook_done(job.id, delivered=True, error=None, retry_at=None)
    assert store.cluster.webhook_counts() == {"delivered": 1}
    assert store.outbox.claim_webhook(lease_seconds=30) is None


def test_no_webhook_row_without_url(store: SqlJobStore) -> None:
    job = submit(store)
    assert drain(store) == [job.id]
    assert store.outbox.claim_webhook(lease_seconds=30) is None and store.outbox.webhook_state(job.id) is None


def test_concurrent_claims_never_double_claim(store_url: str) -> None:
    seed = SqlJobStore(store_url)
    jobs = [submit(seed) for _ in range(120)]
    claimed: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        s = SqlJobStore(store_url)  # one store per thread, like separate worker processes
        try:
            for _ in range(1000):
                job = s.queue.claim(f"w{n}", [ECHO], 30)
                if job is None:
                    return
                with lock:
                    claimed.append(job.id)
                assert s.queue.complete(job, f"w{n}", {"by": n})
        finally:
            s.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(claimed) == sorted(j.id for j in jobs)  # each exactly once
    assert all(fetch(seed, j).attempts == 1 for j in jobs)
    seed.close()


def _statements(
    store: SqlJobStore, action: Callable[[], object], engines: list[Engine] | None = None
) -> list[str]:
    """The SQL `action` runs in transactions on `engines` (by default every engine of the store, once each).
    SQLite: as the driver saw it (store/driver.py runs the hot statements past SQLAlchemy)."""
    seen: list[str] = []
    watched = list({id(e): e for e in engines or [store.db.engine, store.db.lazy_engine]}.values())
    traced: list[Any] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    def trace(dbapi_connection: Any, *_args: Any) -> None:  # checked out: before its BEGIN
        traced.append(dbapi_connection)
        dbapi_connection.set_trace_callback(seen.append)

    how = ("checkout", trace) if store.db.is_sqlite else ("before_cursor_execute", record)
    for engine in watched:
        event.listen(engine, *how)
    try:
        action()
    finally:
        for engine in watched:
            event.remove(engine, *how)
        for dbapi_connection in traced:
            dbapi_connection.set_trace_callback(None)
    return seen


def test_claim_sql_skips_locked_rows_on_postgresql(store: SqlJobStore) -> None:
    submit(store)
    sql = " ".join(_statements(store, lambda: store.queue.claim("w", [ECHO], 30)))
    if store.db.is_sqlite:  # SQLite has no row locks: BEGIN IMMEDIATE serializes writers instead
        assert "BEGIN IMMEDIATE" in sql and "FOR UPDATE" not in sql
    else:
        assert "FOR UPDATE SKIP LOCKED" in sql


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_claim_passes_over_a_locked_row_without_waiting(store: SqlJobStore) -> None:
    first, second = submit(store), submit(store)
    with store.db.engine.connect() as holder:  # another worker's open claim transaction
        holder.exec_driver_sql("SELECT seq FROM jobs WHERE id = %s FOR UPDATE", (first.id,))
        started = time.monotonic()
        got = store.queue.claim("w", [ECHO], 30)
        assert got is not None and got.id == second.id
        assert time.monotonic() - started < 2
        holder.rollback()
    third = store.queue.claim("w", [ECHO], 30)
    assert third is not None and third.id == first.id


def test_worker_registry(store: SqlJobStore) -> None:
    store.cluster.register_worker("w1", [ECHO, "test/image"], "cuda:1")
    store.cluster.register_worker("w2", [ECHO])
    [w1, _] = store.cluster.recent_workers(10)
    assert (w1.worker_id, w1.endpoints, w1.device, w1.job_id) == ("w1", [ECHO, "test/image"], "cuda:1", None)
    job = submit(store)
    assert store.queue.claim("w2", [ECHO], 30) is not None
    store.queue.heartbeat(job.id, "w2", 30)
    assert store.cluster.recent_workers(10)[1].job_id == job.id
    store.cluster.worker_seen("w2")  # idle again
    assert store.cluster.recent_workers(10)[1].job_id is None
    with store.db.engine.begin() as conn:  # w1 went silent a minute ago
        conn.execute(update(workers).where(workers.c.worker_id == "w1").values(last_seen=time.time() - 60))
    assert [w.worker_id for w in store.cluster.recent_workers(10)] == ["w2"]
    store.cluster.unregister_worker("w2")
    assert store.cluster.recent_workers(10) == []


def test_workers_report_the_model_preset_of_each_endpoint(store: SqlJobStore) -> None:
    store.cluster.register_worker("w1", ["fal-ai/pulid", ECHO], "cpu", {"fal-ai/pulid": "tiny"})
    store.cluster.register_worker("w2", [ECHO])
    assert [w.presets for w in store.cluster.recent_workers(10)] == [{"fal-ai/pulid": "tiny"}, {}]


# the columns each schema version added (store/migrate.py MIGRATIONS)
ADDED_COLUMNS = {
    2: [("workers", "presets")],
    3: [
        ("api_keys", "safety_mode"),
        ("api_keys", "safety_action"),
        ("jobs", "images_checked"),
        ("jobs", "images_flagged"),
    ],
    4: [
        ("jobs", name)
        for name in (
            "runner_hint",
            "no_retry",
            "store_io",
            "output_lifetime",
            "outputs_expire_at",
            "payload_expire_at",
            "retention",
            "prune_until",
        )
    ],
    5: [("jobs", "vt"), ("upload_grants", "uses_left")],
    6: [("jobs", "durable")],
}


def make_old(store: SqlJobStore, version: int) -> None:
    """Turn a fresh database into what a node of schema `version` left behind, and close the store."""
    assert max(ADDED_COLUMNS) == SCHEMA_VERSION
    with store.db.engine.begin() as conn:
        for added_in, columns in ADDED_COLUMNS.items():
            for table, column in columns if added_in > version else []:
                for index in metadata.tables[table].indexes:  # an older node had no index on it
                    if column in index.columns:
                        conn.execute(text(f"DROP INDEX {index.name}"))
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(
            update(server_values).where(server_values.c.name == "schema_version").values(value=str(version))
        )
    store.close()


def test_a_v1_database_is_migrated_to_record_presets(store: SqlJobStore, store_url: str) -> None:
    make_old(store, 1)
    upgraded = SqlJobStore(store_url)
    upgraded.cluster.register_worker("w1", ["fal-ai/pulid"], presets={"fal-ai/pulid": "official"})
    assert upgraded.cluster.recent_workers(10)[0].presets == {"fal-ai/pulid": "official"}
    with upgraded.db.engine.begin() as conn:
        version = conn.execute(select(server_values.c.value).where(server_values.c.name == "schema_version"))
        assert version.scalar() == str(SCHEMA_VERSION) == "6"
    upgraded.close()


def test_queue_depths_and_finished_cursor(store: SqlJobStore) -> None:
    a, b, c = submit(store), submit(store, priority=1), submit(store)
    submit(store, endpoint="test/image")
    running = store.queue.claim("w", [ECHO], 30)
    assert running is not None
    depths = {(d.status, d.endpoint_id, d.priority): d.count for d in store.cluster.queue_depths()}
    assert depths == {
        (IN_QUEUE, ECHO, 0): 1,
        (IN_QUEUE, ECHO, 1): 1,
        (IN_QUEUE, "test/image", 0): 1,
        (IN_PROGRESS, ECHO, 0): 1,
    }
    store.queue.complete(running, "w", {})
    store.queue.cancel(b.id, "k1")
    rest = store.queue.claim("w", [ECHO], 30)
    assert rest is not None
    store.queue.complete(rest, "w", None, Failure("internal_error", 500, "boom"))
    done = list(store.cluster.finished_since((0.0, 0), time.time(), limit=1))  # paged one row at a time
    assert [(f.seq, f.error_type) for f in done] == [
        (a.seq, None),
        (b.seq, "request_cancelled"),
        (c.seq, "internal_error"),
    ]
    assert done[1].started_at is None  # cancelled while queued: it never ran
    after_first = (done[0].finished_at, done[0].seq)
    assert [f.seq for f in store.cluster.finished_since(after_first, time.time())] == [b.seq, c.seq]
    assert list(store.cluster.finished_since((done[-1].finished_at, done[-1].seq), time.time())) == []


def test_schema_is_created_once_by_concurrent_starters(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SqlJobStore(store_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_schema_newer_than_the_code_is_refused(store: SqlJobStore, store_url: str) -> None:
    with store.db.engine.begin() as conn:
        conn.execute(
            update(server_values)
            .where(server_values.c.name == "schema_version")
            .values(value=str(SCHEMA_VERSION + 1))
        )
    with pytest.raises(SchemaTooNew, match="upgrade this node"):
        SqlJobStore(store_url)


def test_keys_and_server_values(store: SqlJobStore) -> None:
    key = store.keys.create_key("ci")
    key_id = store.keys.authenticate(key)
    assert key_id is not None and store.keys.authenticate(key + "x") is None
    assert store.keys.revoke_key(key_id) and store.keys.authenticate(key) is None
    made: list[int] = []
    values = {
        store.values.server_value("signing", lambda: str(made.append(1) or len(made))) for _ in range(3)
    }
    assert values == {"1"} and made == [1]


def test_key_content_policy(store: SqlJobStore) -> None:
    plain = store.keys.create_key("plain").partition(":")[0]
    strict = store.keys.create_key("strict", KeyPolicy("forced", "fail")).partition(":")[0]
    assert store.keys.key_policy(plain) == KeyPolicy()
    assert store.keys.key_policy(strict) == KeyPolicy("forced", "fail")
    assert store.keys.set_key_policy(plain, KeyPolicy(safety_action="blur"))
    assert store.keys.key_policy(plain) == KeyPolicy(None, "blur")
    assert not store.keys.set_key_policy("nope", KeyPolicy("off"))
    assert store.keys.key_policy("nope") == KeyPolicy()
    listed = {k["key_id"]: (k["safety_mode"], k["safety_action"]) for k in store.keys.list_keys()}
    assert listed == {plain: (None, "blur"), strict: ("forced", "fail")}


def test_safety_counts_reach_the_finished_cursor(store: SqlJobStore) -> None:
    a, b = submit(store), submit(store)
    for job, counts in ((a, (3, 1)), (b, (None, None))):
        running = store.queue.claim("w", [ECHO], 30)
        assert running is not None and running.id == job.id
        assert store.queue.complete(running, "w", {}, images_checked=counts[0], images_flagged=counts[1])
    done = list(store.cluster.finished_since((0.0, 0), time.time()))
    assert [(f.images_checked, f.images_flagged) for f in done] == [(3, 1), (None, None)]


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_database_gains_the_content_policy_columns(
    store: SqlJobStore, store_url: str, version: int
) -> None:
    """A database made by an earlier release keeps its keys and jobs, and gains the v3 columns."""
    key = store.keys.create_key("old")
    job = submit(store)
    make_old(store, version)
    upgraded = SqlJobStore(store_url)
    try:
        key_id = upgraded.keys.authenticate(key)
        assert key_id is not None and upgraded.keys.key_policy(key_id) == KeyPolicy()
        assert upgraded.keys.set_key_policy(key_id, KeyPolicy("off"))
        claimed = upgraded.queue.claim("w", [ECHO], 30)
        assert claimed is not None and claimed.id == job.id
        assert upgraded.queue.complete(claimed, "w", {}, images_checked=2, images_flagged=0)
        done = list(upgraded.cluster.finished_since((0.0, 0), time.time()))
        assert [(f.images_checked, f.images_flagged) for f in done] == [(2, 0)]
    finally:
        upgraded.close()


def test_acknowledged_writes_are_durable_unless_the_operator_opts_out(store_url: str) -> None:
    def setting(durable: bool, lazy: bool = False) -> str:
        s = SqlJobStore(store_url, durable=durable)
        try:
            with s.db.tx(lazy=lazy) as conn:  # lazy: what a claim, a heartbeat or a log line runs under
                if s.db.is_sqlite:
                    return {0: "off", 1: "normal", 2: "full"}[
                        conn.exec_driver_sql("PRAGMA synchronous").scalar()
                    ]
                return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
        finally:
            s.close()

    durable, relaxed = ("full", "normal") if store_url.startswith("sqlite") else ("on", "off")
    assert setting(True) == durable and setting(False) == relaxed
    assert setting(True, lazy=True) == relaxed and setting(False, lazy=True) == relaxed


def test_only_writes_nobody_is_told_about_skip_the_sync(store: SqlJobStore) -> None:
    """Submits and completions are acknowledged: durable. Claims, heartbeats and log lines are not."""
    durable = [store.db.engine]
    lazy = [store.db.lazy_engine] if store.db.is_sqlite else []
    first, second = submit(store), submit(store)
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None
    beat = _statements(store, lambda: store.queue.heartbeat(claimed.id, "w", 30), durable + lazy)
    logs = _statements(
        store, lambda: store.queue.append_logs(claimed.id, [("step 1/1", "INFO")]), durable + lazy
    )
    done = _statements(store, lambda: store.queue.complete(claimed, "w", {"ok": 1}), lazy)
    if store.db.is_sqlite:  # on the engine that never syncs, never on the other one
        assert beat and logs and not done
    else:
        assert all("synchronous_commit = off" in " ".join(sql) for sql in (beat, logs))
    assert submit(store).status == IN_QUEUE and fetch(store, first).output_json == '{"ok": 1}'
    assert fetch(store, second).status == IN_QUEUE


def test_finish_and_claim_records_a_batch_and_claims_the_next_in_one_commit(store: SqlJobStore) -> None:
    first, second = submit(store), submit(store)
    third, fourth = submit(store, endpoint="test/other"), submit(store)
    a, b = store.queue.claim("w", [ECHO], 30), store.queue.claim("w", [ECHO], 30)
    assert a is not None and b is not None and (a.id, b.id) == (first.id, second.id)
    batch = [Finished(a, {"ok": 1}, None, 0.5, [("step 1/1", "INFO")]), Finished(b, None, FAILED, 0.1)]
    result: list[tuple[list[bool], list[Job]]] = []
    sql = _statements(
        store,
        lambda: result.append(store.queue.finish_and_claim(batch, "w", [ECHO, "test/other"], 30, limit=5)),
    )
    assert sum(s.startswith("BEGIN") for s in sql) <= 1  # one transaction (PG: BEGIN is implicit)
    done, following = result[0]
    assert done == [True, True] and [j.id for j in following] == [third.id, fourth.id]  # claim order
    assert fetch(store, first).output_json == '{"ok": 1}' and fetch(store, first).inference_time == 0.5
    assert [line.message for line in store.queue.logs(first.id)] == ["step 1/1"]
    assert fetch(store, second).error_type == FAILED.error_type
    assert all(
        fetch(store, j).status == IN_PROGRESS and fetch(store, j).worker_id == "w" for j in (third, fourth)
    )
    # Nothing left to claim. A lost lease: not completed (another worker has it now), nothing claimed.
    assert store.queue.finish_and_claim([Finished(following[0], {"ok": 3})], "w", [ECHO], 30) == ([True], [])
    assert store.queue.finish_and_claim([Finished(following[0], {"ok": 4})], "w", [ECHO], 30) == ([False], [])
    assert fetch(store, third).output_json == '{"ok": 3}'


def test_submit_takes_the_callers_job_id(store: SqlJobStore) -> None:
    job = submit(store, job_id="0a1b2c3d-0000-4000-8000-00000000abcd")
    assert fetch(store, job).id == "0a1b2c3d-0000-4000-8000-00000000abcd"


def test_retry_later_requeues_then_fails_after_max_attempts(store: SqlJobStore) -> None:
    job = submit(store)
    full = Failure("storage_full", 507, "no space")
    first = store.queue.claim("w", [ECHO], 30)
    assert first is not None and not store.queue.retry_later(first, "other", full, max_attempts=2)
    assert store.queue.retry_later(first, "w", full, max_attempts=2)
    back = fetch(store, job)
    assert (back.status, back.attempts, back.worker_id) == (IN_QUEUE, 1, None)
    assert "requeued (attempt 1 of 2)" in store.queue.logs(job.id)[-1].message
    second = store.queue.claim("w", [ECHO], 30)
    assert second is not None and store.queue.retry_later(second, "w", full, max_attempts=2)
    done = fetch(store, job)
    assert (done.status, done.error_type, done.error_status) == (COMPLETED, "storage_full", 507)


def test_retry_later_fails_a_no_retry_job_at_once(store: SqlJobStore) -> None:
    job = submit(store, no_retry=True)
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and store.queue.retry_later(
        claimed, "w", Failure("storage_full", 507, "no space"), 3
    )
    done = fetch(store, job)
    assert (done.status, done.error_type, done.attempts) == (COMPLETED, "storage_full", 1)


def test_upload_grants_are_counted_and_die_with_their_key(store: SqlJobStore) -> None:
    key_id = store.keys.authenticate(key := store.keys.create_key())
    assert key_id is not None
    put_url = store.uploads.grant_upload(key_id, 60, "uploads/x/a.png", "image/png")
    assert store.uploads.use_upload_grant(put_url, file=False) is None  # a PUT URL is not a CDN token
    grant = store.uploads.use_upload_grant(put_url, file=True)
    assert grant is not None and (grant["owner_key_id"], grant["file_key"]) == (key_id, "uploads/x/a.png")
    assert (
        store.uploads.use_upload_grant(put_url, file=True) is None
    )  # single use: the file can never be replaced
    store.uploads.refund_upload_grant(put_url)  # ... unless that upload failed
    assert store.uploads.use_upload_grant(put_url, file=True) is not None
    token = store.uploads.grant_upload(key_id, 60, uses=3)
    assert [store.uploads.use_upload_grant(token, file=False) is not None for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    expired = store.uploads.grant_upload(key_id, -1)
    assert (
        store.uploads.use_upload_grant(expired, file=False) is None
        and store.uploads.use_upload_grant("nope", file=False) is None
    )
    live = store.uploads.grant_upload(key_id, 60, uses=5)
    assert store.keys.revoke_key(key_id) and store.keys.authenticate(key) is None
    assert store.uploads.use_upload_grant(live, file=False) is None


def test_webhook_claims_skip_busy_destinations(store: SqlJobStore) -> None:
    _finish_with_webhook(store)  # http://hook.example/x, delivering now
    other = submit(store, webhook_url="http://other.example/y?a=1")
    claimed = store.queue.claim("w", [ECHO], 30)
    assert claimed is not None and claimed.id == other.id and store.queue.complete(claimed, "w", {})
    task = store.outbox.claim_webhook(30, skip=["http://hook.example"])
    assert task is not None and task.job.id == other.id
    assert store.outbox.claim_webhook(30, skip=["http://hook.example"]) is None
    assert store.outbox.claim_webhook(30, skip=["http://a%b_c"]) is not None  # prefixes are not patterns


def test_a_version_4_database_gets_the_fair_queue_and_counted_grants(
    store: SqlJobStore, store_url: str
) -> None:
    a1, a2, b1 = submit(store, owner="a"), submit(store, owner="a"), submit(store, owner="b")
    key_id = store.keys.authenticate(store.keys.create_key())
    assert key_id is not None
    token = store.uploads.grant_upload(key_id, 60, uses=9)
    make_old(store, 4)
    migrated = SqlJobStore(store_url)
    try:
        assert migrated.values.server_value("schema_version", lambda: "?") == str(SCHEMA_VERSION)
        assert drain(migrated) == [a1.id, b1.id, a2.id]  # the old queue now takes turns across keys
        assert migrated.uploads.use_upload_grant(token, file=False) is not None  # one use left after it
        assert migrated.uploads.use_upload_grant(token, file=False) is None
        assert migrated.cluster.queue_depths() == []
    finally:
        migrated.close()
