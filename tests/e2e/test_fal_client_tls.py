"""Recipe A: the unmodified fal-client configured by environment variables only (FAL_RUN_HOST,
FAL_QUEUE_RUN_HOST with path prefixes, SSL_CERT_FILE for our self-signed cert) against `pulid serve --tls-*`.
The client runs in its own process because it reads those variables at import time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import TlsServer, assert_flux_output, assert_pulid_output

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).with_name("fal_client_env_recipe.py")


@pytest.fixture(scope="module")
def returned(fal_server: TlsServer, face_png: Path) -> dict[str, Any]:
    """What fal-client returned for each call of fal_client_env_recipe.py."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env |= {
        "FAL_KEY": fal_server.key,
        "FAL_RUN_HOST": f"{fal_server.tls_host}/run",
        "FAL_QUEUE_RUN_HOST": f"{fal_server.tls_host}/queue",
        "SSL_CERT_FILE": str(fal_server.cert),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(face_png)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_subscribe_reports_queue_updates_with_logs(returned: dict[str, Any]) -> None:
    sub = returned["subscribe"]
    assert sub["output"]["value"] == "subscribed"
    updates = sub["updates"]
    assert updates[-1]["type"] == "Completed" and updates[-1]["error"] is None
    assert updates[-1]["logs"][-3:] == ["step 1/3", "step 2/3", "step 3/3"]
    assert {u["type"] for u in updates[:-1]} <= {"Queued", "InProgress"}
    assert any(u["type"] == "InProgress" and u["logs"] is not None for u in updates)


def test_subscribe_pulid_over_https_returns_png_images(
    returned: dict[str, Any], fal_server: TlsServer
) -> None:
    output = returned["subscribe_pulid"]["output"]
    assert all(image["url"].startswith(f"https://{fal_server.tls_host}/files/") for image in output["images"])
    assert_pulid_output(output, seed=1234, verify=str(fal_server.cert))


def test_subscribe_flux_pulid_over_https(returned: dict[str, Any], fal_server: TlsServer) -> None:
    output = returned["subscribe_flux"]["output"]
    assert output["images"][0]["url"].startswith(f"https://{fal_server.tls_host}/files/")
    assert_flux_output(output, seed=4321, verify=str(fal_server.cert))


def test_submit_status_result_over_https(returned: dict[str, Any], fal_server: TlsServer) -> None:
    sub = returned["submit"]
    prefix = f"https://{fal_server.tls_host}/queue/test/echo/requests/{sub['request_id']}"
    assert sub["urls"] == [prefix + "/status", prefix, prefix + "/cancel"]
    assert sub["first_status"]["type"] in ("Queued", "InProgress", "Completed")
    assert sub["output"] == sub["result_by_id"]
    assert sub["output"]["value"] == "queued"
    assert sub["status_by_id"]["type"] == "Completed"
    assert sub["status_by_id"]["logs"] == ["step 1/2", "step 2/2"]


def test_cancel_ends_the_request_with_an_error(returned: dict[str, Any]) -> None:
    cancel = returned["cancel"]
    assert cancel["final"]["type"] == "Completed"
    assert (cancel["final"]["error"], cancel["final"]["error_type"]) == (
        "Request was cancelled",
        "request_cancelled",
    )
    assert cancel["final"]["logs"][-1] == "cancelled"
    assert len(cancel["final"]["logs"]) < 600  # it stopped long before its last step
    assert cancel["result_error"] == {
        "status_code": 400,
        "message": "Request was cancelled",
        "error_type": "request_cancelled",
    }
    assert cancel["second_cancel"]["status_code"] == 400
    assert "ALREADY_COMPLETED" in cancel["second_cancel"]["message"]


def test_run_over_https(returned: dict[str, Any]) -> None:
    assert returned["run"]["value"] == "ran"
