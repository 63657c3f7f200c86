"""Serving peer: requests/s and p99 of our routes against LitServe serving an equivalent trivial endpoint,
on the same machine, with the same client, in the same run (rounds alternate between the servers).

  ours status  GET /queue/bench/noop/requests/{id}/status of a COMPLETED request (auth + one store read)
  ours run     POST /run/bench/noop {"value":"x"} (sync: persisted job, worker process, result)
  LitServe     POST /predict {"value":"x"} (bench/litserve_app.py: API process + inference worker process)

Servers: `pulid serve --workers 1` (1 uvicorn process + 1 worker process, SQLite WAL, shipped defaults) and
LitServer(accelerator="cpu", devices=1, workers_per_device=1), run(num_api_servers=1): 1 uvicorn process +
1 inference worker process. Both log at warning level.

Client: a small asyncio raw HTTP/1.1 client (keep-alive, fixed concurrency, fixed request count, warmup);
every response must be 200.

Run: PYTHONPATH=. .venv/bin/python bench/bench_peer.py [--requests 2000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PY, REPO, free_port, pct, pulid_server, wait_http  # noqa: E402

IO_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    request: bytes  # a complete HTTP/1.1 request, sent as is on a keep-alive connection


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    if length is None:
        raise RuntimeError(f"no Content-Length: {head!r}")
    await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {head[:200]!r}")


async def load(target: Target, total: int, concurrency: int, warmup: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in ms) over `total` requests from `concurrency` keep-alive connections."""
    conns = [await asyncio.open_connection("127.0.0.1", target.port) for _ in range(concurrency)]
    try:
        remaining = [warmup]

        async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: list[float]) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                start = time.perf_counter()
                await asyncio.wait_for(_one(reader, writer, target.request), IO_TIMEOUT)
                out.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(drive(r, w, []) for r, w in conns))
        remaining[0] = total
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(drive(r, w, latencies) for r, w in conns))
        return total / (time.perf_counter() - start), latencies
    finally:
        for _, w in conns:
            w.close()


@contextmanager
def litserve_server() -> Iterator[int]:
    port = free_port()
    # Own session: LitServe's inference and API children outlive a SIGTERM to their parent, so the whole
    # group we started is stopped at the end.
    proc = subprocess.Popen(
        [PY, str(REPO / "bench" / "litserve_app.py"), str(port)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield port
    finally:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)  # let the children see the signal too


def completed_status_path(url: str, key: str) -> str:
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=30) as client:
        sub = client.post("/run/bench/noop", json={"value": "x"})
        sub.raise_for_status()
        request_id = sub.headers["x-fal-request-id"]
    return f"/queue/bench/noop/requests/{request_id}/status"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    json_headers = {"Content-Type": "application/json"}
    body = json.dumps({"value": "x"}).encode()
    with pulid_server(workers=1) as srv, litserve_server() as ls_port:
        port = int(srv.url.rsplit(":", 1)[1])
        auth = {"Authorization": f"Key {srv.key}"}
        targets = [
            Target(
                "LitServe POST /predict",
                ls_port,
                http_request("POST", "/predict", ls_port, json_headers, body),
            ),
            Target(
                "ours GET .../status (COMPLETED)",
                port,
                http_request("GET", completed_status_path(srv.url, srv.key), port, auth),
            ),
            Target(
                "ours POST /run/bench/noop",
                port,
                http_request("POST", "/run/bench/noop", port, {**auth, **json_headers}, body),
            ),
        ]
        results: dict[str, tuple[list[float], list[float]]] = {t.name: ([], []) for t in targets}
        for _ in range(args.rounds):  # alternate so that load drift hits every server alike
            for target in targets:
                rps, lat = asyncio.run(load(target, args.requests, args.concurrency, args.warmup))
                results[target.name][0].append(rps)
                results[target.name][1].extend(lat)
    report(results, args)


def report(results: dict[str, tuple[list[float], list[float]]], args: argparse.Namespace) -> None:
    median: Callable[[list[float]], float] = statistics.median
    base_name = next(iter(results))
    base_rps, base_lat = median(results[base_name][0]), results[base_name][1]
    print(
        f"{args.rounds} alternating rounds x {args.requests} requests, {args.concurrency} keep-alive connections, "
        f"{args.warmup} warmup; req/s = median of rounds; latencies over all rounds."
    )
    print()
    print("| route | req/s | p50 ms | p99 ms | req/s vs LitServe | p99 vs LitServe | goal >= LitServe |")
    print("|---|---|---|---|---|---|---|")
    for name, (rps_list, lat) in results.items():
        rps = median(rps_list)
        ok = "yes" if rps >= base_rps else "no"
        print(
            f"| {name} | {rps:.0f} | {statistics.median(lat):.2f} | {pct(lat, 99):.2f} | {rps / base_rps:.2f} | "
            f"{pct(lat, 99) / pct(base_lat, 99):.2f} | {'(baseline)' if name == base_name else ok} |"
        )


if __name__ == "__main__":
    main()
