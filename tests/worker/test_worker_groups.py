"""Which endpoints each supervised worker process serves: by default one process per model family, so
SDXL and FLUX never share one unless the operator groups them (`--worker-groups`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel, ValidationError

from pulid_server.api.services.worker_groups import WorkerGroupError, plan_worker_groups
from pulid_server.config import Settings
from pulid_server.endpoints import Endpoint
from tests.servers import REPO

REGISTERED = [
    Endpoint(id, BaseModel, BaseModel, lambda settings: None, family=family)
    for id, family in [
        ("fal-ai/pulid", "sdxl"),
        ("test/echo", ""),
        ("fal-ai/flux-pulid", "flux"),
        ("test/fail", ""),
    ]
]


def plan(**settings: object) -> list[list[str]]:
    return plan_worker_groups(Settings(**settings), REGISTERED)  # type: ignore[arg-type]


def test_by_default_one_group_per_model_family() -> None:
    assert plan() == [["fal-ai/pulid"], ["test/echo", "test/fail"], ["fal-ai/flux-pulid"]]
    assert plan(worker_endpoints=["fal-ai/flux-pulid", "test/echo"]) == [["fal-ai/flux-pulid"], ["test/echo"]]


def test_one_group_or_explicit_groups_when_asked() -> None:
    assert plan(worker_groups="one", worker_endpoints=["fal-ai/pulid", "fal-ai/flux-pulid"]) == [
        ["fal-ai/pulid", "fal-ai/flux-pulid"]
    ]
    assert plan(worker_groups=" fal-ai/pulid , fal-ai/flux-pulid ; test/echo") == [
        ["fal-ai/pulid", "fal-ai/flux-pulid"],
        ["test/echo"],
    ]


def test_unknown_endpoints_and_bad_syntax_are_refused_by_name() -> None:
    with pytest.raises(WorkerGroupError, match="unknown endpoint.*no/such.*registered: fal-ai/pulid"):
        plan(worker_groups="fal-ai/pulid;no/such")
    with pytest.raises(WorkerGroupError, match="PULID_WORKER_ENDPOINTS.*no/such"):
        plan(worker_endpoints=["no/such"])
    with pytest.raises(WorkerGroupError, match="families"):  # a typo of `family` is no endpoint either
        plan(worker_groups="families")
    for bad in ("fal-ai/pulid;;test/echo", ";", ","):
        with pytest.raises(ValidationError, match="worker_groups"):
            Settings(worker_groups=bad)
    assert Settings(worker_groups=" ").worker_groups == "family"


def test_serve_refuses_an_unknown_endpoint_before_it_starts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pulid_server", "serve", "--port", "1", "--worker-groups", "fal-ai/pulid;no/such"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("error: --worker-groups (PULID_WORKER_GROUPS) names")
