"""Service overhead: submit -> COMPLETED -> result through the HTTP API of a real `pulid serve`, against
calling the same endpoint function directly in-process (the baseline, measured in the same run).

Client paths, all with one keep-alive httpx client and one job at a time:
  poll  POST /queue/{id}, GET status every 5 ms until 200 COMPLETED, GET result (what fal clients do,
        with a tight interval instead of their default),
  sse   POST /queue/{id}, GET status/stream until the COMPLETED event, GET result,
  run   POST /run/{id} (sync: one request).
Throughput: N jobs submitted by 8 concurrent clients, wall time from first submit to last COMPLETED.

Run: PYTHONPATH=. .venv/bin/python bench/bench_service.py [--n-noop 500] [--n-sleep 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.endpoints import NOOP, SLEEP, call_direct  # noqa: E402
from bench.harness import p50, pct, pulid_server  # noqa: E402
from pulid_server.endpoints import Endpoint  # noqa: E402

POLL_SECONDS = 0.005
DEADLINE_SECONDS = 60.0
CASES: list[tuple[Endpoint, dict[str, Any]]] = [(NOOP, {"value": "x"}), (SLEEP, {"ms": 200, "steps": 4})]


def via_poll(client: httpx.Client, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    sub = client.post(f"/queue/{endpoint}", json=payload).raise_for_status().json()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while client.get(sub["status_url"]).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(sub["request_id"])
        time.sleep(POLL_SECONDS)
    return client.get(sub["response_url"]).raise_for_status().json()  # type: ignore[no-any-return]


def via_sse(client: httpx.Client, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    sub = client.post(f"/queue/{endpoint}", json=payload).raise_for_status().json()
    with client.stream("GET", sub["status_url"] + "/stream") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["status"] == "COMPLETED":
                break
        else:
            raise RuntimeError("stream ended before COMPLETED")
    return client.get(sub["response_url"]).raise_for_status().json()  # type: ignore[no-any-return]


def via_run(client: httpx.Client, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    return client.post(f"/run/{endpoint}", json=payload).raise_for_status().json()  # type: ignore[no-any-return]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def latency_rows(url: str, key: str, n_for: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=60) as client:
        for endpoint, payload in CASES:
            n = n_for[endpoint.id]
            for warm in (via_poll, via_sse, via_run):
                warm(client, endpoint.id, payload)  # warm up: first claim, imports, connection
            # Interleave the paths round by round so that load drift on a shared machine hits all alike.
            samples: dict[str, list[float]] = {"direct": [], "poll 5 ms": [], "sse": [], "run": []}
            paths: dict[str, Callable[[], object]] = {
                "direct": lambda e=endpoint, p=payload: call_direct(e, p),  # type: ignore[misc]
                "poll 5 ms": lambda e=endpoint, p=payload: via_poll(client, e.id, p),  # type: ignore[misc]
                "sse": lambda e=endpoint, p=payload: via_sse(client, e.id, p),  # type: ignore[misc]
                "run": lambda e=endpoint, p=payload: via_run(client, e.id, p),  # type: ignore[misc]
            }
            for _ in range(n):
                for path, call in paths.items():
                    samples[path] += timed(call, 1)
            base = p50(samples["direct"])
            for path, values in samples.items():
                rows.append(
                    {
                        "endpoint": endpoint.id,
                        "path": path,
                        "n": n,
                        "p50": p50(values),
                        "p99": pct(values, 99),
                        "ratio": p50(values) / base,
                        "overhead": p50(values) - base,
                    }
                )
    return rows


async def throughput(
    url: str, key: str, endpoint: str, payload: dict[str, Any], n: int, clients: int = 8
) -> float:
    """Jobs/s: n submits from `clients` concurrent clients, until the last job is COMPLETED."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=60) as client:
        pending = list(range(n))
        status_urls: list[str] = []

        async def submitter() -> None:
            while pending:
                pending.pop()
                r = await client.post(f"/queue/{endpoint}", json=payload)
                status_urls.append(r.raise_for_status().json()["status_url"])

        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(clients)))
        deadline = time.monotonic() + DEADLINE_SECONDS * 5
        for status_url in status_urls:  # FIFO: by the time one is done, those before it mostly are
            while (await client.get(status_url)).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(status_url)
                await asyncio.sleep(POLL_SECONDS)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-noop", type=int, default=500)
    parser.add_argument("--n-sleep", type=int, default=40)
    parser.add_argument("--tp-noop", type=int, default=300, help="jobs per throughput run, ~0 cost")
    parser.add_argument("--tp-sleep", type=int, default=20, help="jobs per throughput run, 200 ms")
    args = parser.parse_args()
    n_for = {NOOP.id: args.n_noop, SLEEP.id: args.n_sleep}
    tp: dict[tuple[str, int], float] = {}
    with pulid_server(workers=1) as srv:
        rows = latency_rows(srv.url, srv.key, n_for)
        for endpoint, payload in CASES:
            n = args.tp_noop if endpoint is NOOP else args.tp_sleep
            tp[(endpoint.id, 1)] = asyncio.run(throughput(srv.url, srv.key, endpoint.id, payload, n))
    with pulid_server(workers=2) as srv:
        for endpoint, payload in CASES:
            n = args.tp_noop if endpoint is NOOP else args.tp_sleep
            tp[(endpoint.id, 2)] = asyncio.run(throughput(srv.url, srv.key, endpoint.id, payload, n))
    report(rows, tp)


def report(rows: list[dict[str, Any]], tp: dict[tuple[str, int], float]) -> None:
    print("Latency, one job at a time (1 worker). ratio = p50 / p50 of the direct in-process call.")
    print()
    print("| endpoint | path | n | p50 ms | p99 ms | p50 ratio | overhead p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['endpoint']} | {r['path']} | {r['n']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['ratio']:.3f} | {r['overhead']:.2f} |"
        )
    print()
    direct = {r["endpoint"]: r["p50"] for r in rows if r["path"] == "direct"}
    print("Throughput, 8 concurrent submitting clients. ideal = workers / direct p50 (the model alone).")
    print()
    print("| endpoint | workers | jobs/s | ideal jobs/s | ratio to ideal |")
    print("|---|---|---|---|---|")
    for (endpoint, workers), rate in tp.items():
        ideal = workers / (direct[endpoint] / 1000)
        ideal_s = f"{ideal:.1f}" if ideal < 1e5 else "n/a (~0 cost)"
        ratio = f"{rate / ideal:.3f}" if ideal < 1e5 else "n/a"
        print(f"| {endpoint} | {workers} | {rate:.1f} | {ideal_s} | {ratio} |")
    print()
    ratios = {r["path"]: r["ratio"] for r in rows if r["endpoint"] == SLEEP.id}
    noop = {r["path"]: r["overhead"] for r in rows if r["endpoint"] == NOOP.id}
    ok = "met" if ratios["sse"] <= 1.05 else "NOT met"
    print(
        f"Quoted: queue path with the status stream (submit -> stream until COMPLETED -> result). 200 ms case "
        f"p50 ratio {ratios['sse']:.3f} (goal <= 1.05: {ok}; /run {ratios['run']:.3f}, "
        f"client polling every 5 ms {ratios['poll 5 ms']:.3f}); ~0 case overhead per job "
        f"{noop['sse']:.1f} ms (run {noop['run']:.1f} ms, poll 5 ms {noop['poll 5 ms']:.1f} ms)."
    )


if __name__ == "__main__":
    main()
