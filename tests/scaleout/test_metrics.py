"""/metrics parses as Prometheus text and follows submitted and completed jobs (embedded server, SQLite)."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_files_and_webhooks import png_bytes
from tests.servers import Server, wait_completed

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Server) -> tuple[Samples, dict[str, str]]:
    r = httpx.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(r.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name: f.type for f in families}


FACE = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()  # checked at submit: a real image


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_the_queue(fresh_server: Server) -> None:
    fresh_server.env["PULID_WORKER_ENDPOINTS"] = "test/echo"  # test/image jobs stay queued
    server = fresh_server.start()
    samples, types = scrape(server)
    assert types["pulid_jobs_completed"] == "counter" and types["pulid_job_wait_seconds"] == "histogram"
    assert (
        types["pulid_queue_depth"] == "gauge"
        and value(samples, "pulid_webhook_deliveries", state="pending") == 0
    )
    assert not any(name == "pulid_jobs_completed_total" for name, _ in samples)

    with server.client() as client:
        for priority in ("normal", "normal", "low"):
            client.post(
                "/queue/test/image", json={"image_url": FACE}, headers={"X-Fal-Queue-Priority": priority}
            ).raise_for_status()
        submitted = [
            client.post("/queue/test/echo", json={"value": str(i), "steps": 2}).json() for i in range(3)
        ]
        failed = client.post("/queue/test/echo", json={"steps": 100, "step_seconds": 0.05}).json()
        _wait_status(
            client, failed["status_url"], "IN_PROGRESS"
        )  # cancelled while running: it has a run time
        client.put(failed["cancel_url"]).raise_for_status()
        for s in (*submitted, failed):
            wait_completed(client, s["status_url"])

    samples = _until(  # the cancelled job finishes last: wait for it to be counted too
        server,
        lambda m: (
            value(m, "pulid_jobs_completed_total", endpoint="test/echo", error_type="none") == 3
            and value(m, "pulid_jobs_completed_total", endpoint="test/echo", error_type="request_cancelled")
            == 1
        ),
    )
    assert value(samples, "pulid_queue_depth", endpoint="test/image", priority="normal") == 2
    assert value(samples, "pulid_queue_depth", endpoint="test/image", priority="low") == 1
    assert (
        value(samples, "pulid_jobs_completed_total", endpoint="test/echo", error_type="request_cancelled")
        == 1
    )
    assert value(samples, "pulid_job_run_seconds_count", endpoint="test/echo") == 4
    assert value(samples, "pulid_job_wait_seconds_bucket", endpoint="test/echo", le="+Inf") == 4
    assert value(samples, "pulid_job_run_seconds_sum", endpoint="test/echo") > 0
    assert value(samples, "pulid_workers", state="idle") + value(samples, "pulid_workers", state="busy") == 1
    ready = httpx.get(server.url + "/health/ready").json()
    assert (ready["workers_alive"], ready["workers_recent"], ready["endpoints_ready"]) == (
        1,
        1,
        ["test/echo"],
    )


def _until(server: Server, done: Any, timeout: float = 15.0) -> Samples:
    """Finished jobs reach the counters a couple of seconds after they finish (see api/metrics.py)."""
    deadline = time.monotonic() + timeout
    samples, _ = scrape(server)
    while not done(samples) and time.monotonic() < deadline:
        time.sleep(0.3)
        samples, _ = scrape(server)
    assert done(samples), samples
    return samples


def _wait_status(client: httpx.Client, status_url: str, status: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(status_url).json()["status"] != status:
        assert time.monotonic() < deadline, f"never reached {status}"
        time.sleep(0.02)
