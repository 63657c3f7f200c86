"""Peak RSS (VmHWM) of `pulid serve --model tiny` after a few jobs of each model family: the API process
and the worker processes (one per family: fal-ai/pulid on SDXL, fal-ai/flux-pulid on FLUX), each against
its model alone (the same tiny pipeline built and run for the same jobs in a bare process, same run).

Run: PYTHONPATH=. .venv/bin/python bench/bench_rss.py [--jobs 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_flux import peak_rss_mib as model_alone_mib  # noqa: E402
from bench.harness import peak_rss_mib, pulid_server  # noqa: E402
from pulid_server.store import open_job_store  # noqa: E402

SIZE = 64  # the model-alone runs (bench_flux.RSS_SCRIPT) make the same: 64x64, 4 steps, "a portrait photo"
FAMILIES = {"sdxl": "fal-ai/pulid", "flux": "fal-ai/flux-pulid"}


def face_data_uri() -> str:
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def job_input(endpoint: str, seed: int) -> dict[str, object]:
    common = {"prompt": "a portrait photo", "image_size": {"width": SIZE, "height": SIZE}, "seed": seed}
    if endpoint == "fal-ai/pulid":
        return {**common, "reference_images": [{"image_url": face_data_uri()}]}
    return {**common, "reference_image_url": face_data_uri(), "num_inference_steps": 4}


def run_jobs(url: str, key: str, endpoint: str, jobs: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=300) as client:
        for seed in range(jobs):
            r = client.post(f"/run/{endpoint}", json=job_input(endpoint, seed))
            if r.status_code != 200 or len(r.json()["images"]) != 1:
                raise RuntimeError(f"{endpoint} failed: {r.status_code} {r.text[:300]}")


def worker_pids(data_dir: Path) -> dict[str, int]:
    """Endpoint id -> pid of the worker process serving it, from the worker registry."""
    store = open_job_store(f"sqlite:///{data_dir / 'pulid.db'}")
    try:
        return {e: w.pid for w in store.cluster.recent_workers(60) for e in w.endpoints}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    env = {"PULID_MODEL": "tiny", "PULID_WORKER_ENDPOINTS": ",".join(FAMILIES.values())}
    with pulid_server(workers=1, env=env, args=("--model", "tiny")) as srv:
        start = time.perf_counter()
        for endpoint in FAMILIES.values():
            run_jobs(srv.url, srv.key, endpoint, args.jobs)
        elapsed = time.perf_counter() - start
        api = peak_rss_mib(srv.proc.pid)
        pids = worker_pids(srv.data_dir)
        workers = {family: peak_rss_mib(pids[endpoint]) for family, endpoint in FAMILIES.items()}
    if pids[FAMILIES["sdxl"]] == pids[FAMILIES["flux"]]:
        raise RuntimeError("one worker process served both families")
    alone = {family: model_alone_mib(family, args.jobs) for family in FAMILIES}
    print(
        f"`pulid serve --model tiny --workers 1` (one worker process per model family), {args.jobs} jobs of "
        f"{SIZE}x{SIZE} per endpoint through POST /run ({elapsed:.1f} s); VmHWM from /proc/<pid>/status."
    )
    print()
    print("| process | peak RSS MiB | vs its model alone |")
    print("|---|---|---|")
    for family, endpoint in FAMILIES.items():
        print(f"| {family.upper()} model alone (tiny pipeline, same {args.jobs} generations, bare python) | "
              f"{alone[family]:.0f} | 1.00 |")  # fmt: skip
        print(f"| {family.upper()} worker process ({endpoint}) | {workers[family]:.0f} | "
              f"{workers[family] / alone[family]:.2f} |")  # fmt: skip
    total = api + sum(workers.values())
    print(f"| API process (never imports the model) | {api:.0f} | - |")
    print(f"| API + both workers | {total:.0f} | {total / sum(alone.values()):.2f} (vs both models alone) |")


if __name__ == "__main__":
    main()
