"""PuLID-FLUX v0.9.1 on FLUX.1-dev (`fal-ai/flux-pulid`), weight-compatible with the official release.

Importing this package is cheap (no torch); `pulid_server.model.get_family("flux").load(...)` builds it.
"""

from pulid_server.model.flux.request import FluxRequest, FluxStats, MemoryOptions, Quantize

__all__ = ["FluxRequest", "FluxStats", "MemoryOptions", "Quantize"]
