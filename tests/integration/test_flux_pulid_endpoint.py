"""fal-ai/flux-pulid end to end through the queue with the tiny FLUX preset (the real model code path), and
the worker processes of `pulid serve`: one per model family, each loading only its own."""

from __future__ import annotations

import base64
import io
import time

import httpx
from PIL import Image

from pulid_server.store import open_job_store
from tests.integration.test_pulid_endpoint import FACE, NO_FACE
from tests.servers import TEST_ENDPOINTS, Server, wait_completed

FLUX = "fal-ai/flux-pulid"
SMALL = {"width": 96, "height": 64}


def flux_input(**extra: object) -> dict[str, object]:
    return {"prompt": "portrait, oil painting", "reference_image_url": FACE, "image_size": SMALL,
            "num_inference_steps": 2, **extra}  # fmt: skip


def test_generates_a_png_with_fals_output_fields(server: Server) -> None:
    with server.client() as c:
        sub = c.post(f"/queue/{FLUX}", json=flux_input(seed=5)).json()
        done = wait_completed(c, sub["status_url"], timeout=180)
        assert "error" not in done, done
        messages = [line["message"] for line in done["logs"]]
        assert done["logs"][0]["level"] == "WARN" and "`pulid weights download --family flux`" in messages[0]
        assert "step 2/2" in messages
        result = c.get(sub["response_url"]).json()
    assert set(result) == {"images", "has_nsfw_concepts", "prompt", "seed", "timings"}
    assert (result["seed"], result["prompt"]) == (5, "portrait, oil painting")
    assert result["has_nsfw_concepts"] == [False]  # no safety checker ran
    assert result["timings"]["inference"] > 0
    [image] = result["images"]
    assert (image["width"], image["height"], image["content_type"]) == (96, 64, "image/png")
    png = Image.open(io.BytesIO(httpx.get(image["url"]).content))
    assert png.format == "PNG" and png.size == (96, 64)


def test_sync_mode_returns_the_image_inline_and_stores_nothing(server: Server) -> None:
    with server.client() as c:
        sub = c.post(f"/queue/{FLUX}", json=flux_input(seed=5, sync_mode=True)).json()
        assert "error" not in wait_completed(c, sub["status_url"], timeout=180)
        result = c.get(sub["response_url"]).json()
        again = c.post(f"/run/{FLUX}", json=flux_input(seed=5), timeout=180).json()
    [image] = result["images"]
    head, _, payload = image["url"].partition(",")
    assert head == "data:image/png;base64"
    data = base64.b64decode(payload)
    assert image["file_size"] == len(data) and Image.open(io.BytesIO(data)).size == (96, 64)
    assert not (server.data_dir / "files" / "outputs" / sub["request_id"]).exists()
    assert httpx.get(again["images"][0]["url"]).content == data  # same seed, same pixels, stored this time


def test_faceless_reference_is_a_422_naming_reference_image_url(server: Server) -> None:
    with server.client() as c:
        sub = c.post(f"/queue/{FLUX}", json=flux_input(reference_image_url=NO_FACE)).json()
        done = wait_completed(c, sub["status_url"], timeout=180)
        assert done["error_type"] == "no_face" and done["error"].startswith("reference_image_url: no face")
        r = c.get(sub["response_url"])
    assert r.status_code == 422 and r.headers["x-fal-error-type"] == "no_face"
    assert [(e["loc"], e["type"]) for e in r.json()["detail"]] == [
        (["body", "reference_image_url"], "no_face")
    ]


def test_bad_fields_are_422s_naming_each_field(server: Server) -> None:
    bad = {
        "prompt": "x",
        "image_size": {"width": 63, "height": 64},
        "num_inference_steps": 51,
        "guidance_scale": 21,
        "start_step": -1,
        "max_sequence_length": 256,  # fal's schema: the string "256"
        "num_images": 2,  # fal-ai/pulid's field, not this endpoint's
    }
    with server.client() as c:
        r = c.post(f"/queue/{FLUX}", json=bad)
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert locs == {
        ("body", "reference_image_url"),
        ("body", "image_size", "ImageSize", "width"),
        ("body", "image_size", "str-enum[ImageSizePreset]"),
        ("body", "num_inference_steps"),
        ("body", "guidance_scale"),
        ("body", "start_step"),
        ("body", "max_sequence_length"),
        ("body", "num_images"),
    }


def test_schema_is_fals(server: Server) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    fields = schema["FluxPulidInput"]["properties"]
    assert schema["FluxPulidInput"]["required"] == ["prompt", "reference_image_url"]
    assert fields["max_sequence_length"] == {**fields["max_sequence_length"], "type": "string",
                                             "enum": ["128", "256", "512"], "default": "128"}  # fmt: skip
    defaults = {name: f.get("default") for name, f in fields.items()}
    assert defaults == {
        "prompt": None, "reference_image_url": None, "image_size": "landscape_4_3", "num_inference_steps": 20,
        "seed": None, "guidance_scale": 4.0, "negative_prompt": "", "sync_mode": False, "start_step": 0,
        "true_cfg": 1.0, "id_weight": 1.0, "enable_safety_checker": True, "max_sequence_length": "128",
    }  # fmt: skip
    assert set(schema["FluxPulidOutput"]["required"]) == {
        "images",
        "has_nsfw_concepts",
        "prompt",
        "seed",
        "timings",
    }
    # one ImageSize and one Image component, shared with fal-ai/pulid
    assert schema["PulidInput"]["properties"]["image_size"]["anyOf"] == fields["image_size"]["anyOf"]


def test_cancel_mid_run_stops_at_the_next_step(server: Server) -> None:
    body = flux_input(image_size="square_hd", num_inference_steps=50)  # ~0.3 s a step on the tiny model
    with server.client() as c:
        sub = c.post(f"/queue/{FLUX}", json=body).json()
        deadline = time.monotonic() + 120
        while not any(
            line["message"].startswith("step ")
            for line in c.get(sub["status_url"], params={"logs": 1}).json().get("logs") or []
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.put(sub["cancel_url"]).status_code == 202
        done = wait_completed(c, sub["status_url"], timeout=60)
        assert done["error_type"] == "request_cancelled"
        steps = [line for line in done["logs"] if line["message"].startswith("step ")]
        assert 0 < len(steps) < 50 and done["logs"][-1]["message"] == "cancelled"
        assert c.get(sub["response_url"]).status_code == 400


def test_each_model_family_has_its_own_worker_process(server: Server) -> None:
    """`pulid serve` (default --worker-groups family) starts one worker per family: each registers only its
    endpoints and imports only its family's code (the worker says which families its process loaded)."""
    store = open_job_store(f"sqlite:///{server.data_dir / 'pulid.db'}")
    try:
        workers = {tuple(w.endpoints): w for w in store.cluster.recent_workers(60)}
    finally:
        store.close()
    assert workers[("fal-ai/pulid",)].presets == {"fal-ai/pulid": "tiny"}
    assert workers[(FLUX,)].presets == {FLUX: "tiny"}
    assert workers[tuple(TEST_ENDPOINTS.split(","))].presets == {}
    assert sorted(w.pid for w in workers.values()) == sorted(server.worker_pids())
    log = (server.data_dir / f"server-{server.port}.log").read_text()
    assert "ready: fal-ai/pulid (model families loaded: sdxl)" in log
    assert f"ready: {FLUX} (model families loaded: flux)" in log
    assert f"ready: {TEST_ENDPOINTS.replace(',', ', ')} (model families loaded: none)" in log


def test_worker_groups_put_chosen_endpoints_together(fresh_server: Server) -> None:
    fresh_server.extra_args = ["--worker-groups", f"fal-ai/pulid,{FLUX};test/echo"]
    fresh_server.worker_endpoints = f"fal-ai/pulid,{FLUX},test/echo"  # what start() waits for; groups win
    srv = fresh_server.start()
    log = (srv.data_dir / f"server-{srv.port}.log").read_text()
    assert f"ready: fal-ai/pulid, {FLUX} (model families loaded: sdxl, flux)" in log
    assert "ready: test/echo (model families loaded: none)" in log
    assert len(srv.worker_pids()) == 2
    with srv.client() as c:
        assert c.post("/run/test/echo", json={"value": "v"}).json()["value"] == "v"
        assert c.post(f"/run/{FLUX}", json=flux_input(), timeout=180).status_code == 200
