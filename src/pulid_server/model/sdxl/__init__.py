"""PuLID v1 on SDXL-Lightning, weight-compatible with the official `pulid_v1.bin` release.

Importing this package is cheap (no torch); `pulid_server.model.get_family("sdxl").load(...)` builds it.
"""

from pulid_server.model.sdxl.request import GenerationRequest, Mode, PipelineStats

__all__ = ["GenerationRequest", "Mode", "PipelineStats"]
