"""The content policy through real HTTP: one server with the tiny `vit` safety checker (threshold set so
that the astronaut flags and the coffee does not, tests/fixtures/safety.py), the node's policy (optional,
black, a prompt blocklist) and one API key per override (created with `pulid keys create`).

`test/safety` stands in for fal-ai/flux-pulid: it has `enable_safety_checker` and `has_nsfw_concepts`, and
its "generated" images are the ones it is sent.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.safety import SERVER_ENV, clean_image, data_uri, flagged_image
from tests.scaleout.test_metrics import scrape, value
from tests.servers import Server, pulid, wait_completed

SAFETY = "test/safety"
FLAGGED, CLEAN = data_uri(flagged_image()), data_uri(clean_image())
KEY_POLICIES = {  # key name -> `pulid keys create` flags
    "blur": ["--safety-action", "blur"],
    "fail": ["--safety-action", "fail"],
    "forced": ["--safety-mode", "forced"],
    "off": ["--safety-mode", "off"],
}


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("safety") / "data",
        env={**SERVER_ENV, "PULID_PROMPT_BLOCKLIST": "nude, gore fest"},
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(policy_server: Server) -> dict[str, str]:
    made = {"default": policy_server.key}
    for name, flags in KEY_POLICIES.items():
        args = ["keys", "create", "--name", name, *flags, "--data-dir", str(policy_server.data_dir)]
        made[name] = pulid(*args, env=policy_server.env).strip()
    return made


def run(
    server: Server, key: str, endpoint: str, body: dict[str, Any]
) -> tuple[dict[str, Any], httpx.Response]:
    """Submit through the queue, wait, and return the final status and the result response."""
    with server.client(key) as c:
        submitted = c.post(f"/queue/{endpoint}", json=body)
        assert submitted.status_code == 200, submitted.text
        status = wait_completed(c, submitted.json()["status_url"])
        return status, c.get(submitted.json()["response_url"])


def pixels(url: str) -> np.ndarray:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)


def fine_detail(image: np.ndarray) -> float:
    """Mean difference between an image and itself through a 16 x 16 grid."""
    h, w, _ = image.shape
    coarse = Image.fromarray(image.astype(np.uint8)).resize((16, 16), Image.Resampling.BOX)
    return float(np.abs(image - np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC))).mean())


def stored_on_disk(server: Server, request_id: str) -> list[Path]:
    return sorted((server.data_dir / "files" / "outputs" / request_id).glob("*.png"))


ORIGINAL_FLAGGED, ORIGINAL_CLEAN = (
    np.asarray(flagged_image()).astype(int),
    np.asarray(clean_image()).astype(int),
)


def test_node_policy_blacks_out_flagged_images(policy_server: Server, keys: dict[str, str]) -> None:
    status, result = run(policy_server, keys["default"], SAFETY, {"image_urls": [FLAGGED, CLEAN]})
    out = result.json()
    assert result.status_code == 200 and out["has_nsfw_concepts"] == [True, False]
    assert not pixels(out["images"][0]["url"]).any()  # black, as fal returns it
    assert np.array_equal(pixels(out["images"][1]["url"]), ORIGINAL_CLEAN)
    on_disk = stored_on_disk(policy_server, status["request_id"])
    assert len(on_disk) == 2 and any(not np.asarray(Image.open(p)).any() for p in on_disk)
    assert "safety checker: 1 of 2 image(s) flagged" in [line["message"] for line in status["logs"]]


def test_caller_may_switch_the_checker_off_under_an_optional_policy(
    policy_server: Server, keys: dict[str, str]
) -> None:
    _, result = run(
        policy_server, keys["default"], SAFETY, {"image_urls": [FLAGGED], "enable_safety_checker": False}
    )
    out = result.json()
    assert out["has_nsfw_concepts"] == [False]
    assert np.array_equal(pixels(out["images"][0]["url"]), ORIGINAL_FLAGGED)


def test_key_with_forced_checker_ignores_the_callers_switch(
    policy_server: Server, keys: dict[str, str]
) -> None:
    status, result = run(
        policy_server,
        keys["forced"],
        SAFETY,
        {"image_urls": [CLEAN, FLAGGED], "enable_safety_checker": False},
    )
    out = result.json()
    assert out["has_nsfw_concepts"] == [False, True]
    assert not pixels(out["images"][1]["url"]).any()
    messages = [line["message"] for line in status["logs"]]
    assert "the safety checker is forced on by the operator's content policy" in messages


def test_key_with_checker_off_is_never_checked(policy_server: Server, keys: dict[str, str]) -> None:
    _, result = run(policy_server, keys["off"], SAFETY, {"image_urls": [FLAGGED]})
    out = result.json()
    assert out["has_nsfw_concepts"] == [False]
    assert np.array_equal(pixels(out["images"][0]["url"]), ORIGINAL_FLAGGED)


def test_key_with_blur_stores_a_blurred_image(policy_server: Server, keys: dict[str, str]) -> None:
    _, result = run(policy_server, keys["blur"], SAFETY, {"image_urls": [FLAGGED, CLEAN]})
    out = result.json()
    assert out["has_nsfw_concepts"] == [True, False]
    blurred = pixels(out["images"][0]["url"])
    assert blurred.shape == ORIGINAL_FLAGGED.shape and blurred.any()
    # nothing finer than a 16 x 16 grid survives: the image is about what 16 x 16 cells can hold
    assert fine_detail(blurred) < 5 < 20 < fine_detail(ORIGINAL_FLAGGED)
    assert np.array_equal(pixels(out["images"][1]["url"]), ORIGINAL_CLEAN)


def test_key_with_fail_refuses_the_request_and_stores_nothing(
    policy_server: Server, keys: dict[str, str]
) -> None:
    status, result = run(policy_server, keys["fail"], SAFETY, {"image_urls": [CLEAN, FLAGGED]})
    assert status["error_type"] == "content_policy_violation"
    assert result.status_code == 422 and result.headers["x-fal-error-type"] == "content_policy_violation"
    detail = result.json()["detail"]
    assert detail[0]["loc"] == ["body"] and detail[0]["type"] == "content_policy_violation"
    assert "generated image(s) [1] flagged by the safety checker" in detail[0]["msg"]
    assert stored_on_disk(policy_server, status["request_id"]) == []
    _, clean = run(policy_server, keys["fail"], SAFETY, {"image_urls": [CLEAN]})  # a clean one passes
    assert clean.status_code == 200 and clean.json()["has_nsfw_concepts"] == [False]


def test_pulid_output_gains_has_nsfw_concepts_only_when_checked(
    policy_server: Server, keys: dict[str, str]
) -> None:
    from tests.integration.test_pulid_endpoint import FACE

    body = {
        "prompt": "portrait",
        "reference_images": [{"image_url": FACE}],
        "image_size": {"width": 64, "height": 64},
        "num_images": 2,
        "num_inference_steps": 1,
        "seed": 3,
    }
    _, checked = run(policy_server, keys["default"], "fal-ai/pulid", body)
    flags = checked.json()["has_nsfw_concepts"]
    assert len(flags) == 2 and all(isinstance(f, bool) for f in flags)
    for flag, image in zip(flags, checked.json()["images"], strict=True):
        assert (not pixels(image["url"]).any()) if flag else pixels(image["url"]).std() > 0
    _, unchecked = run(policy_server, keys["off"], "fal-ai/pulid", body)
    assert unchecked.status_code == 200 and "has_nsfw_concepts" not in unchecked.json()


@pytest.mark.parametrize("route", ["/queue", "/run"])
def test_blocklisted_prompt_is_refused_at_submit(policy_server: Server, route: str) -> None:
    from tests.integration.test_pulid_endpoint import FACE

    body = {
        "prompt": "a Gore-Fest poster",
        "reference_images": [{"image_url": FACE}],
        "image_size": {"width": 64, "height": 64},
        "num_inference_steps": 1,
    }
    with policy_server.client() as c:
        r = c.post(f"{route}/fal-ai/pulid", json=body)
        assert r.status_code == 422
        assert r.json()["detail"] == [
            {
                "loc": ["body", "prompt"],
                "msg": "prompt contains a blocked term ('gore-fest')",
                "type": "content_policy_violation",
            }
        ]
        queued = c.post("/queue/fal-ai/pulid", json={**body, "prompt": "a poster", "negative_prompt": "nude"})
        assert queued.status_code == 200  # the negative prompt is not checked
        wait_completed(c, queued.json()["status_url"])


def test_metrics_count_checked_and_flagged_images(policy_server: Server, keys: dict[str, str]) -> None:
    time.sleep(2.5)  # earlier tests' jobs settle into the counters (api/metrics.py SETTLE_SECONDS)
    before, types = scrape(policy_server)
    assert types["pulid_images_checked"] == "counter" and types["pulid_images_flagged"] == "counter"
    run(policy_server, keys["default"], SAFETY, {"image_urls": [FLAGGED, CLEAN, FLAGGED]})
    run(policy_server, keys["fail"], SAFETY, {"image_urls": [FLAGGED]})  # failed jobs count too
    run(policy_server, keys["off"], SAFETY, {"image_urls": [FLAGGED]})  # not checked: not counted
    checked = value(before, "pulid_images_checked_total", endpoint=SAFETY)
    deadline = time.monotonic() + 15
    while True:
        samples, _ = scrape(policy_server)
        if value(samples, "pulid_images_checked_total", endpoint=SAFETY) >= checked + 4:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.3)
    time.sleep(0.5)
    samples, _ = scrape(policy_server)
    assert value(samples, "pulid_images_checked_total", endpoint=SAFETY) == checked + 4
    flagged = value(samples, "pulid_images_flagged_total", endpoint=SAFETY)
    assert flagged == value(before, "pulid_images_flagged_total", endpoint=SAFETY) + 3


def test_flux_pulid_images_pass_the_checker_stored_or_inline(
    policy_server: Server, keys: dict[str, str]
) -> None:
    """fal-ai/flux-pulid's one image goes through the checker whether it is stored or returned inline
    (sync_mode), and its `enable_safety_checker` is the per-request switch."""
    from tests.integration.test_flux_pulid_endpoint import FLUX, flux_input

    time.sleep(2.5)  # earlier jobs settle into the counters (api/metrics.py SETTLE_SECONDS)
    before, _ = scrape(policy_server)
    outputs = [
        run(policy_server, keys["default"], FLUX, flux_input(sync_mode=sync))[1].json()
        for sync in (False, True)
    ]
    unchecked = run(policy_server, keys["default"], FLUX, flux_input(enable_safety_checker=False))[1]
    assert [len(o["has_nsfw_concepts"]) for o in outputs] == [1, 1]
    assert outputs[1]["images"][0]["url"].startswith("data:image/png;base64,")
    assert unchecked.json()["has_nsfw_concepts"] == [False]
    checked = value(before, "pulid_images_checked_total", endpoint=FLUX)
    deadline = time.monotonic() + 15
    while value(scrape(policy_server)[0], "pulid_images_checked_total", endpoint=FLUX) < checked + 2:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(0.5)
    assert value(scrape(policy_server)[0], "pulid_images_checked_total", endpoint=FLUX) == checked + 2
