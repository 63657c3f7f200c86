"""`pulid run`'s options come from the endpoint's input schema: each field typed as /openapi.json says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pulid_server.api.app import create_app
from pulid_server.client.fields import FieldArgError, input_fields, parse_field_args, published_endpoints


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def parse(openapi: dict[str, Any], endpoint: str, *args: str, refs: tuple[str, ...] = ()) -> dict[str, Any]:
    fields = input_fields(openapi, endpoint)
    assert fields is not None
    return parse_field_args(fields, list(args), list(refs))


def test_each_field_is_an_option_typed_by_the_schema(openapi: dict[str, Any], tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    face.write_bytes(b"png")
    assert parse(
        openapi, "fal-ai/flux-pulid",
        "--prompt", "a b", "--reference-image-url", str(face), "--image-size", "96x64", "--seed", "7",
        "--guidance-scale=3.5", "--sync-mode", "--no-enable-safety-checker", "--max-sequence-length", "256",
        "--true_cfg", "2",
    ) == {
        "prompt": "a b", "reference_image_url": face, "image_size": {"width": 96, "height": 64}, "seed": 7,
        "guidance_scale": 3.5, "sync_mode": True, "enable_safety_checker": False,
        "max_sequence_length": "256", "true_cfg": 2.0,
    }  # fmt: skip
    assert parse(openapi, "fal-ai/flux-pulid", "--image-size", "square", "--sync-mode", "false") == {
        "image_size": "square",
        "sync_mode": False,
    }


def test_ref_fills_the_endpoints_image_field(openapi: dict[str, Any], tmp_path: Path) -> None:
    url = "https://example.com/face.jpg"
    assert parse(openapi, "fal-ai/flux-pulid", refs=(url,)) == {"reference_image_url": url}
    assert parse(openapi, "fal-ai/pulid", "--reference-images", url, refs=(url,)) == {
        "reference_images": [{"image_url": url}, {"image_url": url}]
    }
    with pytest.raises(FieldArgError, match="--ref: takes one image|--reference-image-url: takes one"):
        parse(openapi, "fal-ai/flux-pulid", refs=(url, url))
    with pytest.raises(FieldArgError, match="'nope.jpg' is neither a file nor"):
        parse(openapi, "fal-ai/flux-pulid", refs=("nope.jpg",))


def test_unusable_options_are_refused_naming_the_option(openapi: dict[str, Any]) -> None:
    cases = {
        ("--num-images", "2"): "--num-images: no such option for this endpoint",  # fal-ai/pulid's field
        ("--seed", "many"): "--seed: expected an integer, got 'many'",
        ("--image-size", "big"): "--image-size: expected square_hd | square",
        ("--sync-mode", "maybe"): "--sync-mode: expected true or false",
        ("--no-prompt",): "--no-prompt: no such option",
        ("--prompt",): "--prompt: needs a value",
    }
    for args, message in cases.items():
        with pytest.raises(FieldArgError, match=message.replace("|", r"\|")):
            parse(openapi, "fal-ai/flux-pulid", *args)
    assert input_fields(openapi, "no/such") is None
    assert {"fal-ai/pulid", "fal-ai/flux-pulid"} <= set(published_endpoints(openapi))
