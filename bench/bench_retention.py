"""Soak: the data directory of a real `pulid serve` (SQLite, local files) over thousands of jobs, with short
retention against the same run with retention off (the baseline, measured in the same run).

Each job does what a real one leaves behind: clients upload a reference image now and then (an upload row
and file), run bench/image through `/run` (a job row, its log lines, a PNG output of noise) and take the
result. The data directory's size on disk (what `du` counts: the database, its WAL, files and folders) is
sampled as jobs complete. With retention the size must level off once the oldest data expires; without,
it grows with every job.

Run: .venv/bin/python bench/bench_retention.py [--jobs 5000] [--retain 20s]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import loadavg, pulid_server  # noqa: E402

MIB = 1024 * 1024


def disk_usage(folder: Path) -> int:
    """Bytes on disk under `folder`, folders included (as `du` counts them)."""
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # pruned while we walked
                continue
    return total


def reference_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


async def soak(
    url: str, key: str, data: Path, jobs: int, clients: int, upload_every: int, size: int, samples: int
) -> list[tuple[int, float, int]]:
    """Run `jobs` jobs from `clients` concurrent clients; (jobs done, seconds, bytes on disk) at each sample."""
    png = reference_png()
    done = 0
    every = max(1, jobs // samples)
    taken: list[tuple[int, float, int]] = [(0, 0.0, disk_usage(data))]
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Key {key}"}, timeout=120
    ) as client:

        async def upload() -> str:
            urls = (
                await client.post("/rest/storage/upload/initiate", json={"content_type": "image/png"})
            ).json()
            (await client.put(urls["upload_url"], content=png)).raise_for_status()
            return str(urls["file_url"])

        async def one_client(index: int) -> None:
            nonlocal done
            reference = ""
            for n in range(index, jobs, clients):
                if n % upload_every == index % upload_every or not reference:
                    reference = await upload()
                body = {"reference_url": reference, "size": size, "seed": n}
                (await client.post("/run/bench/image", json=body)).raise_for_status()
                done += 1
                if done % every == 0:
                    taken.append((done, time.perf_counter() - started, disk_usage(data)))

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return taken


def run(env: dict[str, str], args: argparse.Namespace) -> tuple[list[tuple[int, float, int]], str]:
    served = {"PULID_WORKER_ENDPOINTS": "bench/image", **env}
    with pulid_server(workers=1, env=served) as srv:
        samples = asyncio.run(
            soak(
                srv.url,
                srv.key,
                srv.data_dir,
                args.jobs,
                args.clients,
                args.upload_every,
                args.size,
                args.samples,
            )
        )
        metrics = httpx.get(f"{srv.url}/metrics", timeout=30).text
    return samples, metrics


def pruned(metrics: str) -> dict[str, float]:
    """The non-zero pulid_pruned_* counters, by their short name (`rows{table="outputs"}`...)."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("pulid_pruned_") and "_total" in line:
            name, value = line.rsplit(" ", 1)
            if float(value):
                out[name.removeprefix("pulid_pruned_").replace("_total", "")] = float(value)
    return out


def growth(samples: list[tuple[int, float, int]]) -> float:
    """MiB per 1000 jobs over the second half of the run (ours is past its retention window by then)."""
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    (j0, _, b0), (j1, _, b1) = half[0], half[-1]
    return (b1 - b0) / MIB / max(1, j1 - j0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument(
        "--retain", default="20s", help="retention of outputs, uploads, payloads; jobs: twice"
    )
    parser.add_argument("--prune-every", default="2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--upload-every", type=int, default=10, help="a new reference upload every N jobs")
    parser.add_argument("--size", type=int, default=256, help="output PNG side")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    never = {f"PULID_RETAIN_{k}": "never" for k in ("OUTPUTS", "UPLOADS", "PAYLOADS", "JOBS")}
    seconds = float(args.retain.rstrip("s"))
    short = {
        "PULID_RETAIN_OUTPUTS": args.retain,
        "PULID_RETAIN_UPLOADS": args.retain,
        "PULID_RETAIN_PAYLOADS": args.retain,
        "PULID_RETAIN_JOBS": f"{2 * seconds:g}s",
        "PULID_PRUNE_EVERY_SECONDS": args.prune_every,
    }
    base, _ = run(never, args)
    kept, metrics = run(short, args)
    report(args, base, kept, pruned(metrics))


def report(
    args: argparse.Namespace,
    base: list[tuple[int, float, int]],
    kept: list[tuple[int, float, int]],
    counts: dict[str, float],
) -> None:
    print(
        f"Data directory on disk over {args.jobs} jobs (bench/image through /run: a {args.size}² noise PNG and "
        f"4 log lines each, a new upload every {args.upload_every} jobs; {args.clients} clients, 1 worker). "
        f"Baseline: retention off. Ours: outputs, uploads and payloads kept {args.retain}, jobs twice that, "
        f"pruned every {args.prune_every} s."
    )
    print()
    print("| jobs done | baseline s | baseline MiB | ours s | ours MiB | ours / baseline |")
    print("|---|---|---|---|---|---|")
    for (jobs, bt, bb), (_, kt, kb) in zip(base, kept, strict=False):
        ratio = f"{kb / bb:.3f}" if bb else "n/a"
        print(f"| {jobs} | {bt:.0f} | {bb / MIB:.1f} | {kt:.0f} | {kb / MIB:.1f} | {ratio} |")
    print()
    peak = max(b for _, _, b in kept)
    print(
        f"Second half of the run: the baseline grows {growth(base):.2f} MiB per 1000 jobs, ours "
        f"{growth(kept):.2f} MiB per 1000 jobs (peak {peak / MIB:.1f} MiB, final {kept[-1][2] / MIB:.1f} MiB; "
        f"baseline final {base[-1][2] / MIB:.1f} MiB, ratio {kept[-1][2] / base[-1][2]:.3f})."
    )
    rates = f"{base[-1][0] / base[-1][1]:.1f} (baseline) and {kept[-1][0] / kept[-1][1]:.1f} (ours) jobs/s"
    print(f"Throughput: {rates}; load average at the end {loadavg()} (shared machine).")
    print(
        "Pruned (the server's /metrics, pulid_pruned_*):",
        ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items())),
    )


if __name__ == "__main__":
    main()
