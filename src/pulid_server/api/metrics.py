"""GET /metrics in Prometheus text format: the whole deployment, as the shared store sees it.

Why from the store and not counters on the request path: workers have no HTTP port, and a job submitted
on one API node finishes in a worker on another machine, so no API process sees every completion. Every
node therefore reports the same cluster-wide numbers; scrape one, or aggregate with max().

What one scrape costs:
- gauges (queue depth, running jobs, webhook deliveries by state, live workers): aggregate queries per
  scrape over index ranges (the queue, bounded by the queue caps; the small workers table);
- counters and histograms of finished jobs (by endpoint and error_type; wait and run time; images the
  safety checker scored and flagged, by endpoint): cumulative
  since this API process started. Each scrape adds only the jobs finished since the previous one (a
  (finished_at, seq) cursor over an index), so it costs O(new jobs), never O(all jobs).
- retention: what this node's pruner deleted (rows by table, files and bytes by prefix; each item is
  pruned by one node, so sum() these across nodes), and what is stored (files and bytes by prefix, the
  database's size) as this node last measured it, every few prune passes (a scan, never on a scrape).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pulid_server.api.health import worker_alive_window
from pulid_server.api.state import AppState, app_state
from pulid_server.store import PRIORITIES, FinishedJob

router = APIRouter(tags=["health"])

# A job's finished_at is taken just before its transaction commits, on the worker's clock; reading only
# rows older than this lets late commits (and small clock skew between machines) land before the cursor.
SETTLE_SECONDS = 2.0
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
RUN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
_PROCESS_STARTED = time.time()
# The classic text format every Prometheus (2.x and 3.x) and compatible scraper reads; our metric names are
# plain ASCII, so generate_latest's output is valid 0.0.4 text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last one is +Inf
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip(
            (*self.bounds, float("inf")), self.counts or [0] * (len(self.bounds) + 1), strict=True
        ):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class ClusterCollector(Collector):
    """Collects on scrape; the finished-job counters live here between scrapes."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._cursor = (_PROCESS_STARTED - SETTLE_SECONDS, 0)  # (finished_at, seq) of the last job counted
        self._completed: dict[tuple[str, str], int] = defaultdict(int)
        self._images_checked: dict[str, int] = defaultdict(int)  # by the safety checker, per endpoint
        self._images_flagged: dict[str, int] = defaultdict(int)
        self._wait: dict[str, _Histogram] = {}
        self._run: dict[str, _Histogram] = {}

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        with self._lock:  # concurrent scrapes must not count the same jobs twice
            self._advance()
            yield from self._finished_families()
        yield from self._gauges()
        yield from self._retention()
        scrape = GaugeMetricFamily("pulid_metrics_scrape_seconds", "Time this scrape spent reading the store")
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def _advance(self) -> None:
        for job in self._state.store.cluster.finished_since(self._cursor, time.time() - SETTLE_SECONDS):
            self._count(job)
            self._cursor = (job.finished_at, job.seq)

    def _count(self, job: FinishedJob) -> None:
        self._completed[(job.endpoint_id, job.error_type or "none")] += 1
        if job.images_checked is not None:
            self._images_checked[job.endpoint_id] += job.images_checked
            self._images_flagged[job.endpoint_id] += job.images_flagged or 0
        if job.started_at is None:  # cancelled or timed out while queued: it never ran
            return
        self._wait.setdefault(job.endpoint_id, _Histogram(WAIT_BUCKETS)).observe(
            max(0.0, job.started_at - job.created_at)
        )
        self._run.setdefault(job.endpoint_id, _Histogram(RUN_BUCKETS)).observe(
            max(0.0, job.finished_at - job.started_at)
        )

    def _finished_families(self) -> Iterator[Metric]:
        completed = CounterMetricFamily(
            "pulid_jobs_completed",
            "Jobs that reached COMPLETED since this API process started, by error_type ('none' = success)",
            labels=["endpoint", "error_type"],
        )
        for (endpoint, error_type), n in sorted(self._completed.items()):
            completed.add_metric([endpoint, error_type], n)
        yield completed
        for name, doc, counts in (
            ("pulid_images_checked", "Output images the safety checker scored", self._images_checked),
            ("pulid_images_flagged", "Output images the safety checker flagged", self._images_flagged),
        ):
            counter = CounterMetricFamily(name, f"{doc} since this API process started", labels=["endpoint"])
            for endpoint, n in sorted(counts.items()):
                counter.add_metric([endpoint], n)
            yield counter
        for name, doc, hists in (
            ("pulid_job_wait_seconds", "Submit to start of the attempt that finished the job", self._wait),
            ("pulid_job_run_seconds", "Start to finish of the attempt that finished the job", self._run),
        ):
            family = HistogramMetricFamily(name, doc, labels=["endpoint"])
            for endpoint, hist in sorted(hists.items()):
                family.add_metric([endpoint], hist.buckets(), sum_value=hist.total)
            yield family

    def _gauges(self) -> Iterator[Metric]:
        cluster, settings = self._state.store.cluster, self._state.settings
        depth = GaugeMetricFamily(
            "pulid_queue_depth", "Jobs waiting in the queue", labels=["endpoint", "priority"]
        )
        running = GaugeMetricFamily("pulid_jobs_running", "Jobs a worker is running now", labels=["endpoint"])
        for d in cluster.queue_depths():
            if d.status == "IN_QUEUE":
                depth.add_metric([d.endpoint_id, PRIORITY_NAMES.get(d.priority, str(d.priority))], d.count)
            else:
                running.add_metric([d.endpoint_id], d.count)
        hooks = GaugeMetricFamily(
            "pulid_webhook_deliveries", "Webhook outbox rows by state", labels=["state"]
        )
        counts = cluster.webhook_counts()
        for hook_state in ("pending", "delivered", "dead"):
            hooks.add_metric([hook_state], counts.get(hook_state, 0))
        live = cluster.recent_workers(worker_alive_window(settings))
        workers = GaugeMetricFamily(
            "pulid_workers", "Worker processes that reported within the lease time", labels=["state"]
        )
        workers.add_metric(["busy"], sum(1 for w in live if w.job_id))
        workers.add_metric(["idle"], sum(1 for w in live if not w.job_id))
        yield from (depth, running, hooks, workers)

    def _retention(self) -> Iterator[Metric]:
        total, stored, database = self._state.pruner.snapshot()
        rows = CounterMetricFamily(
            "pulid_pruned_rows", "Rows this node's pruner deleted or cleared, by table", labels=["table"]
        )
        for table, n in sorted(total.rows.items()):
            rows.add_metric([table], n)
        files = CounterMetricFamily(
            "pulid_pruned_files", "Files this node's pruner deleted", labels=["prefix"]
        )
        size = CounterMetricFamily("pulid_pruned_bytes", "Bytes of the files it deleted", labels=["prefix"])
        for prefix in sorted(total.files):
            files.add_metric([prefix], total.files[prefix])
            size.add_metric([prefix], total.bytes[prefix])
        yield from (rows, files, size)
        stored_files = GaugeMetricFamily("pulid_stored_files", "Files in the blob store", labels=["prefix"])
        stored_bytes = GaugeMetricFamily("pulid_stored_bytes", "Bytes in the blob store", labels=["prefix"])
        for prefix, (n, nbytes) in sorted(stored.items()):
            stored_files.add_metric([prefix], n)
            stored_bytes.add_metric([prefix], nbytes)
        yield from (stored_files, stored_bytes)
        if database is not None:
            db = GaugeMetricFamily("pulid_database_bytes", "Size of the job store's database")
            db.add_metric([], database)
            yield db


def _registry(request: Request, state: AppState) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "pulid_metrics", None)
    if registry is None:  # one per app (and so per API process), made on the first scrape
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClusterCollector(state))
        ProcessCollector(registry=registry)
        request.app.state.pulid_metrics = registry
    return registry


@router.get("/metrics", summary="Prometheus metrics of the whole deployment (no auth: keep it internal)")
async def metrics(request: Request) -> Response:
    body = await asyncio.to_thread(generate_latest, _registry(request, app_state(request)))
    return Response(body, headers={"Content-Type": CONTENT_TYPE})
