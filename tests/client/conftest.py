from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pulid_server.client import SyncClient
from tests.servers import Server


@pytest.fixture
def client(server: Server) -> Iterator[SyncClient]:
    with SyncClient(server.url, server.key) as c:
        yield c


@pytest.fixture(scope="session")
def face() -> Image.Image:
    """A real face photo (skimage's astronaut, 512x512 RGB)."""
    from skimage import data

    return Image.fromarray(np.asarray(data.astronaut()))


@pytest.fixture
def face_png(face: Image.Image, tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    face.save(path)
    return path


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that lets each key have one queued request (the next submit gets a real 429)."""
    srv = Server(
        tmp_path_factory.mktemp("small-queue"),
        env={"PULID_MAX_QUEUE_PER_KEY": "1", "PULID_WORKER_ENDPOINTS": "test/echo"},
    ).start()
    yield srv
    srv.stop()
