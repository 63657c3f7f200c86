"""Uploads, data: URIs and the automatic upload of Paths and PIL images found in arguments."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
from PIL import Image

from pulid_server.client import SyncClient, encode, encode_file, encode_image
from pulid_server.client.files import find_uploadables, substitute


def _fetch_image(client: SyncClient, url: str) -> Image.Image:
    return Image.open(io.BytesIO(client.download(url, timeout=30)))


def test_upload_bytes_file_and_image(client: SyncClient, face_png: Path, face: Image.Image) -> None:
    url = client.upload(b"hello", "text/plain", "hello.txt")
    assert url.startswith(client.url + "/files/uploads/") and url.endswith("hello.txt")
    assert httpx.get(url).content == b"hello"

    url = client.upload_file(face_png)
    assert url.endswith("face.png")
    assert httpx.get(url).content == face_png.read_bytes()

    url = client.upload_image(face, "png")
    assert _fetch_image(client, url).size == (512, 512)


def test_path_and_pil_image_in_arguments_are_uploaded(
    client: SyncClient, face_png: Path, face: Image.Image
) -> None:
    out = client.subscribe("test/image", {"image_url": face_png}, client_timeout=60)
    assert (out["image"]["width"], out["image"]["height"]) == (512, 512)
    assert _fetch_image(client, out["image"]["url"]).tobytes() == face.tobytes()  # lossless round trip

    small = face.resize((96, 80))
    handle = client.submit("test/image", {"image_url": small})
    out = handle.get(timeout=60)
    assert _fetch_image(client, out["image"]["url"]).size == (96, 80)


def test_nested_values_are_found_once_and_replaced(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8))
    path = tmp_path / "a.png"
    args = {"refs": [{"image_url": path}, {"image_url": image}], "again": (path, "text"), "n": 1}
    found = find_uploadables(args)
    assert found == [path, image]
    replaced = substitute(args, {id(path): "u1", id(image): "u2"})
    assert replaced == {"refs": [{"image_url": "u1"}, {"image_url": "u2"}], "again": ["u1", "text"], "n": 1}
    assert find_uploadables({"s": "a/b.png"}) == []  # strings are never taken for paths


def test_data_uri_helpers(tmp_path: Path) -> None:
    assert encode(b"hi", "text/plain") == "data:text/plain;base64," + base64.b64encode(b"hi").decode()
    path = tmp_path / "x.png"
    Image.new("RGBA", (4, 4)).save(path)
    assert encode_file(path).startswith("data:image/png;base64,")
    uri = encode_image(Image.new("RGBA", (4, 4)))  # JPEG has no alpha: converted
    assert uri.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).format == "JPEG"


def test_data_uri_is_accepted_as_input(client: SyncClient, face: Image.Image) -> None:
    out = client.run("test/image", {"image_url": encode_image(face.resize((64, 64)), "png")}, timeout=60)
    assert out["image"]["width"] == 64
