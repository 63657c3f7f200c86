"""What README.md and docs/ claim about the CLI and configuration is true: every `pulid ...` flag they show
exists on that command, every PULID_* variable they name is read, every serve / worker flag has its
PULID_* variable, and every repository file they cite is there."""

from __future__ import annotations

import re

import click
import pytest
import typer.main

from pulid_server import endpoints
from pulid_server.cli import app
from pulid_server.client._core import resolve_key, resolve_url
from pulid_server.config import Settings
from tests.servers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INVOCATION = re.compile(r"(?:(?<![\w/-])|(?<=bin/))pulid((?:\s+[a-z]+)+)([^;|&#)`\n]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*\*?")  # `--tls-*` stands for several
CITED_PATH = re.compile(r"`((?:src|docs|tests|scripts|bench|reference|\.ci)/[\w./-]*\w)`")


def commands() -> dict[str, click.Command]:
    """Every `pulid` command by its words ("serve", "keys create", ...)."""
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, words: str) -> None:
        found[words] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{words} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def flags(command: click.Command) -> set[str]:
    return {"--help", *(o for p in command.params for o in [*p.opts, *p.secondary_opts])}


def endpoint_flags(invocation: str) -> set[str]:
    """`pulid run ENDPOINT` also takes ENDPOINT's input fields as options (`--name`, `--no-name`)."""
    endpoints.load_builtin_and_extra([])
    ids = [e.id for e in endpoints.all_endpoints() if e.id in invocation.split()]
    fields = [n for e in ids for n in endpoints.get(e).input_model.model_fields]  # type: ignore[union-attr]
    return {f"--{prefix}{n.replace('_', '-')}" for n in fields for prefix in ("", "no-")}


def doc_text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def test_every_flag_shown_in_a_pulid_command_exists() -> None:
    known = commands()
    checked = 0
    for match in INVOCATION.finditer(doc_text()):
        words = match.group(1).split()
        while words and " ".join(words) not in known:  # "pulid run fal-ai/pulid": run, then arguments
            words.pop()
        assert words, f"no such command: pulid{match.group(1)}"
        command = " ".join(words)
        known_flags = flags(known[command]) | (endpoint_flags(match.group(0)) if command == "run" else set())
        for flag in FLAG.findall(match.group(0)):
            exists = (
                any(f.startswith(flag[:-1]) for f in known_flags)
                if flag.endswith("*")
                else (flag in known_flags)
            )
            assert exists, f"`pulid {command}` has no {flag}: {match.group(0)!r}"
            checked += 1
    assert checked > 20


def test_every_flag_named_alone_exists_on_some_command() -> None:
    every = set().union(
        *(flags(c) for c in commands().values()), endpoint_flags("fal-ai/pulid fal-ai/flux-pulid")
    )
    for path in (REPO / "README.md", REPO / "docs" / "deployment.md", REPO / "docs" / "model.md"):
        for span in re.findall(r"`(--[^`]*)`", path.read_text()):
            assert span.split()[0] in every, f"{path.name}: `{span}` is no pulid flag"


def test_every_pulid_variable_the_docs_name_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read = {f"PULID_{name.upper()}" for name in Settings.model_fields}
    read |= {p.envvar for c in commands().values() for p in c.params if isinstance(p.envvar, str)}
    monkeypatch.setenv("PULID_URL", "http://docs.example:1")
    monkeypatch.setenv("PULID_KEY", "id:secret")
    assert (resolve_url(None), resolve_key(None)) == ("http://docs.example:1", "id:secret")
    read |= {"PULID_URL", "PULID_KEY"}
    named = set(re.findall(r"PULID_[A-Z0-9_]+\*?", doc_text())) - {"PULID_*"}
    assert len(named) > 20
    for name in named:
        if name.endswith("*"):
            assert any(v.startswith(name[:-1]) for v in read), name
        else:
            assert name in read, f"the docs name {name}, which nothing reads"


def test_every_serve_and_worker_flag_has_its_pulid_variable() -> None:
    """Node configuration: every serve / worker option, and where `keys` commands find the database. (Key
    properties such as `keys create --safety-mode` have none on purpose: a variable left in a shell would
    silently change every key made there.)"""
    known = commands()
    options = [
        *(p for c in ("serve", "worker") for p in known[c].params),
        *(p for p in known["keys create"].params if p.name in ("data_dir", "database_url")),
    ]
    # typer vendors click: its options are not `click.Option` instances, so ask the parameter itself.
    options = [p for p in options if p.param_type_name == "option"]
    assert len(options) >= 15  # the filter keeps typer's options
    for param in options:
        assert isinstance(param.envvar, str) and param.envvar.startswith("PULID_"), param.name
        assert getattr(param, "show_envvar", False) or "env var" in (getattr(param, "help", "") or ""), (
            param.name
        )
    assert known["serve"].params[1].envvar == "PULID_PORT"


def test_cited_repository_files_exist() -> None:
    for path in DOCS:
        for cited in CITED_PATH.findall(path.read_text()):
            assert (REPO / cited).exists(), f"{path.name} cites {cited}, which is not in the repository"
        for link in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", path.read_text()):
            assert (path.parent / link).exists(), f"{path.name} links to {link}, which does not exist"
