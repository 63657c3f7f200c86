from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image, PngImagePlugin

from pulid_server.files import ImageDecodeError, encode_png, open_image

LIMIT = 25_000_000


def encoded(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB", **params: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else None).save(buf, format=fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    image = open_image(encoded(fmt), max_pixels=LIMIT)
    assert image.size == (40, 30)
    assert image.mode == "RGB"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(ImageDecodeError, match="not a JPEG/PNG/WEBP image"):
        open_image(encoded(fmt, size=(16, 16)), max_pixels=LIMIT)


def test_garbage_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="not a JPEG/PNG/WEBP image"):
        open_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>", max_pixels=LIMIT)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="image is 100000x100000 pixels, the limit is 25000000"):
        open_image(png_header_only(100_000, 100_000), max_pixels=LIMIT)
    assert time.perf_counter() - start < 0.5


def test_pixel_limit_is_inclusive() -> None:
    data = encoded("PNG", size=(50, 40))
    assert open_image(data, max_pixels=2000).size == (50, 40)
    with pytest.raises(ImageDecodeError, match="image is 50x40 pixels, the limit is 1999"):
        open_image(data, max_pixels=1999)


def test_truncated_image_is_refused() -> None:
    data = encoded("PNG", size=(64, 64))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        open_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_png_with_bad_crc_is_refused_by_verify() -> None:
    data = bytearray(encoded("PNG", size=(8, 8)))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip a compressed byte; the chunk CRC no longer matches
    with pytest.raises(ImageDecodeError, match="PNG image is truncated or corrupt"):
        open_image(bytes(data), max_pixels=LIMIT)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded("JPEG", size=(40, 30), exif=exif.tobytes())
    image = open_image(data, max_pixels=LIMIT)
    assert image.size == (30, 40)
    assert image.getexif().get(0x0112) in (None, 1)


def test_transparency_is_flattened_onto_white() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buf, format="PNG")
    image = open_image(buf.getvalue(), max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_palette_and_grayscale_become_rgb() -> None:
    for mode in ("P", "L", "LA", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (4, 4)).save(buf, format="PNG")
        assert open_image(buf.getvalue(), max_pixels=LIMIT).mode == "RGB"


def test_encode_png_drops_all_metadata() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret user text")
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, format="PNG", pnginfo=info, exif=exif.tobytes())
    with Image.open(io.BytesIO(buf.getvalue())) as source:
        source.load()
        assert source.info.get("Comment") == "secret user text"  # the input really carries metadata
        source.info["icc_profile"] = b"fake profile"
        out = encode_png(source)
    assert b"secret" not in out
    for kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"):
        assert kind not in out
    with Image.open(io.BytesIO(out)) as reread:
        assert reread.size == (8, 8)
        assert reread.getpixel((0, 0)) == (0, 0, 255)


def test_encode_png_of_an_unusual_mode() -> None:
    out = encode_png(Image.new("CMYK", (3, 3)))
    with Image.open(io.BytesIO(out)) as reread:
        assert reread.mode == "RGB"


def test_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)
