"""Create the schema at start-up, safely when many nodes start at once, and guard its version.

Why a version row (kept in `server_values`) at all: in a scale-out deployment, nodes are upgraded one by
one against one shared database. The row lets a node refuse a schema newer than its code instead of
writing rows the newer code misreads, and gives future column changes a single place to run (MIGRATIONS).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, Table, insert, select, text, update

from pulid_server.store.schema import SCHEMA_VERSION, api_keys, jobs, metadata, server_values

VERSION_KEY = "schema_version"
# Any constant: the advisory lock that serializes schema creation between PostgreSQL nodes.
_PG_SCHEMA_LOCK = 0x70756C6964  # "pulid"


def add_columns(conn: Connection, table: Table, *names: str) -> None:
    """ALTER TABLE ... ADD COLUMN for columns that schema.py now declares (nullable, no default)."""
    for name in names:
        column_type = table.c[name].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {column_type}"))


def _v2_worker_presets(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE workers ADD COLUMN presets TEXT NOT NULL DEFAULT '{}'"))


def _v3_content_policy(conn: Connection) -> None:
    add_columns(conn, api_keys, "safety_mode", "safety_action")
    add_columns(conn, jobs, "images_checked", "images_flagged")


def _v4_platform_headers_and_retention(conn: Connection) -> None:
    """fal's platform headers and data retention (jobs); existing rows keep their data on the node's clocks."""
    nullable = ("runner_hint", "output_lifetime", "outputs_expire_at", "payload_expire_at", "prune_until")
    add_columns(conn, jobs, *nullable)
    for ddl in ("no_retry BOOLEAN NOT NULL DEFAULT false", "store_io BOOLEAN NOT NULL DEFAULT true"):
        conn.execute(text(f"ALTER TABLE jobs ADD COLUMN {ddl}"))
    conn.execute(text("ALTER TABLE jobs ADD COLUMN retention SMALLINT NOT NULL DEFAULT 0"))


def _v5_fair_queue_and_counted_grants(conn: Connection) -> None:
    """jobs.vt (fair queuing across keys) and upload_grants.uses_left (single-use PUT URLs, bounded tokens)."""
    conn.execute(text("ALTER TABLE jobs ADD COLUMN vt BIGINT NOT NULL DEFAULT 0"))
    # Queued jobs keep their order within each key and take turns across keys: vt = rank within the key.
    conn.execute(
        text(
            "UPDATE jobs SET vt = (SELECT count(*) FROM jobs AS ahead WHERE ahead.status = 'IN_QUEUE'"
            " AND ahead.owner_key_id = jobs.owner_key_id AND ahead.priority = jobs.priority"
            " AND ahead.seq < jobs.seq) WHERE status = 'IN_QUEUE'"
        )
    )
    conn.execute(text("DROP INDEX IF EXISTS ix_jobs_queue"))  # replaced by ix_jobs_fair
    # Grants issued before the upgrade (at most an hour old) allow one more upload each.
    conn.execute(text("ALTER TABLE upload_grants ADD COLUMN uses_left INTEGER NOT NULL DEFAULT 1"))


def _v6_job_durability(conn: Connection) -> None:
    """jobs.durable: existing jobs keep waiting for the disk."""
    conn.execute(text("ALTER TABLE jobs ADD COLUMN durable BOOLEAN NOT NULL DEFAULT true"))


# version -> the step that brings a database from version - 1 to it.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _v2_worker_presets,
    3: _v3_content_policy,
    4: _v4_platform_headers_and_retention,
    5: _v5_fair_queue_and_counted_grants,
    6: _v6_job_durability,
}


class SchemaTooNew(RuntimeError):
    pass


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and indexes, then check or advance the schema version. Idempotent."""
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (see database._engine) already serializes this
        if conn.dialect.name == "postgresql":
            # Without it, nodes starting together race on CREATE TABLE and one dies on a duplicate.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
        metadata.create_all(conn)  # new tables only: an existing table is left as it is
        _check_version(conn)  # migrations add columns before the indexes below may name them
        for table in metadata.sorted_tables:  # create_all skips indexes added to tables that exist
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _check_version(conn: Connection) -> None:
    found = conn.execute(select(server_values.c.value).where(server_values.c.name == VERSION_KEY)).scalar()
    if found is None:
        conn.execute(insert(server_values).values(name=VERSION_KEY, value=str(SCHEMA_VERSION)))
        return
    version = int(found)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {version}, newer than this pulid-server's {SCHEMA_VERSION}: "
            "upgrade this node to the version the others run"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[step](conn)
    if version < SCHEMA_VERSION:
        conn.execute(
            update(server_values).where(server_values.c.name == VERSION_KEY).values(value=str(SCHEMA_VERSION))
        )
