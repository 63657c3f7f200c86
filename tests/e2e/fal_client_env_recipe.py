"""fal-client, unmodified, pointed at pulid-server by environment variables only (README recipe A).

Run by tests/e2e/test_fal_client_tls.py in a subprocess with FAL_KEY, FAL_RUN_HOST, FAL_QUEUE_RUN_HOST and
SSL_CERT_FILE set (fal-client reads them at import). argv[1]: the reference face file. Prints one JSON
object with what the client returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import fal_client

ECHO = "test/echo"
TIMEOUT = 120.0  # seconds; subscribe cancels the request and raises FalClientTimeoutError after it


def describe(status: fal_client.Status) -> dict[str, Any]:
    logs = getattr(status, "logs", None)
    out: dict[str, Any] = {
        "type": type(status).__name__,
        "logs": None if logs is None else [x["message"] for x in logs],
    }
    if isinstance(status, fal_client.Queued):
        out["position"] = status.position
    if isinstance(status, fal_client.Completed):
        out.update(error=status.error, error_type=status.error_type, metrics=status.metrics)
    return out


def subscribe_echo() -> dict[str, Any]:
    updates: list[fal_client.Status] = []
    output = fal_client.subscribe(
        ECHO,
        {"value": "subscribed", "steps": 3, "step_seconds": 0.2},
        with_logs=True,
        on_queue_update=updates.append,
        client_timeout=TIMEOUT,
    )
    return {"output": output, "updates": [describe(u) for u in updates]}


def subscribe_pulid(face_path: str) -> dict[str, Any]:
    updates: list[fal_client.Status] = []
    arguments = {
        "prompt": "portrait, oil painting",
        "reference_images": [{"image_url": fal_client.encode_file(Path(face_path))}],
        "image_size": {"width": 64, "height": 64},
        "num_inference_steps": 1,
        "seed": 1234,
    }
    output = fal_client.subscribe(
        "fal-ai/pulid", arguments, with_logs=True, on_queue_update=updates.append, client_timeout=TIMEOUT
    )
    return {"output": output, "updates": [describe(u) for u in updates]}


def subscribe_flux(face_path: str) -> dict[str, Any]:
    arguments = {
        "prompt": "portrait, oil painting",
        "reference_image_url": fal_client.encode_file(Path(face_path)),
        "image_size": {"width": 64, "height": 64},
        "num_inference_steps": 2,
        "seed": 4321,
    }
    return {"output": fal_client.subscribe("fal-ai/flux-pulid", arguments, client_timeout=TIMEOUT)}


def submit_status_result() -> dict[str, Any]:
    handle = fal_client.submit(ECHO, {"value": "queued", "steps": 2, "step_seconds": 0.05})
    first = handle.status(with_logs=True)
    output = handle.get()
    return {
        "request_id": handle.request_id,
        "urls": [handle.status_url, handle.response_url, handle.cancel_url],
        "first_status": describe(first),
        "output": output,
        # by request id: URLs built by the client from FAL_QUEUE_RUN_HOST
        "status_by_id": describe(fal_client.status(ECHO, handle.request_id, with_logs=True)),
        "result_by_id": fal_client.result(ECHO, handle.request_id),
    }


def cancel_long_job() -> dict[str, Any]:
    handle = fal_client.submit(ECHO, {"value": "never", "steps": 600, "step_seconds": 0.05})
    deadline = time.monotonic() + 60  # let it start, so the cancel reaches a running job
    while not isinstance(handle.status(), fal_client.InProgress) and time.monotonic() < deadline:
        time.sleep(0.05)
    handle.cancel()
    final = next(s for s in handle.iter_events(with_logs=True) if isinstance(s, fal_client.Completed))
    try:
        handle.get()
        result_error: dict[str, Any] | None = None
    except fal_client.FalClientHTTPError as exc:
        result_error = {"status_code": exc.status_code, "message": exc.message, "error_type": exc.error_type}
    try:
        handle.cancel()
        second_cancel: dict[str, Any] | None = None
    except fal_client.FalClientHTTPError as exc:
        second_cancel = {"status_code": exc.status_code, "message": exc.message}
    return {"final": describe(final), "result_error": result_error, "second_cancel": second_cancel}


def run_echo() -> dict[str, Any]:
    return fal_client.run(ECHO, {"value": "ran"})


def main() -> None:
    face_path = sys.argv[1]
    results = {
        "subscribe": subscribe_echo(),
        "subscribe_pulid": subscribe_pulid(face_path),
        "subscribe_flux": subscribe_flux(face_path),
        "submit": submit_status_result(),
        "cancel": cancel_long_job(),
        "run": run_echo(),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
