"""Request states as fal-client models them: Queued -> InProgress -> Completed (also for failures)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

STEP_LINE = re.compile(r"^step (\d+)/(\d+)$")


class Status:
    """Base class of the three states."""


@dataclass
class Queued(Status):
    position: int


@dataclass
class InProgress(Status):
    logs: list[dict[str, Any]] | None


@dataclass
class Completed(Status):
    logs: list[dict[str, Any]] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None


def parse_status(data: dict[str, Any]) -> Status:
    status = data.get("status")
    if status == "IN_QUEUE":
        return Queued(position=int(data.get("queue_position") or 0))
    if status == "IN_PROGRESS":
        return InProgress(logs=data.get("logs"))
    if status == "COMPLETED":
        return Completed(
            logs=data.get("logs"),
            metrics=data.get("metrics") or {},
            error=data.get("error"),
            error_type=data.get("error_type"),
        )
    raise ValueError(f"Unknown status: {status!r}")


def parse_step(message: str) -> tuple[int, int] | None:
    """`step 3/20` -> (3, 20): the progress line every endpoint logs per step."""
    match = STEP_LINE.match(message.strip())
    return (int(match[1]), int(match[2])) if match else None
