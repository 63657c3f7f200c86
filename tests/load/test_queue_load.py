"""Bounded loopback load test: 500 jobs from 50 concurrent clients -> none lost, none duplicated."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path

import httpx

from tests.servers import Server

CLIENTS, JOBS_PER_CLIENT = 50, 10


async def one_client(srv: Server, n: int, latencies: list[float]) -> list[tuple[str, str]]:
    done: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=60) as c:
        for i in range(JOBS_PER_CLIENT):
            value = f"c{n}-j{i}"
            sub = (await c.post("/queue/test/echo", json={"value": value})).json()
            deadline = time.monotonic() + 120
            while True:
                t0 = time.perf_counter()
                r = await c.get(sub["status_url"])
                latencies.append(time.perf_counter() - t0)
                if r.json()["status"] == "COMPLETED":
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            result = (await c.get(sub["response_url"])).json()
            done.append((value, result["value"]))
    return done


def test_500_jobs_50_clients_none_lost_or_duplicated(fresh_server: Server) -> None:
    fresh_server.workers = 2
    srv = fresh_server.start()
    latencies: list[float] = []

    async def main() -> list[list[tuple[str, str]]]:
        return await asyncio.gather(*(one_client(srv, n, latencies) for n in range(CLIENTS)))

    started = time.perf_counter()
    results = [pair for chunk in asyncio.run(main()) for pair in chunk]
    elapsed = time.perf_counter() - started

    assert len(results) == CLIENTS * JOBS_PER_CLIENT
    assert all(sent == got for sent, got in results)
    db = sqlite3.connect(Path(srv.data_dir) / "pulid.db")
    rows = db.execute("SELECT status, attempts, error FROM jobs WHERE endpoint_id = 'test/echo'").fetchall()
    db.close()
    assert len(rows) == CLIENTS * JOBS_PER_CLIENT
    assert {(status, attempts, error) for status, attempts, error in rows} == {("COMPLETED", 1, None)}
    lat = sorted(latencies)
    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
    print(
        f"\n500 jobs in {elapsed:.1f}s ({500 / elapsed:.0f} jobs/s); status latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
