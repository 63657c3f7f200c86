from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer, S3Server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server for this test session (temp folder, free loopback port)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3-compatible server on 127.0.0.1."""
    server = S3Server().start()
    yield server
    server.stop()
