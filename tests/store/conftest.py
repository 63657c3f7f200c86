from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pulid_server.store import SqlJobStore
from tests.pg import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server for this test session (temp folder, free loopback port)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pulid.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database()


@pytest.fixture
def store(store_url: str) -> Iterator[SqlJobStore]:
    s = SqlJobStore(store_url)
    yield s
    s.close()
