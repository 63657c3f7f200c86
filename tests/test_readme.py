"""The README's commands, run as written against a real server: its shell blocks end with PNGs on disk.

The blocks run in a scratch folder laid out like a checkout where `make serve` runs: `.venv` (this test's
virtual environment) and `./data` (the server's data folder, so `pulid keys create` finds its database).
`PULID_URL` points them at the test server, as the README says it may.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.servers import REPO, Server

README = REPO / "README.md"
# The blocks a user pastes, in order, with `make serve` running. Every other shell block is run elsewhere:
RUN_HERE = ["Use it", "Python client and CLI"]
RUN_ELSEWHERE = {
    "pulid-server": "`make serve` / `make test`: CI runs `make test` on a fresh clone (.ci/run)",
    "Using the official fal clients": "recipe A, in tests/e2e/test_fal_client_tls.py",
}


def readme_blocks() -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced block, in order."""
    blocks: list[tuple[str, str, str]] = []
    heading, fence, code = "", None, []
    for line in README.read_text().splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, code = line[3:].strip(), []
        elif fence is not None and line.rstrip() == "```":
            blocks.append((heading, fence, "".join(code)))
            fence = None
        elif fence is not None:
            code.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def test_every_shell_block_is_run_here_or_elsewhere() -> None:
    sections = {heading for heading, lang, _ in readme_blocks() if lang == "bash"}
    assert sections == {*RUN_HERE, *RUN_ELSEWHERE}


def scratch_checkout(server: Server, folder: Path) -> dict[str, str]:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "pulid").exists(), f"tests must run in the project's virtual environment: {venv}"
    (folder / ".venv").symlink_to(venv)
    (folder / "data").symlink_to(server.data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULID_", "FAL_", "VIRTUAL_ENV"))}
    return {**env, "PULID_URL": server.url}


def test_readme_blocks_run_as_written_and_end_with_pngs(server: Server, tmp_path: Path) -> None:
    env = scratch_checkout(server, tmp_path)
    blocks = readme_blocks()
    script = "\n".join(
        code for heading in RUN_HERE for h, lang, code in blocks if (h, lang) == (heading, "bash")
    )
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    assert "saved out.png" in out.stdout
    pngs = [tmp_path / "out.png", *sorted((tmp_path / "out").glob("*.png"))]
    assert len(pngs) == 2
    for path in pngs:
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (512, 512)), path
    [flux] = (tmp_path / "flux").glob("*.png")  # fal-ai/flux-pulid, returned inline (sync_mode)
    with Image.open(flux) as image:
        assert (image.format, image.size) == ("PNG", (512, 512))
    request = json.loads((tmp_path / "input.json").read_text())
    assert request["reference_images"][0]["image_url"].startswith(f"{server.url}/files/uploads/")
    assert "warning: fal-ai/pulid runs the tiny model" in out.stderr  # the CLI says the images are noise
    assert "nothing to cancel" in out.stderr  # the last line cancels a finished request: not an error

    # The Python example, in the same folder (it reads face.jpg), prints each log line once.
    [python] = [code for h, lang, code in blocks if (h, lang) == ("Python client and CLI", "python")]
    key = subprocess.run(
        [str(tmp_path / ".venv" / "bin" / "pulid"), "keys", "create"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", python],
        cwd=tmp_path, env={**env, "PULID_KEY": key}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    *logs, url = out.stdout.splitlines()
    assert url.startswith(f"{server.url}/files/outputs/")
    assert logs[0].startswith("WARN fal-ai/pulid runs the tiny model") and logs[-1] == "INFO decoding"
    assert "INFO step 4/4" in logs and len(logs) == len(set(logs)), logs
