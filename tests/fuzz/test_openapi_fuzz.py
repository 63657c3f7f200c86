"""Schema fuzzing of /openapi.json (schemathesis): whatever the input, the server never answers 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.servers import Server

EXAMPLES_PER_OPERATION = 30


def test_no_server_errors_on_any_operation(tmp_path_factory: pytest.TempPathFactory) -> None:
    # API only: fuzzed jobs stay queued instead of spending CPU; big caps so 429s do not hide bugs.
    srv = Server(
        tmp_path_factory.mktemp("fuzz"), workers=0, env={"PULID_MAX_QUEUE_PER_KEY": "100000"}
    ).start()
    try:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        # /run/* waits for a worker (there is none here); its input validation is the submit route's.
        operations = [
            op for op in (r.ok() for r in schema.get_all_operations()) if not op.path.startswith("/run/")
        ]
        assert len(operations) >= 10
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time in CI
            )
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=srv.url, headers=srv.headers, timeout=30)
                case.validate_response(response, checks=[not_a_server_error])

            fuzz()
    finally:
        srv.stop()
