"""Peak RSS (VmHWM) of `pulid serve --model tiny` after a few fal-ai/pulid jobs: the API process and the
worker process, against the model alone (the tiny pipeline built and run in a bare process, same run).

Run: PYTHONPATH=. .venv/bin/python bench/bench_rss.py [--jobs 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PY, REPO, peak_rss_mib, pulid_server  # noqa: E402

SIZE = 64
# The baseline: the same tiny pipeline, same request size, no service around it.
MODEL_ALONE = f"""
import io, torch
from PIL import Image
from skimage import data
from pulid_server.model.sdxl import GenerationRequest
from pulid_server.model.sdxl.presets import build_tiny
torch.set_grad_enabled(False)
pipe = build_tiny(torch.device("cpu"))
image = Image.fromarray(data.astronaut()); buf = io.BytesIO(); image.save(buf, "PNG")
for seed in range({{jobs}}):
    pipe.generate(GenerationRequest(reference_images=[(buf.getvalue(), image)], prompt="a portrait photo",
                                    width={SIZE}, height={SIZE}, seed=seed))
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def face_data_uri() -> str:
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def run_jobs(url: str, key: str, jobs: int) -> None:
    body = {
        "reference_images": [{"image_url": face_data_uri()}],
        "prompt": "a portrait photo",
        "image_size": {"width": SIZE, "height": SIZE},
    }
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=300) as client:
        for seed in range(jobs):
            r = client.post("/run/fal-ai/pulid", json={**body, "seed": seed})
            if r.status_code != 200 or len(r.json()["images"]) != 1:
                raise RuntimeError(f"fal-ai/pulid failed: {r.status_code} {r.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    env = {"PULID_MODEL": "tiny", "PULID_WORKER_ENDPOINTS": "fal-ai/pulid"}
    with pulid_server(workers=1, env=env, args=("--model", "tiny")) as srv:
        start = time.perf_counter()
        run_jobs(srv.url, srv.key, args.jobs)
        elapsed = time.perf_counter() - start
        api = peak_rss_mib(srv.proc.pid)
        (worker_pid,) = srv.worker_pids()
        worker = peak_rss_mib(worker_pid)
    alone = subprocess.run(
        [PY, "-c", MODEL_ALONE.replace("{jobs}", str(args.jobs))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    model_alone = int(alone.stdout.strip().splitlines()[-1]) / 1024
    print(
        f"`pulid serve --model tiny --workers 1`, {args.jobs} fal-ai/pulid jobs of {SIZE}x{SIZE} through "
        f"POST /run ({elapsed:.1f} s); VmHWM from /proc/<pid>/status."
    )
    print()
    print("| process | peak RSS MiB | vs model alone |")
    print("|---|---|---|")
    print(
        f"| model alone (tiny pipeline, same {args.jobs} generations, bare python) | {model_alone:.0f} | 1.00 |"
    )
    print(f"| worker process | {worker:.0f} | {worker / model_alone:.2f} |")
    print(f"| API process (never imports the model) | {api:.0f} | {api / model_alone:.2f} |")
    print(f"| API + worker | {api + worker:.0f} | {(api + worker) / model_alone:.2f} |")


if __name__ == "__main__":
    main()
