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


def _touch(tmp_path: Path, files: object) -> None:
    from pulid_server.model.common.weights import FACEXLIB

    for f in files:  # type: ignore[attr-defined]
        path = tmp_path / (FACEXLIB if f.url else f.repo) / f.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_flux_check_lists_the_gated_repo_and_says_how_to_log_in(tmp_path: Path) -> None:
    result = CliRunner().invoke(weights_app, ["check", "--family", "flux", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "MISSING black-forest-labs/FLUX.1-dev/transformer/config.json" in result.output
    assert "MISSING guozinan/PuLID/pulid_flux_v0.9.1.safetensors" in result.output
    help_text = CliRunner().invoke(weights_app, ["--help"]).output
    assert "gated" in help_text and "HF_TOKEN" in help_text


def test_flux_check_accepts_either_layout(tmp_path: Path) -> None:
    from pulid_server.model.flux.files import FLUX_FILES, FLUX_SINGLE_FILES
    from pulid_server.model.flux.presets import official_layout

    _touch(tmp_path, FLUX_SINGLE_FILES)
    result = CliRunner().invoke(weights_app, ["check", "--family", "flux", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "alternative layout" in result.output and "flux1-dev.safetensors" in result.output
    assert official_layout(tmp_path) == "single_file"
    _touch(tmp_path, FLUX_FILES)
    assert official_layout(tmp_path) == "diffusers"
