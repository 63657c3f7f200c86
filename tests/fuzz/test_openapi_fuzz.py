"""Schema fuzzing of /openapi.json (schemathesis): whatever the input, the server never answers 5xx, on every
operation the document declares (the queue's request routes and the sync /run routes included)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.servers import Server

EXAMPLES_PER_OPERATION = 30
RUN_EXAMPLES = 5  # each valid /run case waits for its start deadline (no worker here): keep them few
QUEUE_ROUTES = {
    "/queue/{app}/requests/{request_id}",
    "/queue/{app}/requests/{request_id}/status",
    "/queue/{app}/requests/{request_id}/status/stream",
    "/queue/{app}/requests/{request_id}/cancel",
}


def fuzz_operation(operation: Any, srv: Server) -> None:
    sync_run = operation.path.startswith("/run/")
    # /run waits for the result; with no worker, a start deadline ends each valid case (504).
    headers = {**srv.headers, **({"X-Fal-Request-Timeout": "0.2"} if sync_run else {})}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=RUN_EXAMPLES if sync_run else EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time in CI
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=srv.url, headers=headers, timeout=30)
        if sync_run and response.status_code == 504:  # fal's answer to a passed start deadline
            assert response.json()["error_type"] == "request_timeout"
            return
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()


def test_no_server_errors_on_any_operation(tmp_path_factory: pytest.TempPathFactory) -> None:
    # API only: fuzzed jobs stay queued instead of spending CPU; big caps so 429s do not hide bugs.
    srv = Server(
        tmp_path_factory.mktemp("fuzz"), workers=0, env={"PULID_MAX_QUEUE_PER_KEY": "100000"}
    ).start()
    try:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # raises on an unusable one
        assert QUEUE_ROUTES <= {op.path for op in operations} and len(operations) >= 20
        for operation in operations:
            fuzz_operation(operation, srv)
    finally:
        srv.stop()
