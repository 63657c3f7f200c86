"""Deletes expired data in the background of every API node, and on demand (`pulid prune`, fal's delete
payloads route).

Each pass takes the kinds of the store's retention in turn (finished jobs first: deleting one takes its
payload and outputs along), claims a batch (store/retention.py: one node per item), deletes the batch's
files from the blob store outside any transaction, then records it, until nothing more is due. A file
that cannot be deleted (the bucket is unreachable) leaves its item claimed: another pass retries it
once the claim has lapsed. Nothing here runs inside a request: a request at most marks data as due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pulid_server.files import BlobStore, delete_prefix, inputs_prefix, outputs_prefix
from pulid_server.store import OUTPUTS_GONE, PAYLOAD_GONE, Expired, JobStore, PruneClaim, RetentionPolicy
from pulid_server.store.retention import KINDS

log = logging.getLogger("pulid.pruner")
BATCH = 200  # items per claim: one short transaction to claim, one to record
MAX_BATCHES = 50  # per kind and pass, so that one pass ends and the next one starts fresh
LEASE_SECONDS = 300.0  # a claim lapses after this (its pruner died or its files could not be deleted)
DRY_RUN_LIMIT = 100_000  # items per kind a dry run looks at
MEASURE_EVERY_PASSES = 10  # how often a node measures what the blob store and the database hold
STORED_PREFIXES = ("outputs", "uploads", "inputs")


@dataclass
class PruneReport:
    """What a pass deleted (or, in a dry run, would delete). `items`: expired items by kind; `rows`: rows
    deleted or cleared by table or part; `files` / `bytes`: blobs by prefix (outputs, inputs, uploads)."""

    items: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    files: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)

    def add(self, other: PruneReport) -> None:
        for mine, theirs in zip(self._parts(), other._parts(), strict=True):
            mine.update(theirs)

    def _parts(self) -> tuple[Counter[str], ...]:
        return self.items, self.rows, self.files, self.bytes

    def empty(self) -> bool:
        return not any(sum(part.values()) for part in self._parts())


def _prefixes(kind: str, item: Expired) -> list[str]:
    """The blob folders an expired item owns (what is gone already is skipped)."""
    if kind == "upload":
        return []
    outputs = [] if item.retention & OUTPUTS_GONE else [outputs_prefix(item.ref)]
    inputs = [] if item.retention & PAYLOAD_GONE else [inputs_prefix(item.ref)]
    return {"job": outputs + inputs, "outputs": outputs, "payload": inputs}[kind]


class Pruner:
    def __init__(
        self, store: JobStore, blobs: BlobStore, policy: RetentionPolicy, every_seconds: float = 60.0
    ):
        self.store = store
        self.blobs = blobs
        self.policy = policy
        self.every_seconds = every_seconds
        self.total = PruneReport()  # since this process started, for /metrics
        self.stored: dict[str, tuple[int, int]] = {}  # prefix -> (files, bytes), as last measured
        self.database_bytes: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pruner")

    # -- passes -----------------------------------------------------------------------------------------

    def run_pass(self) -> PruneReport:
        """Delete everything due now (up to MAX_BATCHES batches of each kind)."""
        report = PruneReport()
        for kind in KINDS:
            for _ in range(MAX_BATCHES):
                claim = self.store.retention.claim(kind, self.policy, BATCH, LEASE_SECONDS)
                self._prune(claim, report)
                if len(claim.items) < BATCH:
                    break
        report.rows.update(self.store.retention.housekeeping(self.policy, BATCH * 10))
        with self._lock:
            self.total.add(report)
        return report

    def dry_run(self) -> PruneReport:
        """What `run_pass` would delete now, deleting nothing (rows: the items' own rows only)."""
        report = PruneReport()
        whole: set[str] = set()  # jobs deleted whole: their parts are not counted again
        for kind in KINDS:
            for item in self.store.retention.expired(kind, self.policy, DRY_RUN_LIMIT):
                if item.ref in whole:
                    continue
                whole.update([item.ref] if kind == "job" else [])
                report.items[kind] += 1
                for key in _prefixes(kind, item) or [item.ref]:
                    infos = list(self.blobs.scan(key)) if key.endswith("/") else self._one(key)
                    _count(report, key, len(infos), sum(i.size for i in infos))
        return report

    def _one(self, key: str) -> list[Any]:
        return [info for info in self.blobs.scan(key.rsplit("/", 1)[0] + "/") if info.key == key]

    def _prune(self, claim: PruneClaim, report: PruneReport) -> None:
        done: list[Expired] = []
        for item in claim.items:
            try:
                for prefix in _prefixes(claim.kind, item):
                    _count(report, prefix, *delete_prefix(self.blobs, prefix))
                if claim.kind == "upload":
                    size = sum(i.size for i in self._one(item.ref))
                    self.blobs.delete(item.ref)
                    _count(report, item.ref, 1 if size else 0, size)
            except Exception:  # noqa: BLE001 - left claimed; retried once the claim lapses
                log.exception("could not delete the files of %s %s", claim.kind, item.ref)
                continue
            done.append(item)
        report.items[claim.kind] += len(done)
        report.rows.update(self.store.retention.finish(PruneClaim(claim.kind, claim.token, done)))

    def delete_request(self, job_id: str, base_url: str) -> list[dict[str, str | None]]:
        """fal's "delete request payloads": a finished request's payload and files, at once. One result
        per output file deleted, `{link, exception}`."""
        results: list[dict[str, str | None]] = []
        report = PruneReport()
        for prefix in (outputs_prefix(job_id), inputs_prefix(job_id)):
            for info in list(self.blobs.scan(prefix)):
                error: str | None = None
                try:
                    self.blobs.delete(info.key)
                    _count(report, prefix, 1, info.size)
                except Exception as exc:  # noqa: BLE001 - reported per file, as fal does
                    error = f"{type(exc).__name__}: {exc}"
                if prefix.startswith("outputs/"):
                    results.append({"link": f"{base_url}/files/{info.key}", "exception": error})
        if self.store.retention.forget_request(job_id):
            report.rows["payloads"] += 1
        with self._lock:
            self.total.add(report)
        return results

    # -- what is stored ---------------------------------------------------------------------------------

    def measure(self) -> None:
        """Files and bytes under each prefix, and the database's size (a scan: done every few passes)."""
        stored: dict[str, tuple[int, int]] = {}
        for prefix in STORED_PREFIXES:
            files = size = 0
            for info in self.blobs.scan(prefix + "/"):
                files, size = files + 1, size + info.size
            stored[prefix] = (files, size)
        database = self.store.retention.database_bytes()
        with self._lock:
            self.stored, self.database_bytes = stored, database

    def snapshot(self) -> tuple[PruneReport, dict[str, tuple[int, int]], int | None]:
        with self._lock:
            total = PruneReport()
            total.add(self.total)
            return total, dict(self.stored), self.database_bytes

    # -- the background loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        passes = 0
        while not self._stop.wait(self.every_seconds if passes else min(self.every_seconds, 1.0)):
            try:
                started = time.monotonic()
                report = self.run_pass()
                if not report.empty():
                    log.info("pruned in %.2fs: %s", time.monotonic() - started, _describe(report))
                if passes % MEASURE_EVERY_PASSES == 0:
                    self.measure()
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next tick
                log.exception("prune pass failed")
            passes += 1


def _count(report: PruneReport, key: str, files: int, size: int) -> None:
    prefix = key.split("/", 1)[0]
    report.files[prefix] += files
    report.bytes[prefix] += size


def _describe(report: PruneReport) -> str:
    rows = ", ".join(f"{n} {name}" for name, n in sorted(report.rows.items()) if n)
    files = ", ".join(f"{report.files[p]} {p} files ({report.bytes[p]} bytes)" for p in sorted(report.files))
    return "; ".join(part for part in (rows, files) if part) or "nothing"
