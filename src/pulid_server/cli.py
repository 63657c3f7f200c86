"""The `pulid` command: run the service (serve, worker), manage keys and weights, and use the API."""

from __future__ import annotations

import asyncio
import copy
import errno
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
from pydantic import ValidationError

from pulid_server.client.cli import register_commands
from pulid_server.config import Settings
from pulid_server.model.cli import weights_app
from pulid_server.policy import KeyPolicy

if TYPE_CHECKING:
    from pulid_server.store import JobStore

app = typer.Typer(help="pulid-server: self-hosted PuLID behind fal's queue API.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Create, list and revoke API keys, and set a key's content policy.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

# Every flag of serve / worker / keys has a PULID_* environment variable (`envvar`, shown by --help); the
# Settings-backed ones are the same variables `Settings` reads. tests/test_docs.py checks both claims.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="PULID_DATA_DIR", help="SQLite database and local files (default: ./data)"
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="PULID_DATABASE_URL",
        help="sqlite:///path or postgresql://... (default: SQLite in the data dir)",
    ),
]
Storage = Annotated[
    str | None,
    typer.Option("--storage", envvar="PULID_STORAGE", help="'local' or s3://bucket/prefix (default: local)"),
]
SafetyModeOpt = Annotated[
    str | None,
    typer.Option(
        "--safety-mode",
        help="This key's safety checker: forced | optional (the request's enable_safety_checker decides) "
        "| off | inherit (PULID_SAFETY_MODE decides)",
    ),
]
SafetyActionOpt = Annotated[
    str | None,
    typer.Option(
        "--safety-action",
        help="What a flagged image becomes for this key: black | blur | fail | inherit (PULID_SAFETY_ACTION)",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="PULID_MODEL",
        help="official | tiny | auto (official when its weights are present, else tiny; default: auto)",
    ),
]


def make_settings(**overrides: Any) -> Settings:
    """Settings from PULID_* env vars, with the CLI flags that were given on top; a bad value is a usage
    error naming the setting (exit 2), not a traceback."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="PULID_HOST", help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PULID_PORT", help="HTTP port")] = 8000,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    storage: Storage = None,
    model: ModelOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            envvar="PULID_WORKERS",
            help="Worker processes per worker group on this machine; 0 = API-only node",
        ),
    ] = 1,
    worker_groups: Annotated[
        str | None,
        typer.Option(
            "--worker-groups",
            envvar="PULID_WORKER_GROUPS",
            help="Which endpoints share a worker process: 'family' (one group per model family, so SDXL and "
            "FLUX never share a process; default), 'one' (all in one process) or explicit groups of "
            "endpoint ids, ';' between groups and ',' within one",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="PULID_TLS_CERT", help="PEM certificate: serve HTTPS (for fal-client's FAL_RUN_HOST)"
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(envvar="PULID_TLS_KEY", help="PEM private key of --tls-cert")
    ] = None,
    tls_port: Annotated[
        int | None,
        typer.Option(
            envvar="PULID_TLS_PORT",
            help="Serve HTTPS on this extra port and plain HTTP on --port (default: HTTPS on --port)",
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            envvar="PULID_ACCESS_LOG",
            help="Log one line per HTTP request on stderr (`make serve` turns it on)",
        ),
    ] = False,
) -> None:
    """Run the API and (unless --workers 0) supervised worker processes: the whole service on one machine.

    Each model family gets its own worker processes (--workers of them) by default: SDXL (fal-ai/pulid) and FLUX (fal-ai/flux-pulid) never load into one process unless --worker-groups says so.
    """
    import uvicorn

    from pulid_server.api.app import create_app
    from pulid_server.api.http_server import guarded_protocol

    settings = make_settings(
        data_dir=data_dir,
        database_url=database_url,
        storage=storage,
        model=model,
        worker_groups=worker_groups,
    )
    if workers > 0:
        _check_worker_groups(settings)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    tls: dict[str, Any] = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    # (port, TLS options, how to change it): bound before anything starts, so a busy port is one clear line
    listeners = [(port, tls if tls_port is None else {}, "--port N (or PULID_PORT=N)")]
    if tls and tls_port is not None:  # a second listener on the same app
        listeners.append((tls_port, tls, "--tls-port N (or PULID_TLS_PORT=N)"))
    sockets = [_listen(host, p, how) for p, _, how in listeners]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api = create_app(settings, workers=workers)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # with every other log line
    common: dict[str, Any] = {
        "log_level": "warning",
        "log_config": log_config,
        "access_log": access_log,
        "timeout_graceful_shutdown": 5,
        "http": guarded_protocol(settings),  # request deadlines, connection cap (api/http_server.py)
    }
    configs = [
        uvicorn.Config(api, host=host, port=p, lifespan="on" if i == 0 else "off", **options, **common)
        for i, (p, options, _) in enumerate(listeners)
    ]  # only the first listener runs the lifespan (store, workers)
    if access_log:  # uvicorn sets its loggers to log_level; its access lines are INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)

    def announce() -> None:
        for config in configs:
            scheme = "https" if config.ssl_certfile else "http"
            typer.echo(f"pulid-server listening on {scheme}://{config.host}:{config.port}", err=True)
        typer.echo(f"database: {describe_database(settings.resolved_database_url())}", err=True)

    # uvloop where uvicorn[standard] brought it (not on Windows), as uvicorn.run would pick it: the event
    # loop's own work is a large share of a short request's time.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_all([uvicorn.Server(c) for c in configs], sockets, announce))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _check_worker_groups(settings: Settings) -> None:
    """Refuse groupings that name unknown endpoints before anything starts (one line, exit 2)."""
    from pulid_server import endpoints
    from pulid_server.api.services.worker_groups import WorkerGroupError, plan_worker_groups

    endpoints.load_builtin_and_extra(settings.extra_endpoints)
    try:
        plan_worker_groups(settings, endpoints.all_endpoints())
    except WorkerGroupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _listen(host: str, port: int, how: str) -> socket.socket:
    """A bound socket for uvicorn, or one line on stderr and exit 1 (no traceback) if the port is taken."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on accepted sockets whose proto says TCP; with
    # Nagle on, a response's body waits ~40 ms for the client's delayed ACK of its head.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use (another pulid serve?): choose another with {how}"
            )
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    return sock


async def _serve_all(servers: list[Any], sockets: list[socket.socket], announce: Callable[[], None]) -> None:
    first, *others = servers
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(others, sockets[1:])]
    announcer = asyncio.create_task(_when_started(servers, announce))
    await first.serve(sockets=sockets[:1])  # owns the lifespan and the signal handlers
    announcer.cancel()
    for s in others:
        s.should_exit = True
    await asyncio.gather(*tasks)


async def _when_started(servers: list[Any], announce: Callable[[], None]) -> None:
    """Say "listening" once every listener accepts connections (the app's start-up is done)."""
    while not all(s.started for s in servers):  # ends with the servers: _serve_all cancels it
        await asyncio.sleep(0.05)
    announce()


def describe_database(url: str) -> str:
    """The database a URL names, for humans: the SQLite file's path, else the URL without its password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    return parsed.render_as_string(hide_password=True)


@app.command()
def worker(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    storage: Storage = None,
    model: ModelOpt = None,
    device: Annotated[
        str | None, typer.Option(envvar="PULID_DEVICE", help="auto | cpu | cuda | cuda:N (default: auto)")
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PULID_WORKER_ENDPOINTS",
            help="Serve only these endpoint ids (repeatable; the env var takes a comma-separated list)",
        ),
    ] = None,
) -> None:
    """Run one worker process (one per GPU) against a shared database and storage."""
    from pulid_server.worker.config import WorkerConfig
    from pulid_server.worker.loop import run

    settings = make_settings(
        data_dir=data_dir,
        database_url=database_url,
        storage=storage,
        model=model,
        device=device,
        worker_endpoints=[e for value in endpoint or [] for e in value.split(",") if e] or None,
    )
    raise typer.Exit(run(WorkerConfig(settings)))


@app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what has expired and how big it is; delete nothing")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    storage: Storage = None,
) -> None:
    """Delete expired data now: finished requests, payloads, output and uploaded files past the PULID_RETAIN_*
    settings (each API node also does this every PULID_PRUNE_EVERY_SECONDS). Safe while servers run."""
    from pulid_server.api.services.pruner import Pruner, PruneReport

    settings = make_settings(data_dir=data_dir, database_url=database_url, storage=storage)
    store, where = _open_store(data_dir, database_url)
    pruner = Pruner(store, settings.blob_store(), settings.retention_policy())
    if dry_run:
        report = pruner.dry_run()
    else:
        report = PruneReport()
        for _ in range(10_000):  # until a pass finds nothing more (bounded)
            done = pruner.run_pass()
            report.add(done)
            if not sum(done.items.values()):
                break
    verb = "would delete" if dry_run else "deleted"
    items = ", ".join(f"{report.items[kind]} {label}" for kind, label in _PRUNE_KINDS)
    typer.echo(f"{verb}: {items} ({where})")
    for prefix in ("outputs", "inputs", "uploads"):
        typer.echo(f"  {prefix}/: {report.files[prefix]} files, {report.bytes[prefix]} bytes")
    if not dry_run and (rows := ", ".join(f"{n} {t}" for t, n in sorted(report.rows.items()) if n)):
        typer.echo(f"  rows: {rows}")


_PRUNE_KINDS = (
    ("job", "finished requests"),
    ("outputs", "requests' outputs"),
    ("payload", "payloads"),
    ("upload", "uploads"),
)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    safety_mode: SafetyModeOpt = None,
    safety_action: SafetyActionOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it (`key_id:secret`) as the only line of stdout. It is shown once.

    It goes into the database `pulid serve` uses with the same --data-dir / --database-url (default:
    ./data/pulid.db in the current folder, which must exist: run it where the server runs).
    """
    policy = _key_policy(safety_mode, safety_action)
    store, where = _open_store(data_dir, database_url)
    key = store.keys.create_key(name, policy)
    typer.echo(key)
    typer.echo(f"created key {key.partition(':')[0]} in {where}", err=True)


@keys_app.command("policy")
def keys_policy(
    key_id: str,
    safety_mode: SafetyModeOpt = None,
    safety_action: SafetyActionOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a key's content policy overrides, or change the ones given (applies to its next jobs)."""
    store, where = _open_store(data_dir, database_url)
    key_id = key_id.partition(":")[0]
    if not any(k["key_id"] == key_id for k in store.keys.list_keys()):
        typer.echo(f"no key {key_id!r} in {where}", err=True)
        raise typer.Exit(1)
    current = store.keys.key_policy(key_id)
    if safety_mode is not None or safety_action is not None:
        current = _key_policy(
            safety_mode or current.safety_mode or "inherit",
            safety_action or current.safety_action or "inherit",
        )
        store.keys.set_key_policy(key_id, current)
    typer.echo(
        f"{key_id} safety_mode={current.safety_mode or 'inherit'} "
        f"safety_action={current.safety_action or 'inherit'}"
    )


def _overrides(mode: str | None, action: str | None) -> str:
    """A key's content policy overrides for `keys list` ("mode, action", e.g. "forced, inherit"), or ""."""
    return f"{mode or 'inherit'}, {action or 'inherit'}" if mode or action else ""


def _key_policy(mode: str | None, action: str | None) -> KeyPolicy:
    try:
        return KeyPolicy.parse(mode, action)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List key ids, names, whether they are revoked, and content policy overrides (never secrets)."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Column, Table

    store, where = _open_store(data_dir, database_url)
    keys = store.keys.list_keys()
    overrides = {k["key_id"]: _overrides(k["safety_mode"], k["safety_action"]) for k in keys}
    columns = ["name", "created", "revoked", *(["safety"] if any(overrides.values()) else [])]
    table = Table(Column("key id", no_wrap=True), *columns, caption=where)  # ids are copied from here
    for k in keys:
        created = datetime.fromtimestamp(k["created_at"], UTC).strftime("%Y-%m-%d %H:%M")
        row = [k["key_id"], k["name"], created, "yes" if k["revoked"] else ""]
        table.add_row(*row, *([overrides[k["key_id"]]] if len(columns) == 4 else []))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a key: requests with it fail with 401 at once."""
    store, where = _open_store(data_dir, database_url)
    if not store.keys.revoke_key(key_id.partition(":")[0]):
        typer.echo(f"no active key {key_id!r} in {where}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id.partition(':')[0]} in {where}", err=True)


def _open_store(data_dir: Path | None, database_url: str | None) -> tuple[JobStore, str]:
    """The job store the server uses (keys, jobs), and a description of it. With neither flag nor env var
    given, the default ./data/pulid.db must already exist: creating a fresh one here would make keys the
    running server never sees (it found its database from its own folder)."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    url = settings.resolved_database_url()
    if data_dir is None and database_url is None and not (settings.data_dir / "pulid.db").exists():
        typer.echo(
            f"error: no pulid-server database at {(settings.data_dir / 'pulid.db').resolve()}. Run this in "
            "the folder where `pulid serve` runs (it uses ./data there), or name the server's database with "
            "--data-dir DIR or --database-url URL (or PULID_DATA_DIR / PULID_DATABASE_URL).",
            err=True,
        )
        raise typer.Exit(2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.job_store(), describe_database(url)


def _flags_show_no_type() -> None:
    """typer 0.2x prints `<bool>` beside every flag in its rich --help, as if a flag took a value."""
    option: Any = typer.core.TyperOption
    shown = getattr(option, "display_type_rich", None)
    if shown is not None:
        option.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


_flags_show_no_type()
app.add_typer(weights_app, name="weights", help="Download and check the official model weights.")
register_commands(app)  # run / submit / status / result / cancel / upload, on pulid_server.client
