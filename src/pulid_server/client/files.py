"""data: URI helpers (fal-client's `encode*`) and the auto-upload of local files and PIL images in inputs."""

from __future__ import annotations

import base64
import io
import mimetypes
import sys
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

AUTO_UPLOAD_IMAGE_FORMAT = "png"  # lossless: a reference face should not lose detail on the way


def encode(data: str | bytes, content_type: str) -> str:
    """`data:<content_type>;base64,...`: send small files inline instead of uploading them."""
    raw = data.encode() if isinstance(data, str) else data
    return f"data:{content_type};base64,{base64.b64encode(raw).decode()}"


def encode_file(path: str | PurePath) -> str:
    return encode(Path(path).read_bytes(), guess_type(path))


def encode_image(image: Image.Image, format: str = "jpeg") -> str:
    return encode(image_bytes(image, format), f"image/{format}")


def guess_type(path: str | PurePath) -> str:
    return mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def image_bytes(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    if format.lower() in ("jpeg", "jpg") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG has no alpha
    image.save(buffer, format=format)
    return buffer.getvalue()


def _is_pil_image(value: Any) -> bool:
    pil = sys.modules.get("PIL.Image")  # if PIL was never imported, nothing can be a PIL image
    return pil is not None and isinstance(value, pil.Image)


def is_uploadable(value: Any) -> bool:
    return isinstance(value, PurePath) or _is_pil_image(value)


def find_uploadables(value: Any) -> list[Any]:
    """Every Path and PIL image inside nested dicts/lists/tuples, each object once."""
    found: dict[int, Any] = {}

    def walk(v: Any) -> None:
        if is_uploadable(v):
            found.setdefault(id(v), v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item)

    walk(value)
    return list(found.values())


def substitute(value: Any, urls: dict[int, str]) -> Any:
    """A copy of `value` with each uploaded object replaced by its URL (keyed by id())."""
    if is_uploadable(value):
        return urls[id(value)]
    if isinstance(value, dict):
        return {k: substitute(v, urls) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, urls) for v in value]
    return value


def upload_payload(value: Any) -> tuple[bytes, str, str | None]:
    """(data, content_type, file_name) to upload for a Path or PIL image."""
    if isinstance(value, PurePath):
        return Path(value).read_bytes(), guess_type(value), value.name
    fmt = AUTO_UPLOAD_IMAGE_FORMAT
    return image_bytes(value, fmt), f"image/{fmt}", f"image.{fmt}"
