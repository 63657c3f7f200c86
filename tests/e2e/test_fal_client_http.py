"""Recipe B: the unmodified fal-client over plain HTTP, pointed at pulid-server by overriding its module
constants (RUN_URL_FORMAT, QUEUE_URL_FORMAT, REST_URL, CDN_URL) at run time. Covers uploads too, which
recipe A cannot reach (REST_URL and CDN_URL have no environment variable)."""

from __future__ import annotations

import gc
import io
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import fal_client
import fal_client.client
import pytest
from PIL import Image

from tests.e2e.support import (
    FLUX,
    PULID,
    TlsServer,
    assert_flux_output,
    assert_pulid_output,
    download,
    faceless_data_uri,
    flux_input,
    pulid_input,
)
from tests.fixtures import safety

# fal-client 1.0.3 never closes the httpx clients it makes for CDN uploads; their sockets warn when collected.
pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]
ECHO = "test/echo"


@pytest.fixture(scope="module")
def fal(fal_server: TlsServer) -> Iterator[fal_client.SyncClient]:
    base = fal_server.url
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fal_client.client, "RUN_URL_FORMAT", f"{base}/run/")
        mp.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{base}/queue/")
        mp.setattr(fal_client.client, "REST_URL", f"{base}/rest")
        mp.setattr(fal_client.client, "CDN_URL", f"{base}/cdn")
        client = fal_client.SyncClient(key=fal_server.key)  # new client: its CDN token manager reads REST_URL
        yield client
    client._client.close()
    with warnings.catch_warnings():  # collect the client's leaked CDN connections here, not in a later test
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_subscribe_with_logs_reports_each_update(fal: fal_client.SyncClient) -> None:
    updates: list[fal_client.Status] = []
    output = fal.subscribe(
        ECHO, {"value": "s", "steps": 3, "step_seconds": 0.2}, with_logs=True, on_queue_update=updates.append
    )
    assert output["value"] == "s"
    *running, done = updates
    assert isinstance(done, fal_client.Completed) and done.error is None
    assert done.logs is not None and [x["message"] for x in done.logs] == ["step 1/3", "step 2/3", "step 3/3"]
    assert {x["level"] for x in done.logs} == {"INFO"} and all(x["timestamp"] for x in done.logs)
    assert all(isinstance(u, fal_client.Queued | fal_client.InProgress) for u in running)
    assert any(isinstance(u, fal_client.InProgress) and u.logs for u in running)
    assert done.metrics["inference_time"] > 0


def test_submit_status_result(fal: fal_client.SyncClient, fal_server: TlsServer) -> None:
    handle = fal.submit(ECHO, {"value": "q", "steps": 2, "step_seconds": 0.05})
    prefix = f"{fal_server.url}/queue/{ECHO}/requests/{handle.request_id}"
    assert (handle.status_url, handle.response_url, handle.cancel_url) == (
        prefix + "/status",
        prefix,
        prefix + "/cancel",
    )
    assert fal.get_handle(ECHO, handle.request_id) == handle  # our URLs are the ones the client builds itself
    assert isinstance(handle.status(), fal_client.Queued | fal_client.InProgress | fal_client.Completed)
    assert handle.get()["value"] == "q"
    status = fal.status(ECHO, handle.request_id, with_logs=True)
    assert isinstance(status, fal_client.Completed) and status.logs is not None and len(status.logs) == 2
    assert isinstance(fal.status(ECHO, handle.request_id), fal_client.Completed)
    assert fal.result(ECHO, handle.request_id)["value"] == "q"


def test_cancel_of_a_running_job(fal: fal_client.SyncClient) -> None:
    handle = fal.submit(ECHO, {"value": "never", "steps": 600, "step_seconds": 0.05})
    deadline = time.monotonic() + 60
    while not isinstance(handle.status(), fal_client.InProgress) and time.monotonic() < deadline:
        time.sleep(0.05)
    handle.cancel()
    final = [s for s in handle.iter_events(with_logs=True)][-1]
    assert isinstance(final, fal_client.Completed)
    assert (final.error, final.error_type) == ("Request was cancelled", "request_cancelled")
    assert final.logs is not None and final.logs[-1]["message"] == "cancelled" and len(final.logs) < 600
    with pytest.raises(fal_client.FalClientHTTPError) as result_error:
        handle.get()
    assert (result_error.value.status_code, result_error.value.message) == (400, "Request was cancelled")
    assert result_error.value.error_type == "request_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as again:
        fal.cancel(ECHO, handle.request_id)
    assert again.value.status_code == 400 and "ALREADY_COMPLETED" in again.value.message


def test_subscribe_pulid_with_encoded_file(fal: fal_client.SyncClient, face_png: Path) -> None:
    face = fal_client.encode_file(face_png)
    assert face.startswith("data:image/png;base64,")
    updates: list[fal_client.Status] = []
    output = fal.subscribe(
        PULID, pulid_input(face, seed=4242), with_logs=True, on_queue_update=updates.append
    )
    assert isinstance(updates[-1], fal_client.Completed) and updates[-1].error is None
    assert_pulid_output(output, seed=4242)


def test_has_nsfw_concepts_and_the_request_switch(fal: fal_client.SyncClient) -> None:
    """test/safety has fal-ai/flux-pulid's `enable_safety_checker` and `has_nsfw_concepts`."""
    images = [safety.data_uri(safety.flagged_image()), safety.data_uri(safety.clean_image())]
    checked = fal.subscribe("test/safety", {"image_urls": images})
    assert checked["has_nsfw_concepts"] == [True, False]
    assert not Image.open(io.BytesIO(download(checked["images"][0]["url"]))).getbbox()  # blacked out
    unchecked = fal.run("test/safety", {"image_urls": images, "enable_safety_checker": False})
    assert unchecked["has_nsfw_concepts"] == [False, False]


def test_upload_file_uses_the_cdn_token_flow(
    fal: fal_client.SyncClient, face_png: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fal_client"):
        url = fal.upload_file(face_png)  # default chain: fal_v3 (token + /files/upload), then "fal"
    assert not [r for r in caplog.records if "falling back" in r.getMessage()]
    assert url.endswith("/astronaut.png")
    assert download(url) == face_png.read_bytes()
    only_cdn = fal.upload(
        b"plain text", "text/plain", "a.txt", repository="fal_v3", fallback_repository="fal_v3"
    )
    assert download(only_cdn) == b"plain text"


def test_upload_via_initiate_and_run_pulid(fal: fal_client.SyncClient, face_png: Path) -> None:
    url = fal.upload_file(face_png, repository="fal", fallback_repository="fal")  # initiate + PUT only
    assert download(url) == face_png.read_bytes()
    assert_pulid_output(fal.run(PULID, pulid_input(url, seed=7)), seed=7)


def test_upload_image_as_reference(fal: fal_client.SyncClient, face_png: Path) -> None:
    with Image.open(face_png) as img:
        url = fal.upload_image(img.convert("RGB"), format="png")
    with Image.open(io.BytesIO(download(url))) as uploaded:
        assert uploaded.format == "PNG" and uploaded.size == (512, 512)
    handle = fal.submit(PULID, pulid_input(url, seed=99))
    assert_pulid_output(handle.get(), seed=99)


def test_422_lists_the_field_errors(fal: fal_client.SyncClient) -> None:
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        fal.submit(PULID, {"prompt": "no reference images", "image_size": {"width": 63, "height": 64}})
    assert exc.value.status_code == 422
    assert isinstance(exc.value.message, list)
    locs = {tuple(e["loc"]) for e in exc.value.message}
    assert ("body", "reference_images") in locs
    assert ("body", "image_size", "ImageSize", "width") in locs
    with pytest.raises(fal_client.FalClientHTTPError) as run_exc:
        fal.run(ECHO, {"steps": "many"})
    assert run_exc.value.status_code == 422
    assert [e["loc"] for e in run_exc.value.message] == [["body", "steps"]]  # type: ignore[index]  # a list at run time


def test_422_from_the_worker_surfaces_on_result(fal: fal_client.SyncClient) -> None:
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        fal.subscribe("test/fail", {"kind": "user"})
    assert exc.value.status_code == 422 and exc.value.error_type == "no_face"
    assert [e["loc"] for e in exc.value.message] == [["body", "reference_images", 0, "image_url"]]  # type: ignore[index]


def test_subscribe_flux_pulid_with_an_uploaded_file(fal: fal_client.SyncClient, face_png: Path) -> None:
    url = fal.upload_file(face_png)
    updates: list[fal_client.Status] = []
    output = fal.subscribe(FLUX, flux_input(url, seed=77), with_logs=True, on_queue_update=updates.append)
    assert isinstance(updates[-1], fal_client.Completed) and updates[-1].error is None
    assert updates[-1].logs is not None and "step 2/2" in [x["message"] for x in updates[-1].logs]
    assert_flux_output(output, seed=77)


def test_flux_pulid_sync_mode_returns_the_image_inline(fal: fal_client.SyncClient, face_png: Path) -> None:
    output = fal.run(FLUX, flux_input(fal_client.encode_file(face_png), seed=78, sync_mode=True))
    assert_flux_output(output, seed=78, inline=True)


def test_flux_pulid_without_a_face_is_a_no_face_422(fal: fal_client.SyncClient) -> None:
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        fal.subscribe(FLUX, flux_input(faceless_data_uri(), seed=1))
    assert (exc.value.status_code, exc.value.error_type) == (422, "no_face")
    assert [e["loc"] for e in exc.value.message] == [["body", "reference_image_url"]]  # type: ignore[index]


def test_platform_options_are_honoured(fal: fal_client.SyncClient) -> None:
    kept = fal_client.StorageSettings(expires_in="1h")
    url = fal.upload(b"kept", "text/plain", "k.txt", lifecycle=kept)  # both lifecycle headers, on the CDN
    assert download(url) == b"kept"
    headers = {
        "X-Fal-Store-IO": "0",
        "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 60}',
    }
    handle = fal.submit(ECHO, {"value": "io"}, hint="face-1", headers=headers)
    assert handle.get()["value"] == "io"  # delivered once ...
    deadline = time.monotonic() + 10
    while True:  # ... then gone (X-Fal-Store-IO: 0), once the pruner has passed
        try:
            handle.get()
        except fal_client.FalClientHTTPError as exc:
            assert (exc.status_code, exc.error_type) == (410, "result_deleted")
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
