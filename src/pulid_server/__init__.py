"""pulid-server: self-hosted PuLID image generation behind fal's queue API."""

from pulid_server.config import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__"]
