"""fal's platform headers on a submit or a run, parsed (what each does: docs/fal-platform.md).

A bad value is a 422 naming the header, like a bad field; headers that are absent change nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import HTTPException

from pulid_server import failures
from pulid_server.config import Settings

LIFECYCLE_EXAMPLE = '{"expiration_duration_seconds": 3600}'
MAX_HINT_LENGTH = 200


@dataclass(frozen=True)
class PlatformOptions:
    """runner_hint: X-Fal-Runner-Hint. no_retry: x-fal-no-retry. store_io: False for X-Fal-Store-IO: 0.
    output_lifetime: seconds the outputs are kept (X-Fal-Object-Lifecycle-Preference, capped by the
    node's retain_files_max; math.inf: forever; None: the node's retain_outputs)."""

    runner_hint: str | None = None
    no_retry: bool = False
    store_io: bool = True
    output_lifetime: float | None = None


def platform_options(headers: Mapping[str, str], settings: Settings) -> PlatformOptions:
    lifecycle = "x-fal-object-lifecycle-preference"
    return PlatformOptions(
        runner_hint=parse_runner_hint(headers.get("x-fal-runner-hint")),
        no_retry=(headers.get("x-fal-no-retry") or "").lower() in ("1", "true", "yes"),
        store_io=parse_store_io(headers.get("x-fal-store-io")),
        output_lifetime=settings.file_lifetime(parse_lifecycle(headers.get(lifecycle), lifecycle)),
    )


def header_error(header: str, message: str) -> HTTPException:
    return HTTPException(422, [failures.field_error(("header", header), message, "value_error")])


def parse_lifecycle(value: str | None, header: str) -> float | None:
    """X-Fal-Object-Lifecycle(-Preference): `{"expiration_duration_seconds": N}` keeps the files N seconds;
    null or 0 keeps them for good (fal's storage reads both as "no expiration"); without the field (or
    the header) the node's retention applies: None. `initial_acl` is ignored (our file URLs are the
    capability)."""
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise header_error(header, f"must be a JSON object such as {LIFECYCLE_EXAMPLE}")
    if "expiration_duration_seconds" not in data:
        return None
    seconds = data["expiration_duration_seconds"]
    if seconds is None or (seconds == 0 and not isinstance(seconds, bool)):
        return math.inf
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
        raise header_error(header, "expiration_duration_seconds must be a number of seconds, or null")
    return float(seconds)


def parse_store_io(value: str | None) -> bool:
    """X-Fal-Store-IO: `0` keeps no payload once the result has been delivered."""
    if value is None or value.strip().lower() in ("1", "true", "yes"):
        return True
    if value.strip().lower() in ("0", "false", "no"):
        return False
    raise header_error("x-fal-store-io", "must be 0 (keep no payload once delivered) or 1")


def parse_runner_hint(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_HINT_LENGTH:
        raise header_error("x-fal-runner-hint", f"must be at most {MAX_HINT_LENGTH} characters")
    return value or None
