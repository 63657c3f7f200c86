from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pulid_server.model.cli import weights_app


def test_check_lists_missing_files_and_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(weights_app, ["check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "MISSING ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors" in result.output
    assert "pulid weights download" in result.output


def test_check_passes_when_every_file_is_there(tmp_path: Path) -> None:
    from pulid_server.model.common.weights import FACEXLIB
    from pulid_server.model.sdxl.files import SDXL_FILES

    for f in SDXL_FILES:
        path = tmp_path / (FACEXLIB if f.url else f.repo) / f.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    result = CliRunner().invoke(weights_app, ["check", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "all official weight files present" in result.output


def test_unknown_family_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(weights_app, ["check", "--family", "nope", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown family 'nope'" in result.output


def test_family_tables_load_without_torch() -> None:
    """`pulid weights check` and the API process list families and files; neither may import torch."""
    import subprocess
    import sys

    code = (
        "import sys; from pulid_server.model import FAMILIES; "
        "assert all(f.files() for f in FAMILIES.values()); "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
