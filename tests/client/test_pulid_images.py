"""fal-ai/pulid end to end with the tiny model and a real face photo: the Python client and `pulid run`."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from pulid_server.client import Completed, InProgress, Status, SyncClient
from tests.client.test_cli import pulid
from tests.servers import Server


def test_subscribe_pulid_with_a_pil_face(client: SyncClient, face: Image.Image) -> None:
    updates: list[Status] = []
    out = client.subscribe(
        "fal-ai/pulid",
        {
            "prompt": "portrait, oil painting",
            "reference_images": [{"image_url": face}],
            "image_size": {"width": 64, "height": 64},
            "num_inference_steps": 2,
            "seed": 7,
        },
        with_logs=True,
        on_queue_update=updates.append,
        client_timeout=300,
    )
    assert out["seed"] == 7 and len(out["images"]) == 1
    image = Image.open(__import__("io").BytesIO(client.download(out["images"][0]["url"], timeout=30)))
    assert image.size == (64, 64)
    assert isinstance(updates[-1], Completed)
    messages = [
        line["message"] for u in updates if isinstance(u, InProgress | Completed) for line in u.logs or []
    ]
    assert "step 2/2" in messages


def test_cli_run_saves_the_images(server: Server, face_png: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out = pulid(
        server, "run", "fal-ai/pulid", "--prompt", "a watercolor portrait", "--ref", str(face_png),
        "--num-images", "2", "--image-size", "64x64", "--num-inference-steps", "2", "--seed", "1", "--out", str(out_dir),
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    paths = [Path(line) for line in out.stdout.splitlines()]
    assert len(paths) == 2 and all(p.parent == out_dir for p in paths)
    for path in paths:
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
    assert "step 2/2" in out.stderr  # progress (a bar on a terminal), fed by `step k/N` log lines

    out = pulid(
        server, "run", "fal-ai/pulid", "--prompt", "x", "--ref", str(face_png), "--image-size", "64x64",
        "--num-inference-steps", "1", "--mode", "extreme style", "--id-scale", "1.0", "--out", str(out_dir), "--json",
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["files"]) == 1 and Path(result["files"][0]).exists()
    assert result["output"]["images"][0]["width"] == 64
