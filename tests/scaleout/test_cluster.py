"""Scale-out: 2 API-only nodes + 3 `pulid worker` processes on a real PostgreSQL 15 and an S3 server (moto).

Every job runs exactly once, queue positions agree across nodes, outputs are downloadable through every
node, and a worker killed with SIGKILL mid-job costs one attempt: the job finishes on another worker.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from pulid_server.store import COMPLETED, IN_PROGRESS, JobStore, open_job_store
from tests.pg import S3_ENV, PostgresServer, S3Server
from tests.scaleout.cluster import Cluster, ClusterConfig
from tests.servers import wait_completed

JOBS = 300
IMAGE_JOBS = 6
LOW_EVERY = 10  # every 10th echo job is submitted with low priority


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    bucket = s3.create_bucket()
    config = ClusterConfig(
        postgres.create_database(), f"s3://{bucket}/run", s3.endpoint_url, tmp_path_factory.mktemp("cluster")
    )
    c = Cluster(config)
    try:
        c.start_apis(2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def store(cluster: Cluster) -> Iterator[JobStore]:
    s = open_job_store(cluster.config.database_url)
    yield s
    s.close()


def _png(width: int = 48, height: int = 40) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _upload(client: httpx.Client, data: bytes) -> str:
    grant = client.post(
        "/rest/storage/upload/initiate", json={"file_name": "in.png", "content_type": "image/png"}
    )
    grant.raise_for_status()
    httpx.put(
        grant.json()["upload_url"], content=data, headers={"Content-Type": "image/png"}, timeout=30
    ).raise_for_status()
    return str(grant.json()["file_url"])


def _on(node_url: str, url: str) -> str:
    """The same path on another API node."""
    return node_url + "/files/" + url.partition("/files/")[2]


def test_300_jobs_across_two_api_nodes_run_exactly_once(cluster: Cluster, store: JobStore) -> None:
    cluster.stop_workers()  # nothing runs while we submit: queue positions must then be exact
    with cluster.apis[0].client() as a, cluster.apis[1].client() as b:
        _run_300(cluster, store, a, b)


def _run_300(cluster: Cluster, store: JobStore, a: httpx.Client, b: httpx.Client) -> None:
    image = _png()
    upload_url = _upload(a, image)
    assert b.get(_on(cluster.apis[1].url, upload_url)).content == image  # S3 is shared by both nodes

    submitted: list[dict[str, Any]] = []
    for i in range(JOBS):
        client = (a, b)[i % 2]
        if i < IMAGE_JOBS:
            r = client.post("/queue/test/image", json={"image_url": upload_url})
        else:
            low = i % LOW_EVERY == 0
            r = client.post(
                "/queue/test/echo",
                json={"value": f"v{i}", "steps": 1, "step_seconds": 0.02},
                headers={"X-Fal-Queue-Priority": "low"} if low else {},
            )
        r.raise_for_status()
        submitted.append({**r.json(), "i": i, "node": i % 2, "low": i >= IMAGE_JOBS and i % LOW_EVERY == 0})
    _check_positions_while_nothing_runs(submitted, (a, b))

    cluster.start_workers(3)
    queue_order = sorted((s for s in submitted if s["i"] >= IMAGE_JOBS), key=lambda s: (s["low"], s["i"]))
    watched = queue_order[-40:]  # the back of the queue waits longest
    _watch_positions_while_draining(watched, a)
    _wait_all_done(store, [s["request_id"] for s in submitted])

    pids = {w.pid for w in cluster.workers}
    ran_on = _check_rows_ran_once(store, submitted, pids)
    assert set(ran_on) == pids, f"every worker should have run some jobs: {ran_on}"
    _check_results_and_downloads(cluster, submitted, (a, b), image)


def _check_positions_while_nothing_runs(
    submitted: list[dict[str, Any]], clients: tuple[httpx.Client, ...]
) -> None:
    echo = [s for s in submitted if s["i"] >= IMAGE_JOBS]
    normal = [s for s in echo if not s["low"]]
    low = [s for s in echo if s["low"]]
    # At submit time a job is behind every queued job of its endpoint with the same or a better priority.
    assert [s["queue_position"] for s in submitted[:IMAGE_JOBS]] == list(range(IMAGE_JOBS))
    assert [s["queue_position"] for s in normal] == list(range(len(normal)))
    # Now, asked through the other node: normal jobs first, then low ones, FIFO within each.
    expected = {s["request_id"]: n for n, s in enumerate(normal + low)}
    expected.update({s["request_id"]: n for n, s in enumerate(submitted[:IMAGE_JOBS])})
    for s in submitted:
        r = clients[1 - s["node"]].get(s["status_url"])
        assert r.status_code == 202 and r.json()["status"] == "IN_QUEUE"
        assert r.json()["queue_position"] == expected[s["request_id"]]


def _watch_positions_while_draining(watched: list[dict[str, Any]], client: httpx.Client) -> None:
    """Positions only go down. Polled back to front (in queue order), the queued ones are strictly
    decreasing, so unique: jobs leave from the front only and none join ahead of them."""
    last: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = []
        for s in reversed(watched):
            body = client.get(s["status_url"]).json()
            if body["status"] == "IN_QUEUE":
                pos = body["queue_position"]
                assert pos <= last.get(s["request_id"], pos), f"position went up for {s['request_id']}"
                last[s["request_id"]] = pos
                seen.append(pos)
        assert seen == sorted(seen, reverse=True) and len(set(seen)) == len(seen), seen
        if not seen:
            return
        time.sleep(0.05)
    raise TimeoutError("the queue did not drain")


def _wait_all_done(store: JobStore, ids: list[str], timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ = [i for i in ids if (job := store.queue.get(i)) is None or job.status != COMPLETED]
        if not open_:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{len(open_)} jobs not completed")


def _check_rows_ran_once(store: JobStore, submitted: list[dict[str, Any]], pids: set[int]) -> dict[int, int]:
    ran_on: dict[int, int] = {}
    for s in submitted:
        job = store.queue.get(s["request_id"])
        assert job is not None
        assert (job.status, job.error, job.attempts) == (COMPLETED, None, 1), job
        pid = int((job.worker_id or "").split("-")[-2])
        assert pid in pids
        ran_on[pid] = ran_on.get(pid, 0) + 1
        if s["i"] >= IMAGE_JOBS:
            out = json.loads(job.output_json or "null")
            assert out == {"value": f"v{s['i']}", "worker_pid": pid}
            assert [line.message for line in store.queue.logs(job.id)] == ["step 1/1"]  # one run, one step
    return ran_on


def _check_results_and_downloads(
    cluster: Cluster, submitted: list[dict[str, Any]], clients: tuple[httpx.Client, ...], image: bytes
) -> None:
    outputs = []
    for s in submitted:  # every result through the node that did not take the request
        r = clients[1 - s["node"]].get(s["response_url"])
        assert r.status_code == 200, r.text
        if s["i"] < IMAGE_JOBS:
            outputs.append(r.json()["image"]["url"])
    original = Image.open(io.BytesIO(image))
    for url in outputs:
        bodies = [httpx.get(_on(node.url, url), timeout=30) for node in cluster.apis]
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in bodies)
        assert bodies[0].content == bodies[1].content
        out = Image.open(io.BytesIO(bodies[0].content))
        assert out.size == original.size and np.array_equal(
            np.asarray(out.convert("RGB")), np.asarray(original.convert("RGB"))
        )
    bucket, _, prefix = cluster.config.storage.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3", endpoint_url=cluster.config.s3_endpoint_url, region_name=S3_ENV["AWS_DEFAULT_REGION"]
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/outputs/")["Contents"]}
    assert {f"{prefix}/" + u.partition("/files/")[2] for u in outputs} == keys  # real files, in the bucket


def test_killed_worker_job_completes_elsewhere(cluster: Cluster, store: JobStore) -> None:
    if len(cluster.live_workers()) < 3:
        cluster.start_workers(3 - len(cluster.live_workers()))
    cluster.wait_workers_registered(3)
    with cluster.apis[0].client() as a, cluster.apis[1].client() as b:
        _kill_mid_job(cluster, store, a, b)


def _kill_mid_job(cluster: Cluster, store: JobStore, client: httpx.Client, other: httpx.Client) -> None:
    r = client.post("/queue/test/echo", json={"value": "slow", "steps": 25, "step_seconds": 0.1})
    r.raise_for_status()
    job_id, status_url = r.json()["request_id"], r.json()["status_url"]
    victim = _running_worker_pid(store, job_id)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    body = wait_completed(other, status_url.replace(cluster.apis[0].url, cluster.apis[1].url), timeout=60)
    job = store.queue.get(job_id)
    assert job is not None and (job.error, job.attempts) == (None, 2), job
    result = client.get(r.json()["response_url"]).json()
    assert result["value"] == "slow" and result["worker_pid"] != victim
    messages = [line["message"] for line in body["logs"]]
    assert "worker lost; requeued (attempt 1 of 3)" in messages
    assert messages[-25:] == [f"step {n}/25" for n in range(1, 26)]  # the second attempt ran all steps
    assert time.monotonic() - killed_at < 30


def _running_worker_pid(store: JobStore, job_id: str) -> int:
    """The pid of the worker running `job_id`, once it is a few steps in."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = store.queue.get(job_id)
        if job is not None and job.status == IN_PROGRESS and len(store.queue.logs(job_id)) >= 3:
            return int((job.worker_id or "").split("-")[-2])
        time.sleep(0.02)
    raise TimeoutError("the slow job never got going")


def test_metrics_and_readiness_on_every_node(cluster: Cluster, store: JobStore) -> None:
    if not cluster.live_workers():
        cluster.start_workers(1)
    live = len(cluster.live_workers())
    finished = sum(1 for _ in store.cluster.finished_since((0.0, 0), time.time()))
    assert finished >= JOBS
    for node in cluster.apis:
        ready = (
            cluster.wait_workers_registered(live)
            if node is cluster.apis[0]
            else httpx.get(node.url + "/health/ready").json()
        )
        assert ready["store"] is True and set(ready["endpoints_ready"]) == {"test/echo", "test/image"}
        samples = _scrape_until(
            node.url,
            lambda m: sum(v for (n, _), v in m.items() if n == "pulid_jobs_completed_total") >= finished,
        )
        assert samples[("pulid_job_wait_seconds_count", (("endpoint", "test/echo"),))] >= JOBS - IMAGE_JOBS
        assert samples[("pulid_job_run_seconds_count", (("endpoint", "test/image"),))] == IMAGE_JOBS
        assert sum(v for (n, _), v in samples.items() if n == "pulid_queue_depth") == 0
        assert sum(v for (n, _), v in samples.items() if n == "pulid_workers") == live


def _scrape_until(
    url: str, done: Any, timeout: float = 20.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }
        if done(samples) or time.monotonic() > deadline:
            assert done(samples), samples
            return samples
        time.sleep(0.5)
