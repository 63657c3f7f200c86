"""Fair scheduling across keys: claims take turns between keys, and queue positions count that same order
(SQLite and PostgreSQL, see conftest.py)."""

from __future__ import annotations

from pulid_server.store import IN_QUEUE, JobProgress, SqlJobStore
from tests.store.test_store import ECHO, drain, submit


def owners_in_claim_order(store: SqlJobStore, ids: dict[str, str]) -> list[str]:
    return [ids[job_id] for job_id in drain(store)]


def test_a_key_with_a_backlog_takes_turns_with_the_others(store: SqlJobStore) -> None:
    ids = {submit(store, owner="flood").id: "flood" for _ in range(6)}
    ids |= {submit(store, owner="b").id: "b" for _ in range(2)}
    ids[submit(store, owner="c").id] = "c"
    assert owners_in_claim_order(store, ids) == [
        "flood",
        "b",
        "c",
        "flood",
        "b",
        "flood",
        "flood",
        "flood",
        "flood",
    ]


def test_a_newcomer_waits_at_most_one_turn_of_each_key(store: SqlJobStore) -> None:
    ids = {submit(store, owner="flood").id: "flood" for _ in range(5)}
    first = store.queue.claim("w", [ECHO], 30)  # flood's first job runs: the queue's turn is now its turn
    assert first is not None and store.queue.complete(first, "w", {})
    late = submit(store, owner="late")
    assert store.queue.queue_position(late) == 1  # behind flood's job of the current turn only
    ids[late.id] = "late"
    assert owners_in_claim_order(store, ids) == ["flood", "late", "flood", "flood", "flood"]


def test_each_key_is_fifo_and_priorities_still_come_first(store: SqlJobStore) -> None:
    a = [submit(store, owner="a", priority=1), submit(store, owner="a"), submit(store, owner="a")]
    b = [submit(store, owner="b", priority=1), submit(store, owner="b")]
    assert drain(store) == [a[1].id, b[1].id, a[2].id, a[0].id, b[0].id]


def test_positions_match_the_claim_order_one_by_one_and_in_bulk(store: SqlJobStore) -> None:
    jobs = [submit(store, owner=f"k{i % 3}", priority=i % 4 // 3) for i in range(14)]
    jobs += [submit(store, owner="k9"), submit(store, owner="k1", endpoint="test/image")]
    echo = [j for j in jobs if j.endpoint_id == ECHO]
    by_position = sorted(echo, key=store.queue.queue_position)
    bulk = {p.state.id: p for p in store.queue.progress([j.id for j in jobs])}
    assert [bulk[j.id].position for j in by_position] == list(range(len(echo)))
    assert bulk[jobs[-1].id].position == 0  # positions count within one endpoint
    assert drain(store) == [j.id for j in by_position]


def test_progress_reads_state_position_and_newest_log_line(store: SqlJobStore) -> None:
    queued, running = submit(store, owner="a"), submit(store, owner="b")
    assert store.queue.claim("w", [ECHO], 30) is not None  # takes `queued`: it came first
    store.queue.log(queued.id, "one")
    store.queue.log(queued.id, "two")
    got = {p.state.id: p for p in store.queue.progress([queued.id, running.id, "missing"])}
    assert set(got) == {queued.id, running.id}
    assert (got[running.id].state.status, got[running.id].position, got[running.id].last_log_id) == (
        IN_QUEUE,
        0,
        0,
    )
    assert got[queued.id].position is None
    assert got[queued.id].last_log_id == store.queue.logs(queued.id)[-1].id
    one = store.queue.progress_of(queued.id)  # the read of a job a worker announced as finished
    assert one == got[queued.id] and store.queue.progress_of("missing") is None
    assert store.queue.progress_of(running.id) == JobProgress(got[running.id].state, None, 0)
    without = store.queue.progress([running.id], positions=False)
    assert [p.position for p in without] == [None]
    many = [submit(store, owner=f"k{i}").id for i in range(1200)]  # more ids than one IN (...) list holds
    positions = sorted(p.position or 0 for p in store.queue.progress(many))
    assert positions == list(range(1, 1201))  # `running` is still ahead of all of them
