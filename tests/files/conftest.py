from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import LocalServer, start_server


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    state, httpd = start_server()
    yield state
    httpd.shutdown()
    httpd.server_close()
