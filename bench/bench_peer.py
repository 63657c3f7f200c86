"""Serving peers: our routes against Cog and LitServe serving equivalent endpoints, on the same machine, with the
same client, in the same run (rounds alternate between the servers).

Latency, one request at a time on one keep-alive connection, for a no-op model and one that sleeps 200 ms
in 4 steps (bench/endpoints.py), against calling the model directly in-process:
  Cog          POST /predictions {"input": {...}} (sync prediction; `python -m cog.server.http` from PyPI
               `cog`, bench/cog_predictors.py, in its own venv .venv-cog: cog pins its own fastapi)
  LitServe     POST /predict {"value":"x"} (no-op only; bench/litserve_app.py)
  ours run     POST /run/{endpoint} (sync: a durable job, a worker process, the result)
  ours stream  POST /queue/{endpoint}, GET .../status/stream until COMPLETED, GET the result
Requests/s under `--concurrency` keep-alive connections (no-op model):
  ours status  GET /queue/bench/noop/requests/{id}/status of a COMPLETED request (auth + one store read)
  ours run     POST /run/bench/noop {"value":"x"}
  LitServe     POST /predict {"value":"x"}
  (Cog is not in this table: its sync predictions run one at a time and answer 409 to the rest.)

Servers: `pulid serve --workers 1` (1 uvicorn process + 1 worker process, SQLite WAL with durable commits,
shipped defaults); LitServer(accelerator="cpu", devices=1, workers_per_device=1), run(num_api_servers=1):
1 uvicorn process + 1 inference worker process; Cog's Python server: 1 uvicorn process + 1 predictor
process, one server per predictor. All log at warning level.

Client: a small raw HTTP/1.1 client (keep-alive; asyncio with fixed concurrency for requests/s, blocking
sockets for latency); every response must be 200.

Run: PYTHONPATH=. .venv/bin/python bench/bench_peer.py [--requests 2000] [--concurrency 16] [--rounds 3]
     [--latency-noop 300] [--latency-sleep 60]   (`make bench` creates .venv-cog with cog==0.16.12)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.endpoints import NOOP, SLEEP, call_direct  # noqa: E402
from bench.harness import PY, REPO, free_port, pct, pulid_server, wait_http  # noqa: E402
from pulid_server.endpoints import Endpoint  # noqa: E402

IO_TIMEOUT = 30.0
COG_PYTHON = REPO / ".venv-cog" / "bin" / "python"
JSON = {"Content-Type": "application/json"}
SLEEP_INPUT = {"ms": 200, "steps": 4}
RUN_GOAL = 1.02  # 200 ms model: p50 through our routes / p50 of the direct call


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
def _process_group(
    cmd: list[str], health: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """A server in its own session, stopped as a group at the end: LitServe's and Cog's children outlive a
    SIGTERM to their parent."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(health, proc)
        yield
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


@contextmanager
def litserve_server() -> Iterator[int]:
    port = free_port()
    cmd = [PY, str(REPO / "bench" / "litserve_app.py"), str(port)]
    with _process_group(cmd, f"http://127.0.0.1:{port}/health", REPO):
        yield port


@contextmanager
def cog_server(predictor: str) -> Iterator[int]:
    """Cog's Python HTTP server (cog.yaml `predict:` names the predictor; the port comes from PORT)."""
    if not COG_PYTHON.exists():
        raise SystemExit(f"no {COG_PYTHON}: `make bench` creates it (a venv with cog==0.16.12)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cog-bench-") as tmp:
        Path(tmp, "cog.yaml").write_text(f'predict: "{REPO / "bench" / "cog_predictors.py"}:{predictor}"\n')
        env = {**os.environ, "PORT": str(port), "COG_LOG_LEVEL": "warning"}
        cmd = [str(COG_PYTHON), "-m", "cog.server.http", "--host", "127.0.0.1"]
        with _process_group(cmd, f"http://127.0.0.1:{port}/health-check", Path(tmp), env):
            _wait_cog_ready(port)
            yield port


def _wait_cog_ready(port: int, timeout: float = 60.0) -> None:
    """Cog answers its health check while the predictor's setup still runs: wait for READY."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"http://127.0.0.1:{port}/health-check", timeout=5).json().get("status") != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError("cog server not READY")
        time.sleep(0.1)


class Conn:
    """One keep-alive HTTP/1.1 connection with blocking sockets: the latency client (Content-Length or
    chunked responses, read whole)."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
        self.sock.sendall(http_request(method, path, self.port, headers, body))
        head = self._until(b"\r\n\r\n")
        if head[9:12] != b"200":
            raise RuntimeError(f"{method} {path}: {head[:200]!r}")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if b"content-length" in fields:
            return self._exactly(int(fields[b"content-length"]))
        chunks = []
        while size := int(self._until(b"\r\n").split(b";")[0], 16):  # chunked: an SSE stream
            chunks.append(self._exactly(size))
            self._exactly(2)
        self._until(b"\r\n")  # the empty trailer
        return b"".join(chunks)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed")
        self.buf += data

    def _until(self, sep: bytes) -> bytes:
        while (i := self.buf.find(sep)) < 0:
            self._fill()
        out, self.buf = self.buf[:i], self.buf[i + len(sep) :]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self) -> None:
        self.sock.close()


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def latency_paths(
    endpoint: Endpoint, payload: dict[str, Any], ours: Conn, key: str, cog: Conn, litserve: Conn | None
) -> dict[str, Callable[[], object]]:
    """The sequential paths for one model, each a call that does one job and checks its answer."""
    auth = {"Authorization": f"Key {key}", **JSON}
    body = json.dumps(payload).encode()

    def stream() -> None:
        sub = json.loads(ours.request("POST", f"/queue/{endpoint.id}", auth, body))
        events = ours.request("GET", _path(sub["status_url"]) + "/stream", auth)
        if b'"status": "COMPLETED"' not in events:
            raise RuntimeError(f"stream ended before COMPLETED: {events[-300:]!r}")
        ours.request("GET", _path(sub["response_url"]), auth)

    def cog_predict() -> None:
        out = json.loads(cog.request("POST", "/predictions", JSON, json.dumps({"input": payload}).encode()))
        if out["status"] != "succeeded":
            raise RuntimeError(f"cog: {out}")

    paths: dict[str, Callable[[], object]] = {
        "direct in-process call": lambda: call_direct(endpoint, payload),
        "Cog POST /predictions": cog_predict,
    }
    if litserve is not None:
        paths["LitServe POST /predict"] = lambda: litserve.request("POST", "/predict", JSON, body)
    paths["ours POST /run"] = lambda: ours.request("POST", f"/run/{endpoint.id}", auth, body)
    paths["ours submit, status stream, result"] = stream
    return paths


def latencies(paths: dict[str, Callable[[], object]], n: int, warmup: int = 5) -> dict[str, list[float]]:
    """ms per call of every path, rounds interleaved so that load drift hits every path alike."""
    out: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(warmup + n):
        for name, call in paths.items():
            start = time.perf_counter()
            call()
            if i >= warmup:
                out[name].append((time.perf_counter() - start) * 1000)
    return out


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
    parser.add_argument("--latency-noop", type=int, default=300, help="sequential jobs per path, no-op")
    parser.add_argument("--latency-sleep", type=int, default=60, help="sequential jobs per path, 200 ms")
    args = parser.parse_args()
    body = json.dumps({"value": "x"}).encode()
    with ExitStack() as stack:
        srv = stack.enter_context(pulid_server(workers=1))
        ls_port = stack.enter_context(litserve_server())
        cog_ports = {name: stack.enter_context(cog_server(name)) for name in ("Noop", "Sleep")}
        port = int(srv.url.rsplit(":", 1)[1])
        conns = [Conn(port), Conn(ls_port), Conn(cog_ports["Noop"]), Conn(cog_ports["Sleep"])]
        ours, litserve, cog_noop, cog_sleep = conns
        lat = {
            NOOP.id: latencies(
                latency_paths(NOOP, {"value": "x"}, ours, srv.key, cog_noop, litserve), args.latency_noop
            ),
            SLEEP.id: latencies(
                latency_paths(SLEEP, SLEEP_INPUT, ours, srv.key, cog_sleep, None), args.latency_sleep
            ),
        }
        for conn in conns:
            conn.close()
        auth = {"Authorization": f"Key {srv.key}"}
        targets = [
            Target("LitServe POST /predict", ls_port, http_request("POST", "/predict", ls_port, JSON, body)),
            Target(
                "ours GET .../status (COMPLETED)",
                port,
                http_request("GET", completed_status_path(srv.url, srv.key), port, auth),
            ),
            Target(
                "ours POST /run/bench/noop",
                port,
                http_request("POST", "/run/bench/noop", port, {**auth, **JSON}, body),
            ),
        ]
        results: dict[str, tuple[list[float], list[float]]] = {t.name: ([], []) for t in targets}
        for _ in range(args.rounds):  # alternate so that load drift hits every server alike
            for target in targets:
                rps, ms = asyncio.run(load(target, args.requests, args.concurrency, args.warmup))
                results[target.name][0].append(rps)
                results[target.name][1].extend(ms)
    report_latency(lat, args)
    report(results, args)


def report_latency(lat: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(
        f"Latency, one request at a time on one keep-alive connection ({args.latency_noop} no-op and "
        f"{args.latency_sleep} 200 ms jobs per path, paths interleaved); ratio = p50 / p50 of the direct call."
    )
    print()
    print("| model | path | p50 ms | p99 ms | p50 / direct | overhead p50 ms |")
    print("|---|---|---|---|---|---|")
    for endpoint, samples in lat.items():
        base = statistics.median(next(iter(samples.values())))
        for name, ms in samples.items():
            p50 = statistics.median(ms)
            print(
                f"| {endpoint} | {name} | {p50:.2f} | {pct(ms, 99):.2f} | {p50 / base:.3f} | {p50 - base:.2f} |"
            )
    print()
    noop = {name: statistics.median(ms) for name, ms in lat[NOOP.id].items()}
    sleep = lat[SLEEP.id]
    direct = statistics.median(sleep["direct in-process call"])
    run_ratio = statistics.median(sleep["ours POST /run"]) / direct
    stream_ratio = statistics.median(sleep["ours submit, status stream, result"]) / direct
    ok: Callable[[bool], str] = lambda met: "met" if met else "NOT met"  # noqa: E731
    cog = noop["Cog POST /predictions"]
    print(
        f"Goals: /run no-op p50 {noop['ours POST /run']:.2f} ms <= Cog's {cog:.2f} ms: "
        f"{ok(noop['ours POST /run'] <= cog)}; 200 ms model /run {run_ratio:.3f} and status stream "
        f"{stream_ratio:.3f} <= {RUN_GOAL}: {ok(run_ratio <= RUN_GOAL and stream_ratio <= RUN_GOAL)}."
    )
    print()


def report(results: dict[str, tuple[list[float], list[float]]], args: argparse.Namespace) -> None:
    median: Callable[[list[float]], float] = statistics.median
    base_name = next(iter(results))
    base_rps, base_lat = median(results[base_name][0]), results[base_name][1]
    print(
        "Requests/s of the no-op model: "
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
