"""fal-ai/flux-pulid with the tiny model: the Python client, and `pulid run` with options from its schema."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pulid_server.client import RequestFailed, SyncClient
from tests.client.test_cli import pulid
from tests.servers import Server

FLUX = "fal-ai/flux-pulid"


def test_subscribe_with_a_pil_face_and_a_faceless_one(client: SyncClient, face: Image.Image) -> None:
    body = {"prompt": "portrait", "reference_image_url": face, "image_size": {"width": 64, "height": 64},
            "num_inference_steps": 2, "seed": 11}  # fmt: skip
    out = client.subscribe(FLUX, body, client_timeout=300)  # the PIL image is uploaded first
    assert (out["seed"], out["has_nsfw_concepts"], len(out["images"])) == (11, [False], 1)
    assert Image.open(io.BytesIO(client.download(out["images"][0]["url"], timeout=30))).size == (64, 64)
    flat = Image.fromarray(np.full((128, 128, 3), 90, np.uint8))
    with pytest.raises(RequestFailed) as failed:
        client.subscribe(FLUX, {**body, "reference_image_url": flat}, client_timeout=300)
    assert (failed.value.error_type, failed.value.status_code) == ("no_face", 422)
    assert [e["loc"] for e in failed.value.field_errors] == [["body", "reference_image_url"]]


def test_cli_run_takes_the_endpoints_fields_and_saves_sync_mode_images(
    server: Server, face_png: Path, tmp_path: Path
) -> None:
    out = pulid(
        server, "run", FLUX, "--prompt", "a watercolor portrait", "--ref", str(face_png), "--image-size",
        "96x64", "--num-inference-steps", "2", "--seed", "3", "--sync-mode", "--max-sequence-length", "256",
        "--out", str(tmp_path), "--json", timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    [image] = result["output"]["images"]
    assert image["url"].startswith("data:image/png;base64,")  # not stored: saved from the response
    [saved] = result["files"]
    assert Path(saved).read_bytes() == base64.b64decode(image["url"].partition(",")[2])
    with Image.open(saved) as png:
        assert png.size == (96, 64) and "step 2/2" in out.stderr


def test_cli_help_lists_the_endpoints_fields_and_refuses_others(server: Server) -> None:
    out = pulid(server, "run", FLUX, "--help")
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and f"{FLUX} input fields, from {server.url}/openapi.json" in text
    for option in ("--reference-image-url", "--max-sequence-length", "--sync-mode", "--true-cfg"):
        assert option in text
    assert "128 | 256 | 512" in text
    out = pulid(server, "run", FLUX, "--prompt", "x", "--num-images", "2")
    assert out.returncode == 2 and out.stderr.startswith(
        "error: --num-images: no such option for this endpoint"
    )
    out = pulid(server, "run", "fal-ai/nope", "--prompt", "x", "--json")
    assert (
        out.returncode == 2
        and "has no endpoint 'fal-ai/nope' (it has: fal-ai/pulid, " in json.loads(out.stdout)["error"]
    )
