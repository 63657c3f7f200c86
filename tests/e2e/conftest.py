"""Fixtures for the official-client tests: one server with HTTP + HTTPS ports, the reference face, and the
npm project (installed with `npm ci` on first use, so a fresh clone works)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import JsRunner, TlsServer, astronaut_png, write_self_signed_cert
from tests.fixtures import safety

JS_DIR = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def fal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """`pulid serve` with plain HTTP on `.port` and HTTPS (self-signed, IP:127.0.0.1) on `.tls_port`, and
    the tiny safety checker (so every fal-ai/pulid output carries `has_nsfw_concepts`), pruning often."""
    folder = tmp_path_factory.mktemp("fal-server")
    cert, key = write_self_signed_cert(folder)
    env = {**safety.SERVER_ENV, "PULID_PRUNE_EVERY_SECONDS": "0.5"}  # X-Fal-Store-IO results go at once
    srv = TlsServer(folder / "data", env=env, cert=cert, tls_key=key).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def face_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("face") / "astronaut.png"
    path.write_bytes(astronaut_png())
    return path


@pytest.fixture(scope="session")
def js_project() -> Path:
    """tests/e2e/js with its pinned node_modules (`npm ci` from package-lock.json when missing)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node >= 20 and npm are needed for the @fal-ai/client tests"
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists():
        out = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            check=False,
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, f"npm ci failed:\n{out.stdout}\n{out.stderr}"
    return JS_DIR


@pytest.fixture(scope="session")
def run_js(js_project: Path, fal_server: TlsServer) -> JsRunner:
    """run_js(case, route, **args): run one case of js/cases.mjs with @fal-ai/client pointed at the server
    through `route` ("proxy": proxyUrl, "fetch": a custom fetch), and return the JSON it prints."""

    def run(case: str, route: str, **args: Any) -> Any:
        env = {**os.environ, "PULID_URL": fal_server.url, "FAL_KEY": fal_server.key, "FAL_ROUTE": route}
        out = subprocess.run(
            ["node", "cases.mjs", case, json.dumps(args)],
            check=False, cwd=js_project, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, f"node cases.mjs {case} ({route}) failed:\n{out.stdout}\n{out.stderr}"
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run
