"""Which model preset each endpoint's workers loaded, and the notice for those on random weights (tiny).

Workers report their presets in the worker registry (`auto` may have fallen back to tiny), so every API node
can tell: `/health/ready` lists them (the playground reads it for its banner) and `/openapi.json` puts the
notice in the endpoint's description.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pulid_server import endpoints
from pulid_server.endpoints import RANDOM_WEIGHT_PRESETS, random_weights_notice
from pulid_server.store import WorkerInfo


def loaded_models(workers: list[WorkerInfo]) -> dict[str, list[str]]:
    """Endpoint id -> the model presets its live workers loaded (endpoints without a model are left out)."""
    models: dict[str, set[str]] = {}
    for worker in workers:
        for endpoint_id, preset in worker.presets.items():
            models.setdefault(endpoint_id, set()).add(preset)
    return {e: sorted(p) for e, p in sorted(models.items())}


def random_weight_notices(workers: list[WorkerInfo]) -> dict[str, str]:
    """Endpoint id -> what to tell users, for endpoints some live worker runs on random weights."""
    notices = {}
    for endpoint_id, presets in loaded_models(workers).items():
        if RANDOM_WEIGHT_PRESETS.intersection(presets):
            endpoint = endpoints.get(endpoint_id)  # a plugin only workers load is unknown here
            notices[endpoint_id] = random_weights_notice(endpoint_id, endpoint.family if endpoint else "")
    return notices


def openapi_with_notices(
    base: Callable[[], dict[str, Any]], notices: Callable[[], dict[str, str]]
) -> Callable[[], dict[str, Any]]:
    """An `app.openapi` that prefixes the submit and run operations of each endpoint on random weights with
    its notice. `base` is FastAPI's (cached) schema builder; `notices` reads the worker registry."""

    def build() -> dict[str, Any]:
        schema = base()
        found = notices()
        if not found:
            return schema
        schema = copy.deepcopy(schema)
        for endpoint_id, notice in found.items():
            for path in (f"/queue/{endpoint_id}", f"/run/{endpoint_id}"):
                operation = schema.get("paths", {}).get(path, {}).get("post")
                if operation is not None:
                    described = operation.get("description")
                    operation["description"] = f"**{notice}**" + (f"\n\n{described}" if described else "")
        return schema

    return build
