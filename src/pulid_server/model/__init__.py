"""PuLID model families, weight-compatible with the official releases (one folder a family, as diffusers).

Importing this package is cheap (no torch, no diffusers); `get_family(name).load(...)` pulls them in.
"""

from __future__ import annotations

from pulid_server.model.errors import NoFaceError, WeightsMismatchError, WeightsMissingError
from pulid_server.model.families import FAMILIES, Family, Preset, get_family, loaded_families

__all__ = [
    "FAMILIES",
    "Family",
    "NoFaceError",
    "Preset",
    "WeightsMismatchError",
    "WeightsMissingError",
    "get_family",
    "loaded_families",
]
