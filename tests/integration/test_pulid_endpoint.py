"""fal-ai/pulid end to end through the service with the tiny model: the real model code path runs."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from PIL import Image
from skimage import data

from tests.servers import Server, wait_completed


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


FACE = data_uri(Image.fromarray(data.astronaut()), "JPEG")
NO_FACE = data_uri(Image.fromarray(np.full((256, 256, 3), 120, np.uint8)))


def test_generates_pngs_of_the_requested_size(server: Server) -> None:
    body = {
        "prompt": "portrait, impressionist painting",
        "reference_images": [{"image_url": FACE}],
        "image_size": {"width": 96, "height": 64},
        "num_images": 2,
        "seed": 42,
    }
    with server.client() as c:
        sub = c.post("/queue/fal-ai/pulid", json=body).json()
        done = wait_completed(c, sub["status_url"], timeout=180)
        assert "error" not in done, done
        messages = [line["message"] for line in done["logs"]]
        assert "step 4/4" in messages
        assert done["logs"][0]["level"] == "WARN" and "`pulid weights download --family sdxl`" in messages[0]
        result = c.get(sub["response_url"]).json()
        assert result["seed"] == 42 and len(result["images"]) == 2
        for image in result["images"]:
            assert (image["width"], image["height"], image["content_type"]) == (96, 64, "image/png")
            png = Image.open(io.BytesIO(httpx.get(image["url"]).content))
            assert png.format == "PNG" and png.size == (96, 64)


def test_same_seed_same_image_bytes(server: Server) -> None:
    body = {
        "prompt": "a",
        "reference_images": [{"image_url": FACE}],
        "image_size": {"width": 64, "height": 64},
        "seed": 7,
    }
    with server.client() as c:
        urls = [
            c.post("/run/fal-ai/pulid", json=body, timeout=180).json()["images"][0]["url"] for _ in range(2)
        ]
        assert urls[0] != urls[1]
        assert httpx.get(urls[0]).content == httpx.get(urls[1]).content


def test_faceless_reference_fails_naming_the_image(server: Server) -> None:
    body = {
        "prompt": "a",
        "reference_images": [{"image_url": FACE}, {"image_url": NO_FACE}],
        "image_size": {"width": 64, "height": 64},
    }
    with server.client() as c:
        sub = c.post("/queue/fal-ai/pulid", json=body).json()
        done = wait_completed(c, sub["status_url"], timeout=180)
        assert done["error_type"] == "no_face" and "reference_images[1]" in done["error"]
        r = c.get(sub["response_url"])
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "reference_images", 1, "image_url"]


def test_the_tiny_models_noise_is_said_per_endpoint(server: Server) -> None:
    """The worker reports the preset it loaded; readiness and the schema name the endpoints on random
    weights, with the command that fixes it, and only those (the test endpoints load no model)."""
    ready = httpx.get(server.url + "/health/ready").json()
    assert ready["models"] == {"fal-ai/flux-pulid": ["tiny"], "fal-ai/pulid": ["tiny"]}
    assert sorted(ready["random_weights"]) == ["fal-ai/flux-pulid", "fal-ai/pulid"]
    assert "`pulid weights download --family flux`" in ready["random_weights"]["fal-ai/flux-pulid"]
    notice = ready["random_weights"]["fal-ai/pulid"]
    assert "noise" in notice and "`pulid weights download --family sdxl`" in notice
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in ("/queue/fal-ai/pulid", "/run/fal-ai/pulid"):
        assert paths[path]["post"]["description"].startswith(f"**{notice}**"), path
    assert "pulid weights download" not in paths["/queue/test/echo"]["post"].get("description", "")
    with server.client() as c:
        sub = c.post("/queue/test/echo", json={"steps": 1}).json()
        logs = wait_completed(c, sub["status_url"])["logs"]
    assert [line["message"] for line in logs] == ["step 1/1"]
