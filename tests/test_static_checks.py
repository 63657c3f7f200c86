"""The package stays typed (mypy --strict, see pyproject) and lint-clean (ruff), as STYLE.md asks."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_mypy_strict_on_the_package() -> None:
    out = run("mypy", "src/pulid_server")
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", "src", "tests", "bench")
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = run("ruff", "format", "--check", "src", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_public_names() -> None:
    import pulid_server

    assert sorted(pulid_server.__all__) == ["Settings", "__version__"]
