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
    from pulid_server.model.weights import FACEXLIB, OFFICIAL_FILES

    for f in OFFICIAL_FILES:
        path = tmp_path / (FACEXLIB if f.url else f.repo) / f.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    result = CliRunner().invoke(weights_app, ["check", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "all official weight files present" in result.output
