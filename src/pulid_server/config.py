"""One Settings object for every process (API, worker, CLI), read from flags and `PULID_*` env vars."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pulid_server.model.families import Preset
from pulid_server.model.flux.request import Quantize
from pulid_server.policy import SafetyAction, SafetyMode

if TYPE_CHECKING:
    from pulid_server.files import BlobStore
    from pulid_server.store import JobStore, RetentionPolicy


GROUPINGS = ("family", "one")  # worker_groups values that are not explicit groups
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """`7d`, `12h`, `30m`, `45s` or seconds -> seconds; `never` (or 0) -> 0, which means keep forever."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text == "never":
        return 0.0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("expected a duration such as 30m, 12h, 7d, seconds, or 'never'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]  # seconds; 0: forever


def parse_worker_groups(text: str) -> list[list[str]]:
    """`a/b,c/d;e/f` -> [["a/b", "c/d"], ["e/f"]]; an empty group (`a/b;;c/d`) comes back empty."""
    return [[e.strip() for e in group.split(",") if e.strip()] for group in text.split(";")]


class Settings(BaseSettings):
    """Configuration of a pulid-server node. Every field can be set as env var `PULID_<NAME>`.

    Storage and database:
        data_dir: where the SQLite database and local files live (default `./data`).
        database_url: SQLAlchemy URL; empty means `sqlite:///{data_dir}/pulid.db`. Use
            `postgresql://...` to share one queue between many API nodes and workers.
        durable_writes: an acknowledged submit survives a power loss, and a queued job's result once
            synced, just after it is announced (SQLite `synchronous=FULL`, PostgreSQL
            `synchronous_commit=on`; store/database.py). Off saves an fsync per write at the risk of
            losing the last moments of writes on power loss.
        storage: `local` (files under `{data_dir}/files`) or `s3://bucket/prefix`.
        s3_endpoint_url: S3-compatible endpoint (MinIO, R2, moto); empty for AWS.
        s3_presign_seconds: > 0 redirects file downloads to presigned S3 URLs valid this long, so that
            the API nodes do not stream image bytes; 0 serves them through the API.
        public_url: base URL used in links to files when it cannot be taken from the request
            (webhooks, workers); empty means links are built from each request's own host.

    Model:
        model: the preset of every endpoint's model family: `official` (real weights; needs `pulid
            weights download --family F`), `tiny` (toy sizes, random weights, runs anywhere in seconds)
            or `auto` (official when the family's weights are present, else tiny).
        models: presets per endpoint id that override `model`, e.g. `{"fal-ai/pulid": "official"}`
            (as JSON in `PULID_MODELS`).
        weights_dir: folder with the official files; empty means the Hugging Face cache.
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        worker_endpoints: endpoint ids the workers of this node load (comma-separated in the env);
            empty means every registered endpoint.
        worker_groups: how `pulid serve` splits those endpoints among its worker processes (`workers`
            of each group): `family` (default: one group per model family, so SDXL and FLUX never share
            a process or a GPU context; endpoints without a model form one more), `one` (every endpoint
            in one process), or explicit groups: `;` between groups, `,` within one, e.g.
            `fal-ai/pulid;fal-ai/flux-pulid` (these name the endpoints served; worker_endpoints is unused).
        sdxl_no_cfg_id_tokens: SDXL family at guidance_scale <= 1 (no CFG): `official` lets each image's
            ID attention see its uncond and cond ID tokens as one sequence, as the official code does;
            `cond` uses the cond tokens alone (pulid-server before 0.2).
        flux_offload: FLUX family: keep each component on the CPU until it runs (peak ~26 GB instead of
            ~39 GB in bf16; ~14 GB with flux_quantize); slower (moves ~35 GB per image).
        flux_quantize: FLUX family: `none`, `int8` or `fp8` weight-only transformer weights (torchao,
            `pip install 'pulid-server[quantize]'`); with flux_offload it fits 16-24 GB GPUs.

    Content policy (docs/safety.md; an API key may override safety_mode and safety_action):
        safety_checker: the image safety checker the workers load: `off`, `sd` (diffusers'
            StableDiffusionSafetyChecker, CompVis weights) or `vit` (Falconsai/nsfw_image_detection).
        safety_model: its preset: `official` (needs `pulid weights download --family safety-sd|safety-vit`),
            `tiny` (seeded toy weights: tests and CI; its flags mean nothing) or `auto`.
        safety_threshold: flag an image whose score is above this; unset means the checker's own default
            (sd: 0, its built-in concept thresholds; vit: 0.5, the probability of the nsfw label).
        safety_mode: `forced` (every image is checked), `optional` (a request's `enable_safety_checker`
            decides where the endpoint has it; otherwise checked) or `off`.
        safety_action: what a flagged image becomes: `black` (fal's behaviour), `blur`, or `fail` (the
            request fails with `content_policy_violation`). Flagged images are never stored unmasked.
        prompt_blocklist: words or phrases refused in a request's `prompt` at submit (422 naming the
            field); case-insensitive, whole words; comma-separated in the env.

    Retention (durations such as `30m`, `12h`, `7d`, or `never`; docs/deployment.md, "Retention"):
        retain_outputs: output files of a request (unless it asked for its own lifetime with
            X-Fal-Object-Lifecycle-Preference), counted from its completion.
        retain_uploads: uploaded files (unless the upload asked for its own lifetime), from the upload.
        retain_payloads: a request's input, output and error body (and its stored input files).
        retain_jobs: finished requests themselves, with their logs and webhook rows; until then an
            expired result or file answers 410 instead of 404.
        retain_files_max: the longest lifetime a request or an upload may ask for (`never`: no limit).
        prune_every_seconds: how often each API node looks for expired data (batches of short
            transactions; one node deletes a given item).

    Queue:
        lease_seconds: a claimed job whose worker has not heartbeated for this long is requeued.
        max_attempts: how many workers may try one job before it fails with `worker_crashed`.
        max_queue_per_key / max_queue_total: queued jobs allowed before submit answers 429.
        runner_hint_seconds: X-Fal-Runner-Hint: after a worker finished a request with a hint, other
            workers leave requests with that hint to it for this long (0: hints are ignored).
        max_streams_per_key: status streams one key may hold open on one API process (429 past it).

    HTTP (`pulid serve`; api/http_server.py):
        http_head_timeout_seconds: a request's line and headers must arrive within this (408 past it).
        http_body_timeout_seconds: the longest pause allowed inside a request body.
        max_connections: open connections at most; at the cap the longest-idle one is closed first. 0
            means what the open-files limit allows (raised to its hard limit at start-up), less a reserve.

    Webhooks (fal's policy by default: 15 s per attempt, 10 attempts over about two hours):
        webhook_timeout_seconds: per attempt; webhook_max_attempts: attempts in all;
        webhook_retry_base_seconds: the first retry's delay (tripled for each next one);
        webhook_retry_window_seconds: no attempt later than this after the request completed.
        webhook_secret: also sign with Standard Webhooks (`whsec_...`: HMAC-SHA256 in `webhook-id`,
            `webhook-timestamp`, `webhook-signature`), besides fal's Ed25519 signature. Empty: off.

    Limits:
        max_body_bytes: request bodies (413 past it); uploads may be up to max_file_bytes.
        max_file_bytes, max_data_uri_bytes, max_image_pixels: input caps (4xx past them).
        allow_private_urls: let user URLs reach private/loopback addresses (tests, intranets). Off by default.
    """

    model_config = SettingsConfigDict(env_prefix="PULID_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str = ""
    durable_writes: bool = True
    storage: str = "local"
    s3_endpoint_url: str = ""
    s3_presign_seconds: int = 0
    public_url: str = ""

    model: Preset = "auto"
    models: dict[str, Preset] = Field(default_factory=dict)
    weights_dir: Path | None = None
    device: str = "auto"
    worker_endpoints: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worker_groups: str = "family"
    sdxl_no_cfg_id_tokens: Literal["official", "cond"] = "official"
    flux_offload: bool = False
    flux_quantize: Quantize = "none"

    safety_checker: Literal["off", "sd", "vit"] = "off"
    safety_model: Preset = "official"
    safety_threshold: float | None = None
    safety_mode: SafetyMode = "optional"
    safety_action: SafetyAction = "black"
    prompt_blocklist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    retain_outputs: Duration = 7 * 86400.0
    retain_uploads: Duration = 7 * 86400.0
    retain_payloads: Duration = 30 * 86400.0
    retain_jobs: Duration = 90 * 86400.0
    retain_files_max: Duration = 0.0
    prune_every_seconds: Annotated[float, Field(gt=0)] = 60.0

    lease_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    max_attempts: int = 3
    max_queue_per_key: int = 1000
    max_queue_total: int = 10000
    max_streams_per_key: int = 100
    poll_seconds: float = 0.05
    runner_hint_seconds: Annotated[float, Field(ge=0)] = 10.0

    http_head_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 30.0
    max_connections: int = 0

    max_body_bytes: int = 16 * 1024 * 1024
    max_file_bytes: int = 20 * 1024 * 1024
    max_data_uri_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    fetch_timeout_seconds: float = 30.0
    allow_private_urls: bool = False

    webhook_timeout_seconds: float = 15.0
    webhook_max_attempts: int = 10
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_window_seconds: float = 7200.0
    webhook_secret: str = ""

    extra_endpoints: list[str] = Field(default_factory=list)

    @field_validator("worker_endpoints", "prompt_blocklist", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str) -> str:
        if value:
            try:
                key = base64.b64decode(value.strip().removeprefix("whsec_"), validate=True)
            except ValueError:
                key = b""
            if not key:
                raise ValueError("expected whsec_ followed by base64 (the Standard Webhooks secret format)")
        return value.strip()

    @field_validator("worker_groups")
    @classmethod
    def _groups_syntax(cls, value: str) -> str:
        value = value.strip() or "family"
        if value not in GROUPINGS and not all(parse_worker_groups(value)):
            raise ValueError("expected 'family', 'one' or groups of endpoint ids: 'a/b,c/d;e/f'")
        return value

    def explicit_worker_groups(self) -> list[list[str]] | None:
        """The groups `worker_groups` lists, or None for `family` / `one`."""
        return None if self.worker_groups in GROUPINGS else parse_worker_groups(self.worker_groups)

    def flux_options(self) -> dict[str, object]:
        """Keyword options of `get_family("flux").load(...)`."""
        return {"offload": self.flux_offload, "quantize": self.flux_quantize}

    def preset_for(self, endpoint_id: str) -> Preset:
        return self.models.get(endpoint_id, self.model)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pulid.db').resolve()}"

    def retention_policy(self) -> RetentionPolicy:
        from pulid_server.store import RetentionPolicy

        def seconds(value: float) -> float:
            return value or math.inf

        return RetentionPolicy(
            outputs=seconds(self.retain_outputs),
            uploads=seconds(self.retain_uploads),
            payloads=seconds(self.retain_payloads),
            jobs=seconds(self.retain_jobs),
        )

    def file_lifetime(self, asked: float | None) -> float | None:
        """The lifetime a request or upload gets for its files when it asked for `asked` seconds
        (math.inf: forever; None: it did not ask, and the node's retention applies)."""
        if asked is None or not self.retain_files_max:
            return asked
        return min(asked, self.retain_files_max)

    def job_store(self) -> JobStore:
        from pulid_server.store import open_job_store

        return open_job_store(self.resolved_database_url(), durable=self.durable_writes)

    def blob_store(self) -> BlobStore:
        from pulid_server.files import open_blob_store

        return open_blob_store(
            self.storage, self.data_dir, self.s3_endpoint_url, s3_presign_seconds=self.s3_presign_seconds
        )
