"""The `pulid` command: run the service (serve, worker), manage keys and weights, and use the API."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pulid_server.client.cli import register_commands
from pulid_server.config import Settings
from pulid_server.model.cli import weights_app

if TYPE_CHECKING:
    from pulid_server.store import JobStore

app = typer.Typer(help="pulid-server: self-hosted PuLID behind fal's queue API.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="SQLite database and local files (default: ./data)")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="sqlite:///path or postgresql://... (default: SQLite in the data dir)"
    ),
]
Storage = Annotated[
    str | None, typer.Option("--storage", help="'local' or s3://bucket/prefix (default: local)")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="official | tiny | auto (official when its weights are present, else tiny)"),
]


def make_settings(**overrides: Any) -> Settings:
    """Settings from PULID_* env vars, with the CLI flags that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    storage: Storage = None,
    model: ModelOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine; 0 = API-only node")] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: serve HTTPS (for fal-client's FAL_RUN_HOST)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    tls_port: Annotated[
        int | None,
        typer.Option(
            help="Serve HTTPS on this extra port and plain HTTP on --port (default: HTTPS on --port)"
        ),
    ] = None,
) -> None:
    """Run the API and (unless --workers 0) supervised worker processes: the whole service on one machine."""
    import uvicorn

    from pulid_server.api.app import create_app

    settings = make_settings(data_dir=data_dir, database_url=database_url, storage=storage, model=model)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api = create_app(settings, workers=workers)
    tls: dict[str, Any] = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    common: dict[str, Any] = {"log_level": "warning", "timeout_graceful_shutdown": 5}
    if tls and tls_port is None:
        configs = [uvicorn.Config(api, host=host, port=port, **tls, **common)]
    else:
        configs = [uvicorn.Config(api, host=host, port=port, **common)]
        if (
            tls and tls_port is not None
        ):  # second listener on the same app; only the first one runs the lifespan
            configs.append(uvicorn.Config(api, host=host, port=tls_port, lifespan="off", **tls, **common))
    for config in configs:
        scheme = "https" if config.ssl_certfile else "http"
        typer.echo(f"pulid-server listening on {scheme}://{config.host}:{config.port}", err=True)
    asyncio.run(_serve_all([uvicorn.Server(c) for c in configs]))


async def _serve_all(servers: list[Any]) -> None:
    first, *others = servers
    tasks = [asyncio.create_task(s.serve()) for s in others]
    await first.serve()  # owns the lifespan and the signal handlers
    for s in others:
        s.should_exit = True
    await asyncio.gather(*tasks)


@app.command()
def worker(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    storage: Storage = None,
    model: ModelOpt = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            help="Serve only these endpoint ids (repeatable; env PULID_WORKER_ENDPOINTS, comma-separated)"
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
        worker_endpoints=endpoint or None,
    )
    raise typer.Exit(run(WorkerConfig(settings)))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it (`key_id:secret`) as the only line of stdout. It is shown once."""
    store = _store(data_dir, database_url)
    typer.echo(store.keys.create_key(name))


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List key ids, names and whether they are revoked (never secrets)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("key id", "name", "created", "revoked")
    for k in _store(data_dir, database_url).keys.list_keys():
        from datetime import UTC, datetime

        created = datetime.fromtimestamp(k["created_at"], UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(k["key_id"], k["name"], created, "yes" if k["revoked"] else "")
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a key: requests with it fail with 401 at once."""
    if not _store(data_dir, database_url).keys.revoke_key(key_id.partition(":")[0]):
        typer.echo(f"no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id.partition(':')[0]}", err=True)


def _store(data_dir: Path | None, database_url: str | None) -> JobStore:
    from pulid_server.store import open_job_store

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_job_store(settings.resolved_database_url())


app.add_typer(weights_app, name="weights", help="Download and check the official model weights.")
register_commands(app)  # run / submit / status / result / cancel / upload, on pulid_server.client
