"""Registry of runnable endpoints: endpoint id -> (Input, Output, runner factory)."""

from __future__ import annotations

import importlib

from pulid_server.endpoints.base import (
    RANDOM_WEIGHT_PRESETS,
    Endpoint,
    JobCancelled,
    JobContext,
    Loc,
    Runner,
    UserInputError,
    loaded_preset,
    random_weights_notice,
)

_REGISTRY: dict[str, Endpoint] = {}
BUILTINS = ("pulid_server.endpoints.pulid", "pulid_server.endpoints.flux_pulid")


def register(endpoint: Endpoint) -> Endpoint:
    _REGISTRY[endpoint.id] = endpoint
    return endpoint


def get(endpoint_id: str) -> Endpoint | None:
    return _REGISTRY.get(endpoint_id)


def all_endpoints() -> list[Endpoint]:
    return list(_REGISTRY.values())


def load_builtin_and_extra(extra_modules: list[str]) -> None:
    """Register the builtin endpoints (fal-ai/pulid, fal-ai/flux-pulid) and every module named in
    `Settings.extra_endpoints` (plugins). Importing an endpoint loads no model: its runner does that."""
    for builtin in BUILTINS:
        importlib.import_module(builtin)
    for name in extra_modules:
        importlib.import_module(name)


__all__ = [
    "RANDOM_WEIGHT_PRESETS",
    "Endpoint",
    "JobCancelled",
    "JobContext",
    "Loc",
    "Runner",
    "UserInputError",
    "all_endpoints",
    "get",
    "load_builtin_and_extra",
    "loaded_preset",
    "random_weights_notice",
    "register",
]
