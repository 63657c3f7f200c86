"""Request bodies read as strict JSON (RFC 8259), so that every body a route accepts can be stored and echoed.

Python's parser also takes `NaN`, `Infinity`, numbers too large for a float (`1e400` becomes inf) and
strings with lone surrogates (`"\\ud800"`), none of which JSON or UTF-8 can write back: a job's input
could not be stored, nor a 422 that echoes it sent. Here each is a 422 `json_invalid` naming the problem,
as is a body nested too deeply for the parser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def loads_strict(data: bytes) -> Any:
    """Parse `data` as strict JSON; json.JSONDecodeError otherwise (FastAPI answers it with a 422)."""
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("JSON is nested too deeply", "", 0) from None
    except ValueError as exc:  # a number out of range, an integer of too many digits, bad UTF-8
        raise json.JSONDecodeError(str(exc), "", 0) from None
    _check_strings(value)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_strings(value: Any) -> None:
    """Every string (keys too) must be encodable as UTF-8: JSON's `\\udXXX` escapes can name half a pair."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise json.JSONDecodeError(
                        "string holds a lone surrogate (\\ud800-\\udfff)", "", 0
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
