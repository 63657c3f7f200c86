"""The API's side of the wake-up pipes to one supervised worker process (embedded mode).

`ring` writes a byte to the worker's `wake` pipe when a job is queued; a thread reads the finished job
ids (one per line) that the worker writes to its `done` pipe. The worker's side is worker/doorbell.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class ParentDoorbell:
    """Ring one worker's wake pipe; read its done pipe in a thread, calling `on_done(job_id)`."""

    def __init__(self, on_done: Callable[[str], None]):
        self.wake_read, self.wake_write = os.pipe()
        self.done_read, self.done_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        os.set_blocking(self.wake_read, False)
        self._on_done = on_done
        threading.Thread(target=self._read_done, daemon=True, name="doorbell").start()

    def child_fds(self) -> tuple[int, int]:
        """(wake_fd, done_fd): the ends the worker process inherits."""
        return self.wake_read, self.done_write

    def spawned(self) -> None:
        """Close the child's ends here, so that the done reader sees EOF when the worker dies."""
        os.close(self.wake_read)
        os.close(self.done_write)

    def ring(self) -> None:
        try:
            os.write(self.wake_write, b"!")
        except OSError:  # full pipe (the worker is awake anyway) or a worker that just died
            pass

    def _read_done(self) -> None:
        with os.fdopen(self.done_read, "rb") as stream:
            for line in stream:
                self._on_done(line.decode().strip())

    def close(self) -> None:
        try:
            os.close(self.wake_write)
        except OSError:
            pass
