"""What every family's `generate` shares: its callbacks and the counters of the work it did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

StepCallback = Callable[[int, int], None]  # (step, total): logs progress, may raise to cancel
LogCallback = Callable[[str], None]


def no_step(step: int, total: int) -> None:
    return None


def no_log(message: str) -> None:
    return None


@dataclass
class PipelineStats:
    """Counters that show what work generate() did (tests and logs read them; never timing)."""

    face_analyses: int = 0
    id_encodes: int = 0
    id_cache_hits: int = 0
    text_encodes: int = 0
    generations: int = 0
    denoise_steps: int = 0
    extra: dict[str, int] = field(default_factory=dict)
