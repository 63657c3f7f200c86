"""PuLID v1 (SDXL-Lightning), weight-compatible with the official release.

Importing this package is cheap (no torch, no diffusers); `load_pipeline` pulls them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulid_server.model.request import (
    GenerationRequest,
    NoFaceError,
    PipelineStats,
    WeightsMismatchError,
    WeightsMissingError,
)

if TYPE_CHECKING:
    from pulid_server.config import Settings
    from pulid_server.model.pipeline import PulidPipeline

__all__ = [
    "GenerationRequest",
    "NoFaceError",
    "PipelineStats",
    "WeightsMismatchError",
    "WeightsMissingError",
    "load_pipeline",
]


def load_pipeline(settings: Settings) -> PulidPipeline:
    """Build the pipeline named by `settings.model` on `settings.device`, once; keep it warm."""
    from pulid_server.model.presets import load_pipeline as _load

    return _load(settings)
