"""The unmodified @fal-ai/client (npm, pinned in js/package-lock.json) against pulid-server, reached two ways:
`proxyUrl: {url: <server>/api/fal/proxy, when: "always"}` and a custom `fetch` that rewrites fal's hosts.
Each case runs js/cases.mjs in node and asserts on the JSON it prints (what the client returned)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import (
    FLUX,
    PULID,
    JsRunner,
    TlsServer,
    assert_flux_output,
    assert_pulid_output,
    download,
    faceless_data_uri,
    flux_input,
    pulid_input,
)
from tests.fixtures import safety

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("route", ["proxy", "fetch"])]
ECHO = "test/echo"
STEPS = ["step 1/3", "step 2/3", "step 3/3"]


def assert_routed(out: dict[str, Any], route: str, server: TlsServer) -> None:
    """Every API call reached our server: through the proxy endpoint, or at a rewritten URL."""
    # upload PUTs go to the upload_url we returned, unproxied and unrewritten
    api_calls = [r for r in out["requests"] if "/files/upload/" not in r]
    assert api_calls
    for line in api_calls:
        _, url, *target = line.split(" ", 3)
        assert url.startswith(server.url)
        if route == "proxy":
            assert url == f"{server.url}/api/fal/proxy"
            assert target[-1].startswith(
                ("https://queue.fal.run/", "https://fal.run/", "https://rest.fal.ai/")
            )


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_subscribe_reports_logs(run_js: JsRunner, fal_server: TlsServer, route: str, mode: str) -> None:
    input_ = {"value": f"{route}-{mode}", "steps": 3, "step_seconds": 0.2}
    out = run_js("subscribe", route, endpoint=ECHO, input=input_, mode=mode)
    assert out["data"]["value"] == f"{route}-{mode}"
    assert out["requestId"] == out["enqueued"] and out["requestId"]
    *running, done = out["updates"]
    assert done["status"] == "COMPLETED" and done["logs"] == STEPS
    assert {u["status"] for u in running} <= {"IN_QUEUE", "IN_PROGRESS"}
    assert any(u["status"] == "IN_PROGRESS" and u["logs"] for u in running)
    stream_calls = [r for r in out["requests"] if "/status/stream?logs=1" in r]
    status_polls = [r for r in out["requests"] if "/status?logs=1" in r]
    assert (len(stream_calls), bool(status_polls)) == ((1, False) if mode == "streaming" else (0, True))
    assert_routed(out, route, fal_server)


def test_queue_submit_status_result(run_js: JsRunner, fal_server: TlsServer, route: str) -> None:
    out = run_js("queue", route, endpoint=ECHO, input={"value": "queued", "steps": 2, "step_seconds": 0.05})
    rid = out["submitted"]["request_id"]
    assert out["submitted"]["status"] == "IN_QUEUE" and isinstance(out["submitted"]["queue_position"], int)
    assert out["first"]["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert out["last"] == {"status": "COMPLETED", "position": None, "logs": ["step 1/2", "step 2/2"]}
    assert out["data"]["value"] == "queued" and out["requestId"] == rid
    assert_routed(out, route, fal_server)


def test_queue_cancel(run_js: JsRunner, fal_server: TlsServer, route: str) -> None:
    out = run_js("cancel", route, endpoint=ECHO, input={"value": "never", "steps": 600, "step_seconds": 0.05})
    final = out["final"]
    assert final["status"] == "COMPLETED"
    assert (final["error"], final["error_type"]) == ("Request was cancelled", "request_cancelled")
    assert final["metrics"]["inference_time"] < 15  # stopped long before its 30 s of steps
    error = out["resultError"]
    assert (error["name"], error["status"], error["requestId"]) == ("ApiError", 400, out["requestId"])
    assert error["body"] == {"detail": "Request was cancelled", "error_type": "request_cancelled"}
    assert any(r.startswith("PUT ") and "/cancel" in r for r in out["requests"])
    assert_routed(out, route, fal_server)


def test_run_pulid_with_blob_input(
    run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str
) -> None:
    """A Blob inside reference_images[0].image_url is uploaded by the client before the call."""
    out = run_js("run", route, endpoint=PULID, input=pulid_input(None, seed=31337), facePath=str(face_png))
    assert out["requestId"]
    assert_pulid_output(out["data"], seed=31337)
    initiate = [r for r in out["requests"] if "/storage/upload/initiate?storage_type=fal-cdn-v3" in r]
    put = [r for r in out["requests"] if r.startswith(f"PUT {fal_server.url}/files/upload/")]
    assert len(initiate) == 1 and len(put) == 1
    assert_routed(out, route, fal_server)


def test_subscribe_pulid_with_blob_input(
    run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str
) -> None:
    input_ = pulid_input(None, seed=2024)
    out = run_js("subscribe", route, endpoint=PULID, input=input_, mode="polling", facePath=str(face_png))
    assert out["updates"][-1]["status"] == "COMPLETED"
    assert_pulid_output(out["data"], seed=2024)


def test_has_nsfw_concepts(run_js: JsRunner, fal_server: TlsServer, route: str) -> None:
    images = [safety.data_uri(safety.flagged_image()), safety.data_uri(safety.clean_image())]
    out = run_js("run", route, endpoint="test/safety", input={"image_urls": images})
    assert out["data"]["has_nsfw_concepts"] == [True, False]
    assert_routed(out, route, fal_server)


def test_storage_upload(run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str) -> None:
    out = run_js("upload", route, facePath=str(face_png))
    assert out["url"].startswith(f"{fal_server.url}/files/uploads/") and out["url"].endswith(".png")
    assert download(out["url"]) == face_png.read_bytes()
    assert_routed(out, route, fal_server)


def test_validation_error_has_field_errors(run_js: JsRunner, fal_server: TlsServer, route: str) -> None:
    bad = {"prompt": "x", "reference_images": [], "image_size": {"width": 64, "height": 64}}
    out = run_js("invalid", route, endpoint=PULID, input=bad)
    assert (out["name"], out["isValidationError"], out["status"]) == ("ValidationError", True, 422)
    assert [e["loc"] for e in out["fieldErrors"]] == [["body", "reference_images"]]
    assert out["fieldErrors"][0]["type"] == "too_short"
    assert_routed(out, route, fal_server)


def test_subscribe_flux_pulid_with_blob_input(
    run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str
) -> None:
    """A Blob as reference_image_url (one image, not a list) is uploaded by the client before the call."""
    input_ = flux_input("", seed=606)
    out = run_js("subscribe", route, endpoint=FLUX, input=input_, mode="streaming", facePath=str(face_png))
    assert out["updates"][-1]["status"] == "COMPLETED" and "step 2/2" in out["updates"][-1]["logs"]
    assert_flux_output(out["data"], seed=606)
    assert len([r for r in out["requests"] if "/storage/upload/initiate" in r]) == 1
    assert_routed(out, route, fal_server)


def test_run_flux_pulid_sync_mode(
    run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str
) -> None:
    out = run_js(
        "run", route, endpoint=FLUX, input=flux_input("", seed=607, sync_mode=True), facePath=str(face_png)
    )
    assert_flux_output(out["data"], seed=607, inline=True)
    assert_routed(out, route, fal_server)


def test_flux_pulid_without_a_face_throws_the_no_face_error(
    run_js: JsRunner, fal_server: TlsServer, route: str
) -> None:
    out = run_js("failing", route, endpoint=FLUX, input=flux_input(faceless_data_uri(), seed=1))
    assert (out["status"], out["body"]["error_type"]) == (422, "no_face")
    assert out["isValidationError"] and [e["loc"] for e in out["fieldErrors"]] == [
        ["body", "reference_image_url"]
    ]
    assert_routed(out, route, fal_server)


def test_platform_options_are_honoured(
    run_js: JsRunner, fal_server: TlsServer, face_png: Path, route: str
) -> None:
    out = run_js("platform", route, endpoint=ECHO, input={"value": "io"}, facePath=str(face_png))
    assert download(out["url"]) == face_png.read_bytes()
    assert out["data"]["value"] == "io"  # delivered once ...
    again = out["again"]  # ... then gone (X-Fal-Store-IO: 0)
    assert (again["status"], again["body"]["error_type"], again["requestId"]) == (
        410,
        "result_deleted",
        out["requestId"],
    )
    assert_routed(out, route, fal_server)
