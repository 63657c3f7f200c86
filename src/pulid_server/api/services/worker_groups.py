"""Which endpoints each supervised worker process serves (`pulid serve --worker-groups`, `--workers`).

By default one group per model family: a worker loads only the family it serves, so SDXL and FLUX never
share a process (nor its GPU context and memory) unless the operator asks for it (`one`, or explicit
groups). Endpoints without a model family (plugins that load nothing heavy) share one more group.
"""

from __future__ import annotations

from pulid_server.config import Settings
from pulid_server.endpoints import Endpoint


class WorkerGroupError(ValueError):
    """The grouping names an endpoint that is not registered; the message says which, and what is."""


def plan_worker_groups(settings: Settings, registered: list[Endpoint]) -> list[list[str]]:
    """The endpoint ids of each group, in registration order; `--workers` processes serve each group."""
    known = {e.id: e for e in registered}
    groups = settings.explicit_worker_groups()
    if groups is None:
        wanted = settings.worker_endpoints or list(known)
        _check_known(wanted, known, "worker endpoints (PULID_WORKER_ENDPOINTS)")
        if settings.worker_groups == "one":
            return [list(wanted)]
        by_family: dict[str, list[str]] = {}
        for endpoint_id in wanted:
            by_family.setdefault(known[endpoint_id].family, []).append(endpoint_id)
        return list(by_family.values())
    _check_known([e for group in groups for e in group], known, "--worker-groups (PULID_WORKER_GROUPS)")
    return groups


def _check_known(ids: list[str], known: dict[str, Endpoint], where: str) -> None:
    unknown = [e for e in ids if e not in known]
    if unknown:
        raise WorkerGroupError(
            f"{where} names unknown endpoint(s) {', '.join(unknown)}; registered: {', '.join(known)}"
        )
