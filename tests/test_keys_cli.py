"""`pulid keys create/policy/list`: a key's content policy overrides, from the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pulid_server.cli import app
from pulid_server.policy import KeyPolicy
from pulid_server.store import SqlJobStore


def keys(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["keys", *args, "--data-dir", str(tmp_path)], terminal_width=200)
    return result.exit_code, result.output


def test_create_with_overrides_then_change_them(tmp_path: Path) -> None:
    code, out = keys(
        tmp_path, "create", "--name", "partner", "--safety-mode", "forced", "--safety-action", "blur"
    )
    assert code == 0
    key_id = out.strip().partition(":")[0]
    assert keys(tmp_path, "policy", key_id) == (0, f"{key_id} safety_mode=forced safety_action=blur\n")
    assert keys(tmp_path, "policy", out.strip(), "--safety-action", "fail")[0] == 0  # key_id:secret works too
    code, out = keys(tmp_path, "policy", key_id, "--safety-mode", "inherit")
    assert (code, out) == (0, f"{key_id} safety_mode=inherit safety_action=fail\n")
    store = SqlJobStore(f"sqlite:///{tmp_path / 'pulid.db'}")
    try:
        assert store.keys.key_policy(key_id) == KeyPolicy(None, "fail")
    finally:
        store.close()
    code, listing = keys(tmp_path, "list")
    assert code == 0 and "partner" in listing and "inherit" in listing and "fail" in listing


def test_bad_values_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    code, out = keys(tmp_path, "create", "--safety-mode", "always")
    assert code == 2 and "safety_mode must be one of forced | optional | off | inherit" in out
    code, out = keys(tmp_path, "policy", "nope", "--safety-action", "black")
    assert code == 1 and "no key 'nope'" in out
