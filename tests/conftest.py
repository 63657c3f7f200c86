from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import TEST_ENDPOINTS, Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server (API + 1 worker, tiny model, SQLite) shared by the read-mostly tests."""
    srv = Server(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of its own, for tests that restart or kill things. Not started. Its workers serve the
    test endpoints only (one process, no model to load) unless the test says otherwise."""
    srv = Server(tmp_path / "data", worker_endpoints=TEST_ENDPOINTS)
    yield srv
    srv.stop()
