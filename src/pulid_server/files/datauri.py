"""Decode `data:` URIs (RFC 2397) with a size cap that is enforced before anything is decoded."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote, unquote_to_bytes

__all__ = ["DataURIError", "decode_data_uri"]

_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/=\-_\s]*")


class DataURIError(ValueError):
    """A data URI that is malformed or too large; `str()` is safe to show to the user."""


def decode_data_uri(uri: str, *, max_bytes: int) -> tuple[str, bytes]:
    """Return `(mime type, data)` of a `data:` URI, refusing anything over `max_bytes` decoded bytes.

    Both the base64 form (`data:image/png;base64,...`) and the percent-encoded form are accepted.
    URL-safe base64 and missing padding are tolerated because browsers and SDKs produce both.
    """
    if uri[:5].lower() != "data:":
        raise DataURIError("not a data URI (it must start with 'data:')")
    comma = uri.find(",", 5, 1030)
    # The header is short; a missing comma in the first few KB means garbage, not a huge MIME type.
    if comma < 0 or comma > 1024:
        raise DataURIError("data URI is malformed: no ',' after the media type")
    params = [p.strip() for p in uri[5:comma].split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    mime = (params[0] or "text/plain").lower()
    # Sizes are worked out on `uri` itself: even slicing the payload out would copy it.
    length = len(uri) - comma - 1
    escapes = uri.count("%", comma + 1)

    if is_base64:
        # 4 base64 characters decode to at most 3 bytes; each %XX escape is one character once unquoted.
        _check_size((length - 2 * escapes) * 3 // 4, max_bytes)
        payload = uri[comma + 1 :]
        data = _decode_base64(unquote(payload) if escapes else payload)
    else:
        # An ASCII payload decodes to between length/3 (all %XX) and length bytes.
        _check_size(length // 3, max_bytes)
        payload = uri[comma + 1 :]
        if not payload.isascii():
            raise DataURIError("data URI is malformed: non-ASCII characters must be percent-encoded")
        data = unquote_to_bytes(payload)
    _check_size(len(data), max_bytes)
    return mime, data


def _decode_base64(payload: str) -> bytes:
    if not _BASE64_ALPHABET.fullmatch(payload):
        raise DataURIError("data URI has invalid base64 data")
    compact = "".join(payload.split()).rstrip("=")  # line breaks and lost padding are common
    if len(compact) % 4 == 1:
        raise DataURIError("data URI has invalid base64 data (truncated)")
    compact += "=" * (-len(compact) % 4)
    try:
        url_safe = "-" in compact or "_" in compact
        return base64.b64decode(compact, altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataURIError("data URI has invalid base64 data") from e


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DataURIError(f"data URI is too large: {size} bytes decoded, the limit is {max_bytes}")
