"""Decode user images safely (three decoders, a pixel cap read from the header) and re-encode outputs."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

__all__ = ["ImageDecodeError", "check_image", "encode_png", "open_image"]

# Only these decoders ever see user bytes: every other Pillow plugin is attack surface we do not need
# (the FITS/GZIP bomb CVE-2026-40192 was in a format nobody uploads on purpose).
_FORMATS = ("JPEG", "PNG", "WEBP")
# What a corrupt file makes Pillow's parsers raise.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, IndexError, TypeError, struct.error, EOFError)


class ImageDecodeError(ValueError):
    """An image that cannot or may not be decoded; `str()` is safe to show to the user."""


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode a JPEG, PNG or WEBP image into an upright RGB image.

    The pixel count is read from the header and checked before any pixel data is decoded, so a
    decompression bomb costs a header parse, never a memory spike. Transparency is flattened onto white.
    """
    fmt = check_image(data, max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Only reachable when max_pixels is above Pillow's own cap (89 MP warns, 179 MP raises).
        raise ImageDecodeError(f"image is too many pixels to decode (limit {max_pixels})") from e
    except _DECODE_ERRORS as e:
        raise ImageDecodeError(f"{fmt} image is truncated or corrupt") from e


def check_image(data: bytes, *, max_pixels: int) -> str:
    """Check that `data` is a JPEG, PNG or WEBP image of at most `max_pixels`, without decoding its
    pixels (header, then the checks the format allows, e.g. PNG CRCs): its format, "JPEG", "PNG" or "WEBP"."""
    fmt, (width, height) = _probe(data)
    if width * height > max_pixels:
        raise ImageDecodeError(f"image is {width}x{height} pixels, the limit is {max_pixels}")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            image.verify()  # leaves the image unusable: decoding opens it again
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"image is {width}x{height} pixels, too many to decode") from e
    except _DECODE_ERRORS as e:
        raise ImageDecodeError(f"{fmt} image is truncated or corrupt") from e
    return fmt


def encode_png(image: Image.Image) -> bytes:
    """Encode `image` as PNG with no metadata at all: no EXIF, text chunks or ICC profile from the input."""
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    # A fresh image carries pixels only; `info` (EXIF, text, icc_profile) stays behind.
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG")
    return buf.getvalue()


def _probe(data: bytes) -> tuple[str, tuple[int, int]]:
    """Find the format and size from the header alone.

    This is Pillow's own `Image.open` loop minus its decompression-bomb check, which raises before the
    size is known (and only past ~179 MP); we want our lower limit and a message that names the size.
    """
    prefix = data[:16]
    Image.init()
    for fmt in _FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(prefix):
            continue
        try:
            with factory(io.BytesIO(data), "") as header:  # plugins parse the header only, lazily
                return fmt, header.size
        except _DECODE_ERRORS as e:
            raise ImageDecodeError(f"{fmt} image header is corrupt") from e
    raise ImageDecodeError("not a JPEG/PNG/WEBP image")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image  # exif_transpose already returned a detached copy
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")
