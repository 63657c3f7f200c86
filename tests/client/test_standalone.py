"""The client needs httpx only: it imports and works where none of the server's packages can be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.servers import REPO, Server

# Everything the server, the worker, the model or the `pulid` CLI import, and the client must not.
SERVER_ONLY = [
    "boto3",
    "cryptography",
    "diffusers",
    "fastapi",
    "numpy",
    "onnxruntime",
    "PIL",
    "prometheus_client",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "rich",
    "sqlalchemy",
    "starlette",
    "torch",
    "transformers",
    "typer",
    "uvicorn",
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed here")
            return None

    BLOCKED = set(sys.argv[1].split(","))
    sys.meta_path.insert(0, Blocked())
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} could still be imported")

    from pulid_server.client import AsyncClient, RequestFailed, SyncClient

    out = {}
    with SyncClient() as client:  # PULID_URL and PULID_KEY from the environment
        url = client.upload(b"plain bytes", "text/plain", "note.txt")
        out["uploaded"] = client.download(url).decode()
        out["sync"] = client.subscribe("test/echo", {"value": "sync"}, client_timeout=60)["value"]
        try:
            client.subscribe("test/fail", {"kind": "user"}, client_timeout=60)
        except RequestFailed as exc:
            out["failed"] = [exc.error_type, exc.status_code, exc.field_errors[0]["loc"]]

    async def run_async():
        async with AsyncClient() as client:
            handle = await client.submit("test/echo", {"value": "async"})
            return (await handle.get(timeout=60))["value"]

    out["async"] = asyncio.run(run_async())
    out["server_modules"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print(json.dumps(out))
    """
)


def test_client_works_without_the_server_packages(server: Server) -> None:
    env = {**os.environ, "PULID_URL": server.url, "PULID_KEY": server.key, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(SERVER_ONLY)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["uploaded"] == "plain bytes"
    assert (out["sync"], out["async"]) == ("sync", "async")
    assert out["failed"] == ["no_face", 422, ["body", "reference_images", 0, "image_url"]]
    assert out["server_modules"] == []
