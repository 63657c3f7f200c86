"""User-facing commands on the Python client: run, submit, status, result, cancel, upload.

Registered on the main `pulid` app by `register_commands` (called from pulid_server/cli.py).
Human output goes to stderr; stdout carries only what scripts need (paths, ids, URLs, or --json).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, Self

import typer
import typer.core
from rich.markup import escape

from pulid_server.client._core import Retry, RetryPolicy
from pulid_server.client.errors import (
    PulidConnectionError,
    PulidHTTPError,
    PulidTimeoutError,
    RequestFailed,
    format_field_error,
    http_error,
)
from pulid_server.client.fields import FieldArgError, input_fields, parse_field_args, published_endpoints
from pulid_server.client.status import Completed, InProgress, Queued, Status
from pulid_server.client.sync import SyncClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_TIMEOUT, EXIT_CONNECTION, EXIT_BUSY = range(7)
EPILOG = (
    "Exit codes: 0 ok, 1 request failed (error in its result), 2 usage or validation error "
    "(422: the field errors are printed), 3 cancelled, 4 timed out, 5 connection or auth problem, "
    "6 server busy (HTTP 429 through every retry: try again later)."
)
DEFAULT_ENDPOINT = "fal-ai/pulid"
RUN_HELP = (
    "Run an endpoint; show the queue and progress live; save the images into --out and print their "
    "paths, one per line.\n\n"
    "Every input field of the endpoint is an option named after it (num_inference_steps: "
    "--num-inference-steps), typed by the endpoint's schema on the server's /openapi.json: "
    "`pulid run ENDPOINT --help` lists them. Booleans: --sync-mode, --no-sync-mode or --sync-mode false; "
    "--image-size: a preset or WxH (768x1024); image URL fields: a local file (uploaded) or a URL; "
    "other values: JSON. Example: pulid run fal-ai/flux-pulid --prompt 'a portrait' --ref face.jpg "
    "--max-sequence-length 256"
)
# `pulid run`: the endpoint's input fields arrive as options typer does not know; fields.py parses them.
FIELD_OPTIONS = {"allow_extra_args": True, "ignore_unknown_options": True}
VALUE_LABELS = {"images": "FILE|URL (repeat it)", "url": "FILE|URL", "bool": "(none) | true | false"}
OWN_VALUE_OPTIONS = ("--ref", "--input", "--out", "--url", "--key", "--timeout")
POLL_INTERVAL = 0.25

Url = Annotated[
    str | None, typer.Option("--url", help="Server URL (default: env PULID_URL, else http://127.0.0.1:8000)")
]
Key = Annotated[
    str | None, typer.Option("--key", help="API key key_id:secret (default: env PULID_KEY, else FAL_KEY)")
]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (errors too), for scripts")
]
EndpointOpt = Annotated[
    str, typer.Option("--endpoint", help="Endpoint id the request was submitted to (owner/alias)")
]
Timeout = Annotated[float, typer.Option("--timeout", help="Give up after this many seconds (exit 4)")]


def register_commands(app: typer.Typer) -> None:
    """Add run, submit, status, result, cancel and upload to the `pulid` app."""
    app.command("run", help=RUN_HELP, epilog=EPILOG, cls=_RunCommand, context_settings=FIELD_OPTIONS)(
        run_command
    )
    app.command("submit", epilog=EPILOG)(submit_command)
    app.command("status", epilog=EPILOG)(status_command)
    app.command("result", epilog=EPILOG)(result_command)
    app.command("cancel", epilog=EPILOG)(cancel_command)
    app.command("upload", epilog=EPILOG)(upload_command)


# -- commands ----------------------------------------------------------------------------------------------


def run_command(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="Endpoint id, e.g. fal-ai/pulid or fal-ai/flux-pulid")],
    ref: Annotated[
        list[str] | None,
        typer.Option(
            "--ref",
            help="Reference image for the endpoint's image field: a local file (uploaded) or a URL; "
            "repeat for a list (fal-ai/pulid takes up to 4)",
        ),
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Input as JSON, or @file.json; field options override it")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to save the images into")] = Path("."),
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
    timeout: Timeout = 600.0,
) -> None:
    """Run an endpoint with its input fields as options (RUN_HELP)."""
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        arguments = _parse_input(input) if input is not None else {}
        arguments.update(_field_arguments(client, endpoint, ctx.args, ref or [], json_out))
        request_id, output = _follow(client, endpoint, arguments, timeout)
        paths = _save_images(client, output, out, request_id)
        if json_out:
            _print_json({"request_id": request_id, "output": output, "files": [str(p) for p in paths]})
        else:
            for path in paths:
                typer.echo(str(path))


def submit_command(
    endpoint: Annotated[str, typer.Argument(help="Endpoint id, e.g. fal-ai/pulid")],
    input: Annotated[str, typer.Option("--input", help="Input as JSON, or @file.json")] = "{}",
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="URL to POST the result to when done")
    ] = None,
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
) -> None:
    """Queue a request and print its request id (with --json: the id and its URLs)."""
    arguments = _parse_input(input)
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        handle = client.submit(endpoint, arguments, webhook_url=webhook)
        if json_out:
            _print_json(
                {
                    "request_id": handle.request_id,
                    "status_url": handle.status_url,
                    "response_url": handle.response_url,
                    "cancel_url": handle.cancel_url,
                }
            )
        else:
            typer.echo(handle.request_id)


def status_command(
    request_id: Annotated[str, typer.Argument(help="Request id")],
    endpoint: EndpointOpt = DEFAULT_ENDPOINT,
    logs: Annotated[bool, typer.Option("--logs", help="Include the request's log lines")] = False,
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
) -> None:
    """Print a request's state: IN_QUEUE (with position), IN_PROGRESS or COMPLETED (with any error)."""
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        status = client.status(endpoint, request_id, with_logs=logs)
        if json_out:
            _print_json({"request_id": request_id, **_status_dict(status)})
            return
        typer.echo(_status_line(status))
        for line in getattr(status, "logs", None) or []:
            typer.echo(f"  {line.get('timestamp', '')} {line.get('level', '')} {line.get('message', '')}")


def result_command(
    request_id: Annotated[str, typer.Argument(help="Request id")],
    endpoint: EndpointOpt = DEFAULT_ENDPOINT,
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
    timeout: Timeout = 600.0,
) -> None:
    """Wait for a request to complete and print its output JSON."""
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        output = client.result(endpoint, request_id, timeout=timeout)
        _print_json(output, indent=None if json_out else 2)


def cancel_command(
    request_id: Annotated[str, typer.Argument(help="Request id")],
    endpoint: EndpointOpt = DEFAULT_ENDPOINT,
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
) -> None:
    """Cancel a queued or running request (it then completes with error_type request_cancelled).

    A request that has already completed is left as it is (exit 0, status ALREADY_COMPLETED).
    """
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        status = "CANCELLATION_REQUESTED"
        try:
            client.cancel(endpoint, request_id)
        except PulidHTTPError as exc:
            if exc.status_code != 400 or exc.message != "ALREADY_COMPLETED":
                raise
            status = "ALREADY_COMPLETED"
        if json_out:
            _print_json({"request_id": request_id, "status": status})
        elif status == "ALREADY_COMPLETED":
            typer.echo(f"request {request_id} has already completed: nothing to cancel", err=True)
        else:
            typer.echo(f"cancellation requested: {request_id}", err=True)


def upload_command(
    file: Annotated[Path, typer.Argument(help="File to upload", exists=True, dir_okay=False, readable=True)],
    url: Url = None,
    key: Key = None,
    json_out: JsonOut = False,
) -> None:
    """Upload a file to the server and print its URL (usable as an input image URL)."""
    with _client(url, key) as client, _exit_codes(json_out, client.key):
        file_url = client.upload_file(file)
        if json_out:
            _print_json({"url": file_url})
        else:
            typer.echo(file_url)


class _RunCommand(typer.core.TyperCommand):
    """`pulid run ENDPOINT --help` also lists ENDPOINT's input fields, read from the server's schema."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click.Context
        ctx.meta["pulid.run.argv"] = list(args)  # --help exits while parsing, before ENDPOINT is a param
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        argv: list[str] = ctx.meta.get("pulid.run.argv", [])
        # ENDPOINT: the first word that is not an option nor the value of one of ours
        words = [
            a for i, a in enumerate(argv) if a[:1] != "-" and (i == 0 or argv[i - 1] not in OWN_VALUE_OPTIONS)
        ]
        if words:
            given = argv[argv.index("--url") + 1] if "--url" in argv[:-1] else None
            _print_fields(words[0], given)


def _print_fields(endpoint: str, url: str | None) -> None:
    """The endpoint's fields as options, one block each: `--name VALUE [default: ...]`, then what it is."""
    try:
        with _client(url, None) as client:
            found = input_fields(_openapi(client), endpoint)
    except (PulidHTTPError, PulidConnectionError, PulidTimeoutError) as exc:
        typer.echo(f"(cannot read the fields of {endpoint}: {exc})")
        return
    if found is None:
        typer.echo(f"({client.url} has no endpoint {endpoint})")
        return
    typer.echo(f"\n{endpoint} input fields, from {client.url}/openapi.json (set each as an option):\n")
    for field in found:
        value = " | ".join([*field.choices, *(["WxH"] if field.kind == "size" else [])])
        value = value or VALUE_LABELS.get(field.kind, field.kind.upper())
        default = json.dumps(field.default)
        default = (
            "required" if field.required else f"default: {default[:40]}{'…' if len(default) > 40 else ''}"
        )
        typer.echo(f"  {field.option} {value}  [{default}]")
        for line in textwrap.wrap(field.description, 96):
            typer.echo(f"      {line}")


# -- helpers -----------------------------------------------------------------------------------------------


def _client(url: str | None, key: str | None) -> SyncClient:
    return SyncClient(url, key, retry=RetryPolicy(on_retry=_show_retry))


def _show_retry(retry: Retry) -> None:
    """Say why nothing seems to happen: a full queue answers 429 and asks to wait (Retry-After)."""
    why = f"HTTP {retry.status_code}" if retry.status_code else "connection failed"
    typer.echo(
        f"{why} ({retry.reason}): retrying in {retry.delay:.1f} s "
        f"(try {retry.attempt + 1} of {retry.max_attempts})",
        err=True,
    )


def _openapi(client: SyncClient) -> dict[str, Any]:
    """The server's /openapi.json (public: no key sent)."""
    response = client.send("GET", f"{client.url}/openapi.json", auth=False)
    if response.is_error:
        raise http_error(response)
    schema: dict[str, Any] = response.json()
    return schema


def _field_arguments(
    client: SyncClient, endpoint: str, args: list[str], refs: list[str], json_out: bool
) -> dict[str, Any]:
    """The input given as field options (and --ref), typed by the endpoint's schema on the server."""
    if not args and not refs:
        return {}
    openapi = _openapi(client)
    found = input_fields(openapi, endpoint)
    if found is None:
        known = ", ".join(published_endpoints(openapi))
        _fail(EXIT_USAGE, f"{client.url} has no endpoint {endpoint!r} (it has: {known})", json_out)
    try:
        return parse_field_args(found, args, refs)
    except FieldArgError as exc:
        _fail(EXIT_USAGE, str(exc), json_out, error_type="usage_error")


def _parse_input(value: str) -> dict[str, Any]:
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--input") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--input")
    return data


def _status_dict(status: Status) -> dict[str, Any]:
    name = {Queued: "IN_QUEUE", InProgress: "IN_PROGRESS", Completed: "COMPLETED"}[type(status)]
    body = {"status": name, **asdict(status)}  # type: ignore[call-overload]
    if "position" in body:
        body["queue_position"] = body.pop("position")
    return body


def _status_line(status: Status) -> str:
    if isinstance(status, Queued):
        return f"IN_QUEUE (position {status.position})"
    if isinstance(status, InProgress):
        return "IN_PROGRESS"
    assert isinstance(status, Completed)
    return f"COMPLETED with error ({status.error_type}): {status.error}" if status.error else "COMPLETED"


def _follow(client: SyncClient, endpoint: str, arguments: dict[str, Any], timeout: float) -> tuple[str, Any]:
    """subscribe() with the live display on stderr; returns (request_id, output)."""
    request_ids: list[str] = []
    with _LiveStatus() as live:

        def enqueued(request_id: str) -> None:
            request_ids.append(request_id)
            live.start()

        output = client.subscribe(
            endpoint,
            arguments,
            with_logs=True,
            on_enqueue=enqueued,
            on_queue_update=live.update,
            client_timeout=timeout,
            interval=POLL_INTERVAL,
        )
    return request_ids[0], output


def _output_images(output: Any) -> list[dict[str, Any]]:
    """fal's image outputs: `images: [Image]` (fal-ai/pulid) or `image: Image`."""
    if not isinstance(output, dict):
        return []
    if isinstance(output.get("images"), list):
        return [i for i in output["images"] if isinstance(i, dict)]
    return [output["image"]] if isinstance(output.get("image"), dict) else []


def _save_images(client: SyncClient, output: Any, out: Path, request_id: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(_output_images(output)):
        ext = (
            mimetypes.guess_extension(image.get("content_type") or "")
            or Path(image.get("file_name") or "").suffix
        )
        path = out / f"{request_id}-{i}{ext or '.png'}"
        path.write_bytes(_image_bytes(client, image["url"]))
        paths.append(path)
    return paths


def _image_bytes(client: SyncClient, url: str) -> bytes:
    """An output image: downloaded, or decoded from a data URI (`sync_mode` outputs are not stored)."""
    if url.startswith("data:"):
        return base64.b64decode(url.partition(",")[2])
    return client.download(url, timeout=120)


def _print_json(data: Any, indent: int | None = None) -> None:
    typer.echo(json.dumps(data, indent=indent))


class _LiveStatus:
    """The request's state, log lines and (on a terminal) a progress bar from `step k/N` logs, on stderr.

    Without a terminal (piped, captured) there is no bar: each change of state and each step is a line.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )  # fmt: skip
        self.task = self.progress.add_task("submitted", total=None)
        self.bar = self.console.is_terminal
        self.label = ""
        self.seen_logs = 0
        self.started = False

    def start(self) -> None:
        """Called once the request is queued: nothing is drawn for a submit that fails."""
        self.started = True
        if self.bar:
            self.progress.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self.started and self.bar:
            if exc_type is not None:  # the error is printed next: no bar for a run that did not finish
                self.progress.update(self.task, visible=False)
            self.progress.stop()

    def update(self, status: Status) -> None:
        if isinstance(status, Queued):
            self._label(
                "queued: next in line" if status.position == 0 else f"queued: {status.position} ahead"
            )
            return
        assert isinstance(status, InProgress | Completed)
        if isinstance(status, InProgress):
            self._label("running")
        elif not status.error:
            self._label("done")
        logs = status.logs or []
        for line in logs[self.seen_logs :]:
            self._log(line)
        self.seen_logs = len(logs)

    def _label(self, label: str) -> None:
        if label == self.label:
            return
        self.label = label
        if self.bar:
            self.progress.update(self.task, description=label)
        else:
            self.console.print(label)

    def _log(self, line: dict[str, Any]) -> None:
        from pulid_server.client.status import parse_step

        message, level = str(line.get("message", "")), str(line.get("level", ""))
        step = parse_step(message)
        if step is not None and self.bar:
            self.progress.update(self.task, completed=step[0], total=step[1])
        elif level.startswith("WARN"):
            self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)
        elif level != "ERROR":  # a job's error lines say what its final error says: printed once, at the end
            self.console.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)


@contextmanager
def _exit_codes(json_out: bool, key: str | None) -> Iterator[None]:
    """Map client errors to the documented exit codes, with a message on stderr (and JSON on stdout)."""
    try:
        yield
    except RequestFailed as exc:
        code = {"request_cancelled": EXIT_CANCELLED, "request_timeout": EXIT_TIMEOUT}.get(
            exc.error_type or "", EXIT_FAILED
        )
        # With field errors, each is printed below with its field; the message would only repeat one.
        where = f"request {exc.request_id} failed"
        message = f"{where} ({exc.error_type or 'error'}):" if exc.field_errors else f"{where}: {exc}"
        _fail(code, message, json_out, exc.field_errors,
              error_type=exc.error_type, request_id=exc.request_id)  # fmt: skip
    except PulidTimeoutError as exc:
        _fail(
            EXIT_TIMEOUT,
            f"timed out: {exc}",
            json_out,
            error_type="client_timeout",
            request_id=exc.request_id,
        )
    except PulidConnectionError as exc:
        _fail(EXIT_CONNECTION, str(exc), json_out, error_type="connection_error")
    except PulidHTTPError as exc:
        code, message = _http_failure(exc, key)
        _fail(code, message, json_out, exc.field_errors, error_type=exc.error_type, request_id=exc.request_id)


def _http_failure(exc: PulidHTTPError, key: str | None) -> tuple[int, str]:
    """(exit code, message) for an error answer, saying what to do where we know it."""
    if exc.status_code == 401 and key is None:
        return EXIT_CONNECTION, (
            "no API key: set PULID_KEY (or FAL_KEY) or pass --key. Create a key with `pulid keys create` "
            "in the folder where the server runs."
        )
    if exc.status_code in (401, 403):
        return EXIT_CONNECTION, (
            f"the server rejected the API key (HTTP {exc.status_code}: {exc.message}). Check PULID_KEY / "
            "--key: keys come from `pulid keys create` run against the server's own database."
        )
    if exc.status_code == 429:
        return EXIT_BUSY, f"server busy (HTTP 429: {exc.message}), still after every retry: try again later"
    code = EXIT_USAGE if exc.status_code in (404, 422) else EXIT_FAILED
    return code, f"HTTP {exc.status_code}: {'invalid input' if exc.field_errors else exc.message}"


def _fail(
    code: int, message: str, json_out: bool, field_errors: list[dict[str, Any]] | None = None, **extra: Any
) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    for error in field_errors or []:
        typer.echo(f"  {format_field_error(error)}", err=True)
    if json_out:
        _print_json({"error": message, "exit_code": code, "field_errors": field_errors or [], **extra})
    sys.stdout.flush()
    raise typer.Exit(code)
