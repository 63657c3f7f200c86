"""Hostile load on one `pulid serve` (issue #12): `/health/live` latency under attack against the same
server's idle latency (measured first, same run), and the data folder under rejected large inputs.

1. streams: 2,000 status streams open (20 keys x 100, the per-key cap) on queued jobs, while the queue
   moves once a second (a cancel at its head, so every stream gets an event each second);
2. half-open: a client holding 1,000 connections that never finish their request head, re-opening each
   one the server closes at once; against a server started with a soft open-files limit of 1,024 and
   this machine's hard limit (as systemd starts services: the server raises its soft limit), then with a
   hard limit of 1,024 too (it cannot: 768 connections at most, so each re-opening sheds another);
3. rejected inputs: 40 submits of a 7.5 MB data URI that is not an image; the data folder before and after.

Liveness is probed like a load balancer does: 10 requests a second, each on a new connection.

Run: PYTHONPATH=. .venv/bin/python bench/bench_hostile.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import resource
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Pulid, cpu_model, loadavg, pct, pulid_server  # noqa: E402
from pulid_server.store import SqlJobStore  # noqa: E402

TARGET_P99_MS = 100.0
STREAM_KEYS, STREAMS_PER_KEY = 20, 100
HALF_OPEN = 1000
PROBE_HZ = 10.0
PROBE_TIMEOUT = 5.0


@dataclass
class Probe:
    """/health/live on a new connection every 1/PROBE_HZ s, in a thread: latencies in ms (a failure counts
    as PROBE_TIMEOUT)."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=PROBE_TIMEOUT, limits=limits) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    ok = client.get(self.url + "/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                self.failures += not ok
                self.latencies.append(1000 * (took if ok else PROBE_TIMEOUT))
                time.sleep(max(0.0, 1 / PROBE_HZ - took))

    def summary(self) -> str:
        return (
            f"p50 {pct(self.latencies, 50):6.1f} ms  p99 {pct(self.latencies, 99):6.1f} ms  "
            f"max {max(self.latencies):6.1f} ms  failed {self.failures}/{len(self.latencies)}"
        )


@contextmanager
def probing(url: str, seconds: float) -> Any:
    probe = Probe(url)
    thread = threading.Thread(target=probe.run, args=(seconds,), daemon=True)
    thread.start()
    yield probe
    thread.join(seconds + 2 * PROBE_TIMEOUT)


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


ROWS: list[str] = []
NOTES: list[str] = []


def report(scenario: str, idle: Probe, loaded: Probe, note: str) -> None:
    """Two rows of the result table (idle, then under attack) and a note under it."""
    p99 = pct(loaded.latencies, 99)
    verdict = "yes" if p99 < TARGET_P99_MS and not loaded.failures else "**no**"
    ratio = p99 / max(pct(idle.latencies, 99), 0.001)
    for name, probe, ratio_text, met in (
        (f"{scenario}, idle", idle, "1.0", ""),
        (scenario, loaded, f"{ratio:.1f}", verdict),
    ):
        ROWS.append(
            f"| {name} | {len(probe.latencies)} | {pct(probe.latencies, 50):.1f} | {pct(probe.latencies, 99):.1f} "
            f"| {max(probe.latencies):.1f} | {probe.failures} | {ratio_text} | {met} |"
        )
    NOTES.append(f"- {scenario}: {note}")


# -- 1. status streams -------------------------------------------------------------------------------


async def open_stream(port: int, key: str, status_path: str, events: list[int]) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {status_path}/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Key {key}\r\n\r\n".encode()
    )
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")

    async def count() -> None:
        while line := await reader.readline():
            if line.startswith(b"data:"):
                events[0] += 1

    asyncio.get_running_loop().create_task(count())
    return writer


def bench_streams(srv: Pulid, seconds: float) -> None:
    store = SqlJobStore(f"sqlite:///{srv.data_dir / 'pulid.db'}")
    keys = [store.keys.create_key(f"bench-{i}") for i in range(STREAM_KEYS)]
    store.close()
    port = int(srv.url.rsplit(":", 1)[1])
    jobs: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        for key in keys:
            for _ in range(STREAMS_PER_KEY):
                r = client.post("/queue/bench/noop", json={}, headers={"Authorization": f"Key {key}"})
                jobs.append((key, r.json()))
    with probing(srv.url, seconds) as idle:
        pass
    before = rss_mib(srv.proc.pid)

    async def attack() -> tuple[int, int]:
        events = [0]
        writers: list[asyncio.StreamWriter] = []
        for i in range(0, len(jobs), 100):
            batch = jobs[i : i + 100]
            writers += await asyncio.gather(
                *(open_stream(port, key, httpx.URL(sub["status_url"]).path, events) for key, sub in batch)
            )
        opened = len(writers)
        loaded_probe = threading.Thread(target=loaded.run, args=(seconds,), daemon=True)
        loaded_probe.start()
        async with httpx.AsyncClient(timeout=30) as client:  # the queue moves once a second
            for key, sub in jobs[: int(seconds)]:
                await client.put(sub["cancel_url"], headers={"Authorization": f"Key {key}"})
                await asyncio.sleep(1.0)
        await asyncio.to_thread(loaded_probe.join, seconds + 2 * PROBE_TIMEOUT)
        for w in writers:
            w.close()
        return opened, events[0]

    loaded = Probe(srv.url)
    opened, events = asyncio.run(attack())
    after = rss_mib(srv.proc.pid)
    report(
        f"{opened} status streams",
        idle,
        loaded,
        f"{opened} streams on queued jobs ({STREAM_KEYS} keys), the queue moving each second; {events} "
        f"events received; API RSS {before[0]:.0f} -> {after[0]:.0f} MiB (peak {after[1]:.0f} MiB)",
    )


# -- 2. half-open connections ------------------------------------------------------------------------


async def hold_half_open(port: int, until: float, drops: list[int]) -> None:
    """One hostile connection: a request head that never ends; re-opened whenever the server closes it."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await asyncio.wait_for(reader.read(), timeout=max(0.1, until - time.monotonic()))
            drops[0] += 1  # the server closed it (a deadline, or shed to make room)
            writer.close()
        except TimeoutError:
            writer.close()
            return
        except OSError:
            drops[1] += 1
            await asyncio.sleep(0.05)


def bench_half_open(srv: Pulid, seconds: float, limits: str) -> None:
    port = int(srv.url.rsplit(":", 1)[1])
    with probing(srv.url, seconds) as idle:
        pass
    loaded = Probe(srv.url)

    async def attack() -> list[int]:
        drops = [0, 0]
        until = time.monotonic() + seconds + 3
        holders = [asyncio.create_task(hold_half_open(port, until, drops)) for _ in range(HALF_OPEN)]
        await asyncio.sleep(3)  # all of them open
        await asyncio.to_thread(loaded.run, seconds)
        await asyncio.gather(*holders)
        return drops

    closed, refused = asyncio.run(attack())
    report(
        f"{HALF_OPEN} half-open, nofile {limits}",
        idle,
        loaded,
        f"open-files limit {limits} (soft:hard) at start; the server closed {closed} of the client's "
        f"connections (each re-opened at once), {refused} connects failed",
    )


# -- 3. rejected large inputs --------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_rejected_inputs(srv: Pulid, submits: int = 40) -> None:
    junk = "data:image/png;base64," + base64.b64encode(b"\x89PNG not an image" * 470_000).decode()
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as client:
        client.post("/queue/bench/noop", json={}).raise_for_status()  # the database exists at full size
        before = folder_bytes(srv.data_dir)
        codes = [
            client.post("/queue/fal-ai/pulid", json=_pulid_body(junk)).status_code for _ in range(submits)
        ]
    after = folder_bytes(srv.data_dir)
    sent = submits * len(junk) / 2**20
    NOTES.append(
        f"- rejected inputs: {submits} submits of a {len(junk) / 2**20:.1f} MB data URI that is not an image "
        f"({sent:.0f} MB sent), answered {sorted(set(codes))}; the data folder went from {before} to {after} "
        f"bytes ({after - before:+d})"
    )


def _pulid_body(uri: str) -> dict[str, Any]:
    return {"prompt": "a portrait", "reference_images": [{"image_url": uri}]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="probing time per scenario")
    parser.add_argument("--only", type=int, choices=(1, 2, 3), help="run one scenario")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds thousands of sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = loadavg()
    scenarios: list[tuple[int, dict[str, Any], Callable[[Pulid], None]]] = [
        (1, {}, lambda srv: bench_streams(srv, args.seconds)),
        *(
            (
                2,
                {"wrapper": ("prlimit", f"--nofile={limits}")},
                partial(bench_half_open, seconds=args.seconds, limits=limits),
            )
            for limits in (f"1024:{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}", "1024:1024")
        ),
        (3, {}, bench_rejected_inputs),
    ]
    for number, options, run in scenarios:
        if args.only not in (None, number):
            continue
        with pulid_server(workers=0, **options) as srv:  # API only: queued jobs stay queued
            run(srv)
    print(
        f"`/health/live` probed {PROBE_HZ:g} times a second, each on a new connection, for {args.seconds:g} s "
        f"per scenario (idle first, then under attack; same server). {cpu_model()}, load average "
        f"{load} at start, {loadavg()} at the end.\n"
    )
    if ROWS:
        print("| scenario | probes | p50 ms | p99 ms | max ms | failed | p99 / idle p99 | p99 < 100 ms |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(ROWS))
    print("\n" + "\n".join(NOTES))


if __name__ == "__main__":
    main()
