"""pulid-server: self-hosted PuLID image generation behind fal's queue API.

Importing the package costs nothing: `Settings` (pydantic-settings) loads on first use, so that
`pulid_server.client` works where only httpx is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulid_server.config import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from pulid_server.config import Settings

        return Settings
    raise AttributeError(f"module 'pulid_server' has no attribute {name!r}")
