"""Every way a request can fail, as fal reports it: `error_type`, HTTP status and message.

The worker and the store record a `Failure` on the job; the result route replays its status, body and
headers; the API answers its own unexpected errors from the same catalogue. 422 field lists (`detail`)
are built here only. Protocol: reference/fal-protocol.md §6.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

FieldError = dict[str, Any]  # {"loc": [...], "msg": ..., "type": ...}, as FastAPI reports a field


@dataclass(frozen=True)
class Failure:
    """How a request ended badly. A 422 carries `field_errors`, which become its body's `detail`."""

    error_type: str
    status: int
    message: str
    field_errors: tuple[FieldError, ...] = ()

    def body(self) -> dict[str, Any]:
        """The result route's JSON: `{"detail": message or field list, "error_type": ...}`."""
        detail: Any = list(self.field_errors) if self.field_errors else self.message
        return {"detail": detail, "error_type": self.error_type}


# error_types of user input that is well-formed but unusable (raised by runners as UserInputError, 422)
VALUE_ERROR = "value_error"
NO_FACE = "no_face"
INVALID_IMAGE = "invalid_image"
# fal's type for input or output refused by a content checker (its Model Errors reference), a 422: here a
# prompt on the operator's blocklist, or a generated image the safety checker flagged when the policy fails
CONTENT_POLICY = "content_policy_violation"

# The API's own refusals are fal's request errors too: `{"detail": message, "error_type": ...}` and the
# X-Fal-Error-Type header (fal's types where it has one: bad_request, client_disconnected, internal_error).
# Only 422s that list fields keep FastAPI's and fal's model-error shape, `{"detail": [...]}`.
STATUS_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    410: "expired",
    413: "payload_too_large",
    422: "validation_error",
    429: "queue_full",
    499: "client_disconnected",
}
RESULT_DELETED = Failure(
    "result_deleted",
    410,
    "The result of this request is no longer stored: it expired, was deleted on request, or was "
    "delivered once (X-Fal-Store-IO: 0)",
)
FILE_EXPIRED = Failure("file_expired", 410, "This file has expired and was deleted")

REQUEST_CANCELLED = Failure("request_cancelled", 400, "Request was cancelled")
REQUEST_TIMEOUT = Failure("request_timeout", 504, "Request timed out before it started")
WORKER_CRASHED = Failure("worker_crashed", 503, "The worker died while running this request")
GPU_OOM = Failure("gpu_oom", 503, "Out of GPU memory")
INTERNAL_ERROR = Failure("internal_error", 500, "Internal server error")
STORAGE_FULL = Failure("storage_full", 507, "The server is out of storage space; try again later")


def request_error(status: int, message: str) -> Failure:
    """One of the API's own refusals (a 4xx, or a 5xx of its own), typed by its status."""
    fallback = INTERNAL_ERROR.error_type if status >= 500 else "bad_request"
    return Failure(STATUS_ERROR_TYPES.get(status, fallback), status, message)


def model_error(exc: BaseException) -> Failure:
    """Any other exception of a runner: the job fails, the worker goes on. An OSError is told by its
    reason alone: its file name is a path on the server."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Failure("internal_error", 500, f"Model error: {type(exc).__name__}: {detail}")


def is_storage_full(exc: BaseException) -> bool:
    """Whether a write failed for lack of space: a full disk or quota (ENOSPC, EDQUOT), SQLite's
    SQLITE_FULL, PostgreSQL's disk_full (53100). Follows the causes that SQLAlchemy and others wrap."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if (
            getattr(seen, "sqlite_errorname", None) == "SQLITE_FULL"
            or getattr(seen, "sqlstate", None) == "53100"
        ):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


def user_input(message: str, loc: Sequence[str | int], error_type: str) -> Failure:
    """Inputs that validated but cannot be used (no face, not an image...), blamed on the field at `loc`.
    The request's error names the field once ("reference_images[0].image_url: no face found"); its field
    error does not repeat it, since clients print `loc` beside `msg`."""
    path = field_path(loc)
    summary = f"{path}: {message}" if path else message
    return Failure(error_type, 422, summary, (field_error(loc, message, error_type),))


def field_path(loc: Sequence[str | int]) -> str:
    """("body", "reference_images", 0, "image_url") -> "reference_images[0].image_url"."""
    parts = list(loc)[1:] if list(loc)[:1] == ["body"] else list(loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def invalid_input(exc: ValidationError) -> Failure:
    """Inputs that fail their endpoint's model when the worker validates them again."""
    return Failure("validation_error", 422, "Invalid input", tuple(validation_errors(exc)))


def field_error(loc: Sequence[str | int], msg: str, error_type: str) -> FieldError:
    """One entry of a 422 `detail` list; `loc` starts with where the field is (body, query, header)."""
    return {"loc": list(loc), "msg": msg, "type": error_type}


def validation_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic's errors on a request body as FastAPI's 422 `detail` list."""
    return [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False, include_context=False)]


def request_errors(errors: Iterable[dict[str, Any]]) -> list[FieldError]:
    """FastAPI's errors on a request as a 422 `detail` list that always encodes: the caller's input is not
    echoed (it may be megabytes, or a number JSON cannot write), only where and why it failed."""
    out = []
    for e in errors:
        msg, reason = str(e.get("msg", "")), (e.get("ctx") or {}).get("error")
        if isinstance(reason, str):  # e.g. json_invalid: "JSON decode error: NaN is not a JSON number"
            msg = f"{msg}: {reason}"
        out.append(field_error([_text(p) for p in e.get("loc", ())], _text(msg), str(e.get("type", ""))))
    return out


def _text(value: Any) -> Any:
    """Strings with what UTF-8 cannot hold (lone surrogates) written as escapes; other values as they are."""
    return value.encode("utf-8", "backslashreplace").decode() if isinstance(value, str) else value


def error_headers(error_type: str | None) -> dict[str, str]:
    """The headers of an error response: fal's clients read the type from `X-Fal-Error-Type`."""
    headers = {"X-Fal-Error-Type": error_type or INTERNAL_ERROR.error_type}
    if error_type == REQUEST_TIMEOUT.error_type:
        headers["X-Fal-Request-Timeout-Type"] = "user"  # the caller's X-Fal-Request-Timeout ran out
    return headers
