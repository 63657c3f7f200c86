"""SyncClient and AsyncClient are twins: the same public methods with the same parameters (only `await`
and the sync/async types differ), and so are their request handles."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from pulid_server.client import AsyncClient, AsyncRequestHandle, SyncClient, SyncRequestHandle

# The only differences allowed in annotations, spelled as the sync side spells them (replaced in order).
ASYNC_TO_SYNC = {
    "httpx.AsyncClient": "httpx.Client",
    "AsyncClient": "SyncClient",
    "AsyncRequestHandle": "SyncRequestHandle",
    "AsyncIterator": "Iterator",
}


def _sync_spelling(annotation: Any) -> str:
    text = str(annotation)
    for async_name, sync_name in ASYNC_TO_SYNC.items():
        text = text.replace(async_name, sync_name)
    return text


def surface(cls: type) -> dict[str, list[tuple[str, Any, Any, str]]]:
    """Public methods (and the constructor) -> [(name, kind, default, annotation)] of each parameter,
    the return annotation last."""
    methods = {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    }
    out = {}
    for name, fn in methods.items():
        sig = inspect.signature(fn)
        params = [(p.name, p.kind, p.default, _sync_spelling(p.annotation)) for p in sig.parameters.values()]
        out[name] = [*params, ("return", None, None, _sync_spelling(sig.return_annotation))]
    return out


@pytest.mark.parametrize(
    ("sync", "aio"), [(SyncClient, AsyncClient), (SyncRequestHandle, AsyncRequestHandle)]
)
def test_same_methods_with_the_same_parameters(sync: type, aio: type) -> None:
    sync_surface, async_surface = surface(sync), surface(aio)
    assert sorted(sync_surface) == sorted(async_surface)
    for name, params in sync_surface.items():
        assert async_surface[name] == params, name


def test_the_async_twins_await() -> None:
    """Every method that does I/O is a coroutine (or an async iterator) on the async side."""
    local = {"__init__", "get_handle"}  # build objects, no I/O
    for cls in (AsyncClient, AsyncRequestHandle):
        for name, params in surface(cls).items():
            fn = getattr(cls, name)
            if name in local:
                assert not inspect.iscoroutinefunction(fn), name
            else:
                assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), (cls, name, params)
