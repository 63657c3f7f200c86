from __future__ import annotations

import base64
import tracemalloc

import pytest

from pulid_server.files import DataURIError, decode_data_uri


def test_base64_round_trip() -> None:
    payload = bytes(range(256)) * 3
    uri = "data:image/PNG;base64," + base64.b64encode(payload).decode()
    assert decode_data_uri(uri, max_bytes=len(payload)) == ("image/png", payload)


def test_url_safe_base64_unpadded_and_wrapped_lines_are_accepted() -> None:
    payload = b"\xfb\xff\xfe" * 10 + b"x"
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    wrapped = encoded[:20] + "\n" + encoded[20:]
    assert decode_data_uri(f"data:image/jpeg;base64,{wrapped}", max_bytes=100)[1] == payload


def test_percent_encoded_form_and_default_mime() -> None:
    assert decode_data_uri("data:,a%20b%FF", max_bytes=10) == ("text/plain", b"a b\xff")


def test_percent_escaped_base64_is_accepted() -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"\xfb\xef\xff").decode().replace("+", "%2B")
    assert decode_data_uri(uri, max_bytes=3)[1] == b"\xfb\xef\xff"


def test_exact_limit_passes_and_one_more_byte_fails() -> None:
    assert len(decode_data_uri("data:;base64," + base64.b64encode(b"x" * 30).decode(), max_bytes=30)[1]) == 30
    with pytest.raises(DataURIError, match="the limit is 30"):
        decode_data_uri("data:;base64," + base64.b64encode(b"x" * 31).decode(), max_bytes=30)
    with pytest.raises(DataURIError, match="the limit is 2"):
        decode_data_uri("data:,abc", max_bytes=2)


def test_size_is_checked_before_decoding() -> None:
    huge = "data:image/png;base64," + "A" * 40_000_000  # would decode to 30 MB
    tracemalloc.start()
    try:
        with pytest.raises(DataURIError, match="30000000 bytes decoded, the limit is 1000"):
            decode_data_uri(huge, max_bytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # nothing the size of the payload was allocated


def test_huge_percent_encoded_payload_is_rejected_before_decoding() -> None:
    huge = "data:," + "%41" * 10_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataURIError, match="too large"):
            decode_data_uri(huge, max_bytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("payload", ["abc$", "ab=c", "a", "!!!!", "aGk=aGk="])
def test_bad_base64_is_rejected(payload: str) -> None:
    with pytest.raises(DataURIError, match="invalid base64"):
        decode_data_uri(f"data:image/png;base64,{payload}", max_bytes=100)


@pytest.mark.parametrize("uri", ["http://x/y.png", "image/png;base64,aGk=", "", "dat:a,b"])
def test_wrong_scheme_is_rejected(uri: str) -> None:
    with pytest.raises(DataURIError, match="not a data URI"):
        decode_data_uri(uri, max_bytes=100)


def test_missing_comma_is_rejected() -> None:
    with pytest.raises(DataURIError, match="no ','"):
        decode_data_uri("data:image/png;base64" + "A" * 5000, max_bytes=10_000)


def test_non_ascii_plain_payload_is_rejected() -> None:
    with pytest.raises(DataURIError, match="non-ASCII"):
        decode_data_uri("data:,h\u00e9", max_bytes=100)


def test_is_a_value_error() -> None:
    assert issubclass(DataURIError, ValueError)
