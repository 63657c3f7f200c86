"""Everything a worker process is told when it starts, in one object.

`pulid worker` builds it in-process from flags and `PULID_*` variables. A supervised worker (`pulid
serve`) gets it as JSON on stdin from its parent, so that its settings are exactly the parent's and
nothing is written into its command line or environment (a database password given as a flag stays
out of both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pulid_server.config import Settings


@dataclass(frozen=True)
class WorkerConfig:
    """settings: the node's configuration (`worker_endpoints` says which endpoints to load).
    wake_fd / done_fd: the doorbell pipes from a supervising API process, else None (poll the store).
    parent_pid: that API process, which the worker must not outlive (worker/doorbell.py); None if unsupervised."""

    settings: Settings
    wake_fd: int | None = None
    done_fd: int | None = None
    parent_pid: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "settings": self.settings.model_dump(mode="json"),
                "wake_fd": self.wake_fd,
                "done_fd": self.done_fd,
                "parent_pid": self.parent_pid,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        data = json.loads(text)
        # model_validate, not Settings(...): the values given are the whole configuration, env vars aside.
        return cls(
            Settings.model_validate(data["settings"]),
            data["wake_fd"],
            data["done_fd"],
            data.get("parent_pid"),
        )
